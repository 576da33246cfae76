/* Reading an initramfs for `tether boot check`: cpio "newc" archives one
 * after another, as the kernel unpacks them. The early ones (microcode) are
 * uncompressed; the last is usually compressed, and is piped through the
 * decompressor program its magic names, as lsinitramfs and lsinitrd do.
 * Parsing the cpio headers here (instead of running lsinitramfs, which
 * exists only with initramfs-tools, or lsinitrd, only with dracut) reads
 * the images of both systems on either, and gives the few small files the
 * check needs without unpacking the image anywhere. */
#include "bootcheck.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "cleanup.h"
#include "util.h"

#define NAMES_MAX 500000           /* a large image holds about 10,000 */
#define NAMES_BYTES_MAX (64 * 1024 * 1024)  /* all names together: a crafted image's long ones */
#define NAME_MAX_BYTES 4096
#define KEPT_FILE_MAX (64 * 1024)  /* the files read: crypttab, conf, cmdline.d */
#define CPIO_HEADER 110

extern char **environ;

struct stream {
        int fd;
        pid_t child;               /* the decompressor, or 0 */
        const char *tool;
        int64_t deadline_ms;
        uint64_t pos;              /* bytes consumed */
        uint8_t buf[65536];
        size_t off, have;
        bool eof;
};

/* Makes n bytes (at most sizeof(buf)) available at s->buf + s->off; fewer
 * at the end of the stream. */
static int fill(struct stream *s, size_t n, struct tc_err *err) {
        if (s->have - s->off >= n || s->eof)
                return 0;
        memmove(s->buf, s->buf + s->off, s->have - s->off);
        s->have -= s->off;
        s->off = 0;
        while (s->have < n && !s->eof) {
                if (s->child) {
                        int64_t left = s->deadline_ms ? s->deadline_ms - tc_now_ms() : -1;
                        if (s->deadline_ms && left <= 0)
                                return tc_fail(err, -ETIMEDOUT, "%s took too long to decompress it", s->tool);
                        struct pollfd p = { .fd = s->fd, .events = POLLIN };
                        int r = poll(&p, 1, left < 0 ? -1 : (int) (left > 1000 ? 1000 : left));
                        if (r < 0 && errno != EINTR)
                                return tc_fail(err, -errno, "poll: %s", strerror(errno));
                        if (r <= 0)
                                continue;
                }
                ssize_t got = read(s->fd, s->buf + s->have, sizeof(s->buf) - s->have);
                if (got < 0 && errno == EINTR)
                        continue;
                if (got < 0)
                        return tc_fail(err, -errno, "read: %s", strerror(errno));
                if (got == 0)
                        s->eof = true;
                s->have += (size_t) got;
        }
        return 0;
}

static size_t avail(const struct stream *s) {
        return s->have - s->off;
}

static void consume(struct stream *s, size_t n) {
        s->off += n;
        s->pos += n;
}

/* Reads n bytes into dst (NULL: skips them); -EBADMSG if the stream ends first. */
static int take(struct stream *s, void *dst, uint64_t n, struct tc_err *err) {
        while (n > 0) {
                size_t chunk = n > sizeof(s->buf) ? sizeof(s->buf) : (size_t) n;
                int r = fill(s, chunk, err);
                if (r < 0)
                        return r;
                if (avail(s) == 0)
                        return tc_fail(err, -EBADMSG, "the archive ends in the middle of a file");
                if (chunk > avail(s))
                        chunk = avail(s);
                if (dst) {
                        memcpy(dst, s->buf + s->off, chunk);
                        dst = (uint8_t *) dst + chunk;
                }
                consume(s, chunk);
                n -= chunk;
        }
        return 0;
}

static bool hex_field(const uint8_t *p, uint64_t *v) {
        *v = 0;
        for (int i = 0; i < 8; i++) {
                int c = p[i], d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                                              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
                if (d < 0)
                        return false;
                *v = *v << 4 | (uint64_t) d;
        }
        return true;
}

