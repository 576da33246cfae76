/* Errors of the client library: a negative errno for the program and one
 * sentence for the person ("what failed and why"). Only the outermost layer
 * prints it. Messages quote URLs, keys and text from tokens and servers:
 * control characters and invalid UTF-8 in them come out as \xNN, and
 * characters that are invisible or reorder text (bidi overrides and
 * isolates, zero-width characters, U+2028/U+2029) as \u{XXXX}, so that what
 * reaches a terminal or a log is one harmless line that shows what it holds.
 * A backslash stays as it is: messages are built from messages escaped
 * already (an sss node quotes its children's), and escaping it would double
 * it at every level. */
#pragma once

#include <stdarg.h>
#include <stddef.h>

struct tc_err {
        char msg[512];
};

/* Sets the message (escaped) and returns r, so that callers write
 *   return tc_fail(err, -EINVAL, "configuration is not JSON");      */
__attribute__((format(printf, 3, 4)))
int tc_fail(struct tc_err *err, int r, const char *fmt, ...);

/* Puts "PREFIX: " in front of the message already in err; returns r. */
__attribute__((format(printf, 3, 4)))
int tc_wrap(struct tc_err *err, int r, const char *fmt, ...);

/* What tc_fail does, into any buffer: formats, escapes, and ends a message
 * cut to fit in "...". For messages that are not a tc_err (an event for a
 * log, a line of a report); writes at most size bytes with the NUL (of at
 * most 1023 formatted bytes) and returns the length. */
__attribute__((format(printf, 3, 4)))
size_t tc_format(char *dst, size_t size, const char *fmt, ...);
__attribute__((format(printf, 3, 0)))
size_t tc_vformat(char *dst, size_t size, const char *fmt, va_list ap);

/* The escaping of the messages, for text printed or logged outside a
 * tc_err: writes at most size bytes with the NUL, returns the length. */
size_t tc_escape(char *dst, size_t size, const char *src);
/* The same into a new string (caller frees), or NULL when out of memory. */
char *tc_escape_dup(const char *src);
