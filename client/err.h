/* Errors of the client library: a negative errno for the program and one
 * sentence for the person ("what failed and why"). Only the outermost layer
 * prints it. */
#pragma once

#include <stddef.h>

struct tc_err {
        char msg[512];
};

/* Sets the message and returns r, so that callers write
 *   return tc_fail(err, -EINVAL, "configuration is not JSON");      */
__attribute__((format(printf, 3, 4)))
int tc_fail(struct tc_err *err, int r, const char *fmt, ...);

/* Puts "PREFIX: " in front of the message already in err; returns r. */
__attribute__((format(printf, 3, 4)))
int tc_wrap(struct tc_err *err, int r, const char *fmt, ...);