static int pad4(struct stream *s, struct tc_err *err) {
        return take(s, NULL, (4 - s->pos % 4) % 4, err);
}

static int keep(char **slot, const uint8_t *data, size_t len, bool append) {
        size_t old = append && *slot ? strlen(*slot) : 0;
        if (old + len > KEPT_FILE_MAX)
                return 0;  /* not one of the small files this reads */
        char *p = realloc(append ? *slot : NULL, old + len + 2);
        if (!p)
                return -ENOMEM;
        if (!append)
                free(*slot);
        memcpy(p + old, data, len);
        p[old + len] = '\0';
        if (append && len > 0 && p[old + len - 1] != '\n')
                strcat(p, "\n");
        *slot = p;
        return 0;
}

/* Where a file's content goes, if the check reads it. */
static char **kept_slot(struct tc_initramfs *out, const char *name, bool *append) {
        *append = false;
        if (strcmp(name, "conf/tether.conf") == 0)
                return &out->tether_conf;
        if (strcmp(name, "cryptroot/crypttab") == 0 || strcmp(name, "etc/crypttab") == 0)
                return &out->crypttab;
        if (strcmp(name, "usr/lib/dracut/modules.txt") == 0)
                return &out->modules;
        if (strncmp(name, "etc/cmdline.d/", 14) == 0 && tc_has_suffix(name, ".conf")) {
                *append = true;
                return &out->cmdline_d;
        }
        return NULL;
}

static int name_add(struct tc_initramfs *out, const char *name) {
        size_t len = strlen(name) + 1;
        if (out->n >= NAMES_MAX || out->names_bytes + len > NAMES_BYTES_MAX)
                return -E2BIG;
        if ((out->n & (out->n - 1)) == 0) {  /* 0, 1, 2, 4...: grow */
                char **p = realloc(out->names, (out->n ? out->n * 2 : 1) * sizeof(*p));
                if (!p)
                        return -ENOMEM;
                out->names = p;
        }
        if (!(out->names[out->n] = strdup(name)))
                return -ENOMEM;
        out->names_bytes += len;
        out->n++;
        return 0;
}

/* One cpio archive, up to its trailer. */
static int read_archive(struct stream *s, struct tc_initramfs *out, struct tc_err *err) {
        for (;;) {
                uint8_t h[CPIO_HEADER];
                uint64_t mode, size, namesize;
                char name[NAME_MAX_BYTES + 1];
                int r = take(s, h, sizeof(h), err);
                if (r < 0)
                        return r;
                if ((memcmp(h, "070701", 6) != 0 && memcmp(h, "070702", 6) != 0) || !hex_field(h + 14, &mode) ||
                    !hex_field(h + 54, &size) || !hex_field(h + 94, &namesize))
                        return tc_fail(err, -EBADMSG, "not a cpio (newc) header at byte %llu",
                                       (unsigned long long) (s->pos - sizeof(h)));
                if (namesize == 0 || namesize > NAME_MAX_BYTES)
                        return tc_fail(err, -EBADMSG, "a file name of %llu bytes", (unsigned long long) namesize);
                if ((r = take(s, name, namesize, err)) < 0 || (r = pad4(s, err)) < 0)
                        return r;
                name[namesize] = '\0';
                if (strcmp(name, "TRAILER!!!") == 0)
                        return 0;
                const char *n = name;
                while (n[0] == '.' && n[1] == '/')
                        n += 2;
                while (*n == '/')
                        n++;
                if (*n && strcmp(n, ".") != 0 && (r = name_add(out, n)) < 0)
                        return tc_fail(err, r, r == -E2BIG ? "more than %d files or %d MiB of file names" : "out of memory",
                                      NAMES_MAX, NAMES_BYTES_MAX >> 20);
                bool append;
                char **slot = (mode & 0170000) == 0100000 ? kept_slot(out, n, &append) : NULL;
                if (slot && size <= KEPT_FILE_MAX) {
                        _cleanup_free_ uint8_t *data = malloc(size ? size : 1);
                        if (!data)
                                return tc_fail(err, -ENOMEM, "out of memory");
                        if ((r = take(s, data, size, err)) < 0)
                                return r;
                        if (keep(slot, data, size, append) < 0)
                                return tc_fail(err, -ENOMEM, "out of memory");
                } else if ((r = take(s, NULL, size, err)) < 0)
                        return r;
                if ((r = pad4(s, err)) < 0)
                        return r;
        }
}

