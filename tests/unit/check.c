/* The one main of the unit test programs: runs the tests TEST registered
 * (all of them, or those named on the command line) between the program's
 * SETUP and TEARDOWN, one "ok"/"FAIL" line each, then a summary. */
#include "check.h"

#include <stdbool.h>

int check_failures;
int check_count;

static struct check_test *tests;
static int (*setup)(void);
static void (*teardown)(void);

/* Keeps the list in source order (file, then line): constructors run in an
 * order the toolchain picks, the tests should run in the order they read. */
void check_register(struct check_test *test) {
        struct check_test **at = &tests;
        while (*at) {
                int c = strcmp((*at)->file, test->file);
                if (c > 0 || (c == 0 && (*at)->line > test->line))
                        break;
                at = &(*at)->next;
        }
        test->next = *at;
        *at = test;
}

/* Two SETUPs (or TEARDOWNs) in one program would leave one silently unrun. */
void check_register_setup(int (*fn)(void)) {
        if (setup) {
                fputs("check: more than one SETUP in this program\n", stderr);
                exit(2);
        }
        setup = fn;
}

void check_register_teardown(void (*fn)(void)) {
        if (teardown) {
                fputs("check: more than one TEARDOWN in this program\n", stderr);
                exit(2);
        }
        teardown = fn;
}

static struct check_test *find(const char *name) {
        for (struct check_test *t = tests; t; t = t->next)
                if (strcmp(t->name, name) == 0)
                        return t;
        return NULL;
}

/* Runs one test; returns whether all its checks held. */
static bool run(const struct check_test *t) {
        int before = check_failures;
        t->run();
        bool ok = check_failures == before;
        printf("%s %s\n", ok ? "ok  " : "FAIL", t->name);
        fflush(stdout);
        return ok;
}

int main(int argc, char *argv[]) {
        if (!tests) {
                fprintf(stderr, "%s: no tests registered (TEST(name) { ... })\n", argv[0]);
                return 2;
        }
        if (argc == 2 && strcmp(argv[1], "--list") == 0) {
                for (const struct check_test *t = tests; t; t = t->next)
                        printf("%s\n", t->name);
                return 0;
        }
        /* Every name first: a typo must not pass as a run of nothing. */
        for (int i = 1; i < argc; i++)
                if (!find(argv[i])) {
                        fprintf(stderr, "%s: no test named '%s' (%s --list shows them)\n", argv[0], argv[i],
                                argv[0]);
                        return 2;
                }

        if (setup && setup() != 0) {
                fprintf(stderr, "%s: SETUP failed: no test ran\n", argv[0]);
                return 2;
        }
        int ran = 0, failed = 0;
        if (argc > 1)
                for (int i = 1; i < argc; i++, ran++)
                        failed += !run(find(argv[i]));
        else
                for (const struct check_test *t = tests; t; t = t->next, ran++)
                        failed += !run(t);
        if (teardown)
                teardown();

        printf("%d tests, %d failed; %d checks, %d failed\n", ran, failed, check_count, check_failures);
        return check_failures ? EXIT_FAILURE : EXIT_SUCCESS;
}
