/* What every program's command line shares: a usage error says what was
 * wrong, then shows the usage, and exits 2; -h/--help shows it on stdout and
 * exits 0; --version; and getopt whose errors carry the command's whole name
 * ("tether luks bind: invalid option -- 'z'"), which glibc's, worded with
 * argv[0], cannot: a subcommand's argv[0] is "bind". */
#pragma once

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>

#define EXIT_USAGE 2

struct usage {
        const char *prog;               /* "tether luks bind": what its messages start with */
        const char *text;               /* the usage text, or (NULL) */
        void (*print)(FILE *f);         /* what prints it */
};

/* "PROG: MESSAGE", a blank line and the usage, on stderr; returns EXIT_USAGE. */
int usage_error(const struct usage *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The usage on stdout; returns EXIT_SUCCESS, or EXIT_FAILURE if it could not be written. */
int usage_help(const struct usage *u);
/* "PROG VERSION" on stdout (meson's project version); returns as usage_help. */
int usage_version(const char *prog);
/* "-h" or "--help"; "--version". */
bool usage_is_help(const char *arg);
bool usage_is_version(const char *arg);

/* getopt_long() (longopts may be NULL) with opterr off: an unknown option, a
 * missing argument or one given to an option that takes none is reported
 * here as a usage error (usage_error) and returned as '?'. A long option
 * taking no argument must have as its value a short option of optstring, or
 * a value above 255: that tells "--help=x" from an unknown short option. */
int usage_getopt(const struct usage *u, int argc, char **argv, const char *optstring, const struct option *longopts);
