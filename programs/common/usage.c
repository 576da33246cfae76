#include "usage.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "version.h"

static void print_usage(const struct usage *u, FILE *f) {
        if (u->print)
                u->print(f);
        else
                fputs(u->text, f);
}

int usage_error(const struct usage *u, const char *fmt, ...) {
        va_list ap;
        fprintf(stderr, "%s: ", u->prog);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputs("\n\n", stderr);
        print_usage(u, stderr);
        return EXIT_USAGE;
}

/* A help that did not reach its reader (a closed pipe, a full disk) fails. */
static int flush_stdout(void) {
        return fflush(stdout) == 0 && !ferror(stdout) ? EXIT_SUCCESS : EXIT_FAILURE;
}

int usage_help(const struct usage *u) {
        print_usage(u, stdout);
        return flush_stdout();
}

int usage_version(const char *prog) {
        printf("%s %s\n", prog, TETHER_VERSION);
        return flush_stdout();
}

bool usage_is_help(const char *arg) {
        return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}

bool usage_is_version(const char *arg) {
        return strcmp(arg, "--version") == 0;
}

/* The long options "--word" (up to any "=") names: exactly, or as the
 * prefix of one or more. */
static const struct option *find_long(const struct option *longopts, const char *word, size_t *n_prefixed) {
        const char *name = word + 2;
        size_t len = strcspn(name, "=");
        const struct option *found = NULL;
        *n_prefixed = 0;
        for (const struct option *o = longopts; o && o->name; o++) {
                if (strncmp(o->name, name, len) != 0)
                        continue;
                if (strlen(o->name) == len) {
                        *n_prefixed = 1;
                        return o;
                }
                found = o;
                (*n_prefixed)++;
        }
        return *n_prefixed == 1 ? found : NULL;
}

/* The words of glibc's own messages, under u->prog. After an error, the
 * word getopt was at is argv[optind - 1]: a long option's whole word, or the
 * cluster a short option ended. */
static int report(const struct usage *u, int c, char **argv, const struct option *longopts) {
        const char *word = optind > 0 ? argv[optind - 1] : "";
        bool is_long = strncmp(word, "--", 2) == 0;
        int len = (int) strcspn(word, "=");
        size_t n;

        if (c == ':')
                return is_long ? usage_error(u, "option '%.*s' requires an argument", len, word)
                               : usage_error(u, "option requires an argument -- '%c'", optopt);
        if (optopt == 0) {      /* an unknown or ambiguous long option */
                (void) find_long(longopts, word, &n);
                return n > 1 ? usage_error(u, "option '%.*s' is ambiguous", len, word)
                             : usage_error(u, "unrecognized option '%.*s'", len, word);
        }
        const struct option *o = is_long && word[len] == '=' ? find_long(longopts, word, &n) : NULL;
        if (o && o->has_arg == no_argument && o->val == optopt)
                return usage_error(u, "option '--%s' doesn't allow an argument", o->name);
        return usage_error(u, "invalid option -- '%c'", optopt);
}

int usage_getopt(const struct usage *u, int argc, char **argv, const char *optstring, const struct option *longopts) {
        static const struct option none[] = { {} };
        /* A leading ':' tells a missing argument (':') from an unknown option ('?'). */
        char opts[strlen(optstring) + 2];
        opts[0] = ':';
        strcpy(opts + 1, optstring[0] == ':' ? optstring + 1 : optstring);

        opterr = 0;
        int c = getopt_long(argc, argv, opts, longopts ? longopts : none, NULL);
        if (c == '?' || c == ':') {
                (void) report(u, c, argv, longopts);
                return '?';
        }
        return c;
}
