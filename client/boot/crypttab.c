#include "crypttab.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "cleanup.h"

char *tc_crypttab_source_path(const char *spec) {
        static const struct { const char *prefix, *dir; } tags[] = {
                { "UUID=", "/dev/disk/by-uuid/" },
                { "LABEL=", "/dev/disk/by-label/" },
                { "PARTUUID=", "/dev/disk/by-partuuid/" },
                { "PARTLABEL=", "/dev/disk/by-partlabel/" },
        };
        char *path;
        for (size_t i = 0; i < ELEMENTSOF(tags); i++) {
                size_t n = strlen(tags[i].prefix);
                if (strncmp(spec, tags[i].prefix, n) == 0)
                        return asprintf(&path, "%s%s", tags[i].dir, spec + n) < 0 ? NULL : path;
        }
        return strdup(spec);
}

bool tc_crypttab_has_option(const char *options, const char *name) {
        size_t n = strlen(name);
        for (const char *p = options; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
                if (strncmp(p, name, n) == 0 && (p[n] == '=' || p[n] == ',' || p[n] == '\0'))
                        return true;
        return false;
}

bool tc_same_file(const char *a, const char *b) {
        struct stat sa, sb;
        if (stat(a, &sa) < 0 || stat(b, &sb) < 0)
                return false;
        if (S_ISBLK(sa.st_mode) && S_ISBLK(sb.st_mode))
                return sa.st_rdev == sb.st_rdev;
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int tc_read_fd_max(int fd, const char *path, size_t max, char **text, size_t *len, struct tc_err *err) {
        _cleanup_free_ char *buf = malloc(max + 1);
        size_t n = 0;
        if (!buf)
                return tc_fail(err, -ENOMEM, "out of memory");
        /* One byte more than allowed: to tell a full file from a longer one. */
        while (n < max + 1) {
                ssize_t r = read(fd, buf + n, max + 1 - n);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0)
                        return tc_fail(err, -errno, "%s: %s", path, strerror(errno));
                if (r == 0)
                        break;
                n += (size_t) r;
        }
        if (n > max)
                return tc_fail(err, -EFBIG, "%s: larger than %zu bytes", path, max);
        buf[n] = '\0';
        *text = TAKE_PTR(buf);
        if (len)
                *len = n;
        return 0;
}

int tc_read_file_max(const char *path, size_t max, char **text, size_t *len, struct tc_err *err) {
        *text = NULL;
        if (len)
                *len = 0;
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return errno == ENOENT ? 0 : tc_fail(err, -errno, "%s: %s", path, strerror(errno));
        return tc_read_fd_max(fd, path, max, text, len, err);
}