/* Zero bytes between archives. Returns 1 if another part follows. */
static int skip_zeros(struct stream *s, struct tc_err *err) {
        for (;;) {
                int r = fill(s, 1, err);
                if (r < 0)
                        return r;
                if (avail(s) == 0)
                        return 0;
                if (s->buf[s->off] != 0)
                        return 1;
                consume(s, 1);
        }
}

static const struct {
        const char *tool;
        const uint8_t magic[6];
        size_t len;
        const char *argv[4];
} compressors[] = {
        { "gzip", { 0x1f, 0x8b }, 2, { "gzip", "-dc", NULL } },
        { "zstd", { 0x28, 0xb5, 0x2f, 0xfd }, 4, { "zstd", "-dcq", NULL } },
        { "xz", { 0xfd, '7', 'z', 'X', 'Z', 0 }, 6, { "xz", "-dc", NULL } },
        { "lzma", { 0x5d, 0, 0 }, 3, { "xz", "--format=lzma", "-dc", NULL } },
        { "bzip2", { 'B', 'Z', 'h' }, 3, { "bzip2", "-dc", NULL } },
        { "lz4", { 0x02, 0x21, 0x4c, 0x18 }, 4, { "lz4", "-dc", NULL } },
        { "lz4", { 0x04, 0x22, 0x4d, 0x18 }, 4, { "lz4", "-dc", NULL } },
        { "lzop", { 0x89, 'L', 'Z', 'O' }, 4, { "lzop", "-dc", NULL } },
};

/* Pipes the rest of the file (from file->pos) through the decompressor
 * named by its magic: s then reads its output. */
static int start_decompressor(struct stream *file, struct stream *s, struct tc_err *err) {
        int r = fill(file, 6, err);
        if (r < 0)
                return r;
        size_t i;
        for (i = 0; i < ELEMENTSOF(compressors); i++)
                if (avail(file) >= compressors[i].len &&
                    memcmp(file->buf + file->off, compressors[i].magic, compressors[i].len) == 0)
                        break;
        if (i == ELEMENTSOF(compressors))
                return tc_fail(err, -EBADMSG, "neither cpio nor a compression tether knows (gzip, zstd, xz, lzma, "
                               "bzip2, lz4, lzop) at byte %llu", (unsigned long long) file->pos);
        if (lseek(file->fd, (off_t) file->pos, SEEK_SET) < 0)
                return tc_fail(err, -errno, "lseek: %s", strerror(errno));
        int pipefd[2];
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return tc_fail(err, -errno, "pipe: %s", strerror(errno));
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, file->fd, STDIN_FILENO);
        posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
        posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
        pid_t pid;
        r = posix_spawnp(&pid, compressors[i].argv[0], &fa, NULL, (char **) compressors[i].argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        close(pipefd[1]);
        if (r != 0) {
                close(pipefd[0]);
                return tc_fail(err, -r, "it is %s-compressed and %s cannot run: %s", compressors[i].tool,
                               compressors[i].argv[0], strerror(r));
        }
        *s = (struct stream) { .fd = pipefd[0], .child = pid, .tool = compressors[i].argv[0],
                               .deadline_ms = file->deadline_ms };
        return 0;
}

