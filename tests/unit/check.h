/* A tiny test harness: assertions report file:line and the expression,
 * count failures and let the test go on. Tests register themselves; the one
 * main (check.c) runs them in the order they are written, prints "ok" or
 * "FAIL" per test and fails when any check did:
 *
 *     TEST(rec_rejects_point_off_curve) { CHECK(...); }
 *
 * A program may have one SETUP, run before its tests (non-zero: nothing runs,
 * exit 2), and one TEARDOWN, run after them:
 *
 *     SETUP { group = EC_GROUP_new_by_curve_name(...); return group ? 0 : -ENOMEM; }
 *     TEARDOWN { EC_GROUP_free(group); }
 *
 * `test-x NAME...` runs only the tests named (after SETUP), `test-x --list`
 * lists them. */
#pragma once

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

extern int check_failures;
extern int check_count;

#define CHECK_FAIL_(...)                                                \
        do {                                                            \
                check_failures++;                                       \
                fprintf(stderr, "%s:%d: FAIL: ", __FILE__, __LINE__);   \
                fprintf(stderr, __VA_ARGS__);                           \
                fputc('\n', stderr);                                    \
        } while (0)

/* Records a failure when cond is false; evaluates to cond. */
#define CHECK(cond)                                                     \
        ({                                                              \
                _Bool check_ok_ = (cond);                               \
                check_count++;                                          \
                if (!check_ok_)                                         \
                        CHECK_FAIL_("%s", #cond);                       \
                check_ok_;                                              \
        })

/* Like CHECK, but leaves the current test function on failure: for
 * preconditions without which the rest of the test makes no sense. */
#define REQUIRE(cond)                                                   \
        do {                                                            \
                if (!CHECK(cond))                                       \
                        return;                                         \
        } while (0)

#define CHECK_INT(a, b)                                                 \
        ({                                                              \
                long long check_a_ = (long long) (a), check_b_ = (long long) (b); \
                check_count++;                                          \
                if (check_a_ != check_b_)                               \
                        CHECK_FAIL_("%s == %s (%lld != %lld)", #a, #b, check_a_, check_b_); \
                check_a_ == check_b_;                                   \
        })

#define CHECK_STR(a, b)                                                 \
        ({                                                              \
                const char *check_a_ = (a), *check_b_ = (b);            \
                _Bool check_ok_ = check_a_ && check_b_ && strcmp(check_a_, check_b_) == 0; \
                check_count++;                                          \
                if (!check_ok_)                                         \
                        CHECK_FAIL_("%s == %s (\"%s\" != \"%s\")", #a, #b, \
                                    check_a_ ? check_a_ : "(null)", check_b_ ? check_b_ : "(null)"); \
                check_ok_;                                              \
        })

struct check_test {
        const char *name;
        const char *file;
        int line;
        void (*run)(void);
        struct check_test *next;
};

/* Called by the constructors TEST, SETUP and TEARDOWN define, before main. */
void check_register(struct check_test *test);
void check_register_setup(int (*setup)(void));
void check_register_teardown(void (*teardown)(void));

#define TEST(name)                                                      \
        static void name(void);                                         \
        static struct check_test check_test_##name = { #name, __FILE__, __LINE__, name, NULL }; \
        __attribute__((constructor)) static void check_register_##name(void) { \
                check_register(&check_test_##name);                     \
        }                                                               \
        static void name(void)

/* Declares fn and hands it to register_fn before main runs. */
#define CHECK_HOOK_(type, fn, register_fn)                              \
        static type fn(void);                                           \
        __attribute__((constructor)) static void register_fn##_(void) { \
                register_fn(fn);                                        \
        }                                                               \
        static type fn(void)

#define SETUP CHECK_HOOK_(int, check_setup, check_register_setup)
#define TEARDOWN CHECK_HOOK_(void, check_teardown, check_register_teardown)
