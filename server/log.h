/* The daemon's log: one line per call on stderr, written with one write(2)
 * so lines from several threads never interleave. */
#pragma once

void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