/* Ends the decompressor: killed if its output was not read to the end. */
static int stop_decompressor(struct stream *s, bool done, struct tc_err *err) {
        int status = 0;
        if (!s->child)
                return 0;
        if (!done)
                kill(s->child, SIGKILL);
        close(s->fd);
        while (waitpid(s->child, &status, 0) < 0 && errno == EINTR)
                ;
        s->child = 0;
        if (done && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
                return tc_fail(err, -EBADMSG, "%s could not decompress it (it %s)", s->tool,
                               WIFEXITED(status) ? "failed" : "was killed");
        return 0;
}

static void detect_kind(struct tc_initramfs *out) {
        for (size_t i = 0; i < out->n; i++) {
                const char *n = out->names[i];
                if (strncmp(n, "usr/lib/dracut/", 15) == 0) {
                        out->kind = TC_INITRAMFS_DRACUT;
                        return;
                }
                if (strcmp(n, "conf/initramfs.conf") == 0 || strncmp(n, "scripts/", 8) == 0)
                        out->kind = TC_INITRAMFS_TOOLS;
        }
}

static int read_parts(struct stream *file, struct tc_initramfs *out, struct tc_err *err) {
        int r;
        /* The uncompressed archives at the front. */
        for (;;) {
                if ((r = skip_zeros(file, err)) <= 0)
                        return r;  /* the end: nothing compressed */
                if ((r = fill(file, 6, err)) < 0)
                        return r;
                if (avail(file) < 6 || memcmp(file->buf + file->off, "0707", 4) != 0)
                        break;
                if ((r = read_archive(file, out, err)) < 0)
                        return r;
        }
        /* The compressed rest: one or more archives, to its end. */
        _cleanup_free_ struct stream *s = malloc(sizeof(*s));
        if (!s)
                return tc_fail(err, -ENOMEM, "out of memory");
        if ((r = start_decompressor(file, s, err)) < 0)
                return r;
        while ((r = skip_zeros(s, err)) > 0 && (r = read_archive(s, out, err)) >= 0)
                ;
        int k = stop_decompressor(s, r == 0, err);
        return r < 0 ? r : k;
}

int tc_initramfs_read(const char *path, int64_t deadline_ms, struct tc_initramfs *out, struct tc_err *err) {
        memset(out, 0, sizeof(*out));
        _cleanup_free_ struct stream *file = calloc(1, sizeof(*file));
        if (!file)
                return tc_fail(err, -ENOMEM, "out of memory");
        /* O_NONBLOCK: a FIFO nobody writes to must not hang the check. */
        file->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (file->fd < 0)
                return tc_fail(err, -errno, "%s: %s", path, strerror(errno));
        struct stat st;
        /* Only a regular file has an end: /dev/zero or a FIFO would be read
         * past any deadline (the deadline is only checked while waiting for
         * a decompressor). */
        if (fstat(file->fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                close(file->fd);
                return tc_fail(err, -EINVAL, "%s: not a regular file; give the initramfs image itself", path);
        }
        file->deadline_ms = deadline_ms;
        int r = read_parts(file, out, err);
        close(file->fd);
        if (r >= 0 && out->n == 0)
                r = tc_fail(err, -EBADMSG, "%s: holds no files", path);
        else if (r < 0)
                r = tc_wrap(err, r, "%s", path);
        if (r < 0) {
                tc_initramfs_clear(out);
                return r;
        }
        detect_kind(out);
        return 0;
}

void tc_initramfs_clear(struct tc_initramfs *i) {
        for (size_t k = 0; k < i->n; k++)
                free(i->names[k]);
        free(i->names);
        free(i->tether_conf);
        free(i->crypttab);
        free(i->cmdline_d);
        free(i->modules);
        memset(i, 0, sizeof(*i));
}

bool tc_initramfs_has(const struct tc_initramfs *i, const char *name) {
        size_t len = strlen(name);
        for (size_t k = 0; k < i->n; k++) {
                const char *n = i->names[k];
                size_t nl = strlen(n);
                if (nl == len ? strcmp(n, name) == 0 : nl > len && n[nl - len - 1] == '/' && strcmp(n + nl - len, name) == 0)
                        return true;
        }
        return false;
}
