/* The daemon's log: one line per call on stderr, written with one write(2)
 * so lines from several threads never interleave. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Where log_line writes (stderr by default): lets a fuzz harness keep its
 * own stderr for its findings. */
void log_set_fd(int fd);

/* Copies untrusted text (a request's method or target, a message quoting a
 * request) into dst for the log: every byte outside printable ASCII becomes
 * '?', and so does a space unless keep_spaces, so that one log line stays
 * one line of whitespace-separated fields and no escape sequence reaches a
 * terminal. Text that does not fit is cut and ends in "...". Returns dst. */
char *log_sanitize(char *dst, size_t size, const char *src, bool keep_spaces);
