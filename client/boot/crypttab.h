/* What the boot code reads of crypttab(5) and of small system files, once:
 * the cryptroot agent (passfifo.c), tether boot check (bootcheck.c) and the
 * systemd agent (askpass.c). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

/* UUID=..., LABEL=..., PARTUUID=..., PARTLABEL=... as udev names them under
 * /dev/disk; anything else as it is. NULL: out of memory. */
char *tc_crypttab_source_path(const char *spec);
/* Whether a crypttab options field (a,b=c,...) holds option name, bare or
 * with a value. */
bool tc_crypttab_has_option(const char *options, const char *name);
/* Whether two paths are the same file, or block devices of the same number. */
bool tc_same_file(const char *a, const char *b);

/* The rest of fd, NUL-terminated, if it has at most max bytes (path names it
 * in errors); -EFBIG beyond. */
int tc_read_fd_max(int fd, const char *path, size_t max, char **text, size_t *len, struct tc_err *err);
/* The same for a file; 0 with *text NULL if it does not exist. Opened
 * without blocking (a FIFO in its place answers at once). */
int tc_read_file_max(const char *path, size_t max, char **text, size_t *len, struct tc_err *err);
