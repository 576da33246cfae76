/* Per-host exchange keys under KEYDIR/hosts (see hosts.h). */
#include "hosts.h"
#include "cleanup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <openssl/rand.h>

#define STATE_FILE "state"

static const char *const state_names[TK_HOST_STATE_MAX] = {
        [TK_HOST_ACTIVE] = "active",
        [TK_HOST_REVOKED] = "revoked",
        [TK_HOST_HELD] = "held",
};

static bool name_char(char c, bool first) {
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
                return true;
        return !first && (c == '.' || c == '_' || c == '-');
}

bool tk_host_name_valid_n(const char *name, size_t len) {
        if (len == 0 || len > TK_HOST_NAME_MAX)
                return false;
        for (size_t i = 0; i < len; i++) {
                if (!name_char(name[i], i == 0))
                        return false;
                if (i > 0 && name[i] == '.' && name[i - 1] == '.')
                        return false;
        }
        return true;
}

bool tk_host_name_valid(const char *name) {
        size_t len = strnlen(name, TK_HOST_NAME_MAX + 1);
        return name[len] == '\0' && tk_host_name_valid_n(name, len);
}

const char *tk_host_state_name(enum tk_host_state s) {
        return (unsigned) s < TK_HOST_STATE_MAX ? state_names[s] : "unknown";
}

int tk_host_state_parse(const char *text, enum tk_host_state *ret) {
        for (size_t i = 0; i < TK_HOST_STATE_MAX; i++)
                if (strcmp(text, state_names[i]) == 0) {
                        *ret = (enum tk_host_state) i;
                        return 0;
                }
        return -EINVAL;
}

static int host_dir(const char *keydir, const char *name, char **ret, struct tc_err *err) {
        if (!tk_host_name_valid(name))
                return tc_fail(err, -EINVAL, "invalid host name '%s': use 1 to %d of a-z 0-9 . _ - starting with a "
                               "letter or digit, without '..'", name, TK_HOST_NAME_MAX);
        if (asprintf(ret, "%s/" TK_HOSTS_SUBDIR "/%s", keydir, name) < 0)
                return tc_fail(err, -ENOMEM, "out of memory");
        return 0;
}

static int read_state_at(int dfd, const char *name, enum tk_host_state *ret, struct tc_err *err) {
        char buf[32];
        _cleanup_close_ int fd = openat(dfd, STATE_FILE, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
        if (fd < 0 && errno == ENOENT) {
                *ret = TK_HOST_ACTIVE;
                return 0;
        }
        if (fd < 0)
                return tc_fail(err, -errno, "host %s: cannot read its state file: %s", name, strerror(errno));
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        if (n < 0)
                return tc_fail(err, -errno, "host %s: cannot read its state file: %s", name, strerror(errno));
        buf[n] = '\0';
        buf[strcspn(buf, "\n")] = '\0';
        if (tk_host_state_parse(buf, ret) < 0)
                return tc_fail(err, -EINVAL, "host %s: its state file holds neither active, revoked nor held", name);
        return 0;
}


static void random_hex(char *out, size_t n_bytes) {
        uint8_t rnd[16];
        (void) RAND_bytes(rnd, (int) n_bytes);
        for (size_t i = 0; i < n_bytes; i++)
                sprintf(out + 2 * i, "%02x", rnd[i]);
}

/* Writes text to name in dfd through a temporary file, fsync, rename and an
 * fsync of the directory: the file is whole or as it was, also after a
 * crash. replace: whether an existing name is replaced. */
static int write_atomic(int dfd, const char *name, const char *text, bool replace, mode_t mode, struct tc_err *err) {
        char tmp[64], hex[17];
        struct stat dst;

        if (RAND_status() != 1)
                return tc_fail(err, -EIO, "no randomness for a temporary name");
        random_hex(hex, 8);
        snprintf(tmp, sizeof(tmp), ".tether-new-%s.tmp", hex);
        _cleanup_close_ int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd < 0)
                return tc_fail(err, -errno, "cannot create a file: %s", strerror(errno));
        size_t len = strlen(text);
        int r = 0;
        if (write(fd, text, len) != (ssize_t) len) {
                r = tc_fail(err, errno ? -errno : -EIO, "cannot write %s: %s", name, strerror(errno ? errno : EIO));
                goto undo;
        }
        if (geteuid() == 0 && fstat(dfd, &dst) == 0)
                (void) fchown(fd, dst.st_uid, dst.st_gid);
        if (fchmod(fd, mode) < 0 || fsync(fd) < 0) {
                r = tc_fail(err, -errno, "cannot write %s: %s", name, strerror(errno));
                goto undo;
        }
        if (replace ? renameat(dfd, tmp, dfd, name) < 0 : renameat2(dfd, tmp, dfd, name, RENAME_NOREPLACE) < 0) {
                r = tc_fail(err, -errno, "cannot create %s: %s", name, strerror(errno));
                goto undo;
        }
        if (fsync(dfd) < 0)
                return tc_fail(err, -errno, "cannot sync the directory of %s: %s", name, strerror(errno));
        return 0;
undo:
        (void) unlinkat(dfd, tmp, 0);
        return r;
}

static int open_host(const char *keydir, const char *name, int *ret, struct tc_err *err) {
        _cleanup_free_ char *dir = NULL;
        int r = host_dir(keydir, name, &dir, err);
        if (r < 0)
                return r;
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 && errno == ENOENT)
                return tc_fail(err, -ENOENT, "no host %s in %s (tether-keys host add creates one)", name, keydir);
        /* A symbolic link is refused: tetherd watches the host directory
         * itself (a change behind a link, a revocation, would go unseen),
         * and unlinks allow tokens in it. */
        if (fd < 0 && (errno == ENOTDIR || errno == ELOOP))
                return tc_fail(err, -ENOTDIR, "%s is no directory (a symbolic link?): a host's keys must be in a "
                               "directory of its own there", dir);
        if (fd < 0)
                return tc_fail(err, -errno, "cannot open %s: %s", dir, strerror(errno));
        *ret = fd;
        return 0;
}

int tk_host_state_read(const char *keydir, const char *name, enum tk_host_state *ret, struct tc_err *err) {
        _cleanup_close_ int dfd = -1;
        int r = open_host(keydir, name, &dfd, err);
        if (r < 0)
                return r;
        return read_state_at(dfd, name, ret, err);
}

int tk_host_check(const char *keydir, const char *name, struct tc_err *err) {
        int fd = -1;
        int r = open_host(keydir, name, &fd, err);
        if (fd >= 0)
                close(fd);
        return r;
}

int tk_host_state_write(const char *keydir, const char *name, enum tk_host_state s, struct tc_err *err) {
        char line[32];
        _cleanup_close_ int dfd = -1;
        int r = open_host(keydir, name, &dfd, err);
        if (r < 0)
                return r;
        snprintf(line, sizeof(line), "%s\n", tk_host_state_name(s));
        /* Readable by the server (the directory's owner), written by root. */
        return write_atomic(dfd, STATE_FILE, line, true, 0640, err);
}

static void host_clear(struct tk_host *h) {
        free(h->name);
        free(h->dir);
        tk_keyset_free(h->ks);
}

void tk_hosts_free(struct tk_hosts *h) {
        if (!h)
                return;
        for (size_t i = 0; i < h->n; i++)
                host_clear(&h->hosts[i]);
        free(h->hosts);
        free(h);
}

static int cmp_hosts(const void *a, const void *b) {
        return strcmp(((const struct tk_host *) a)->name, ((const struct tk_host *) b)->name);
}

const struct tk_host *tk_hosts_find(const struct tk_hosts *h, const char *name, size_t len) {
        size_t lo = 0, hi = h ? h->n : 0;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                const char *t = h->hosts[mid].name;
                int c = strncmp(t, name, len);
                if (c == 0 && t[len] != '\0')
                        c = 1;
                if (c == 0)
                        return &h->hosts[mid];
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NULL;
}

static size_t count_allow(const char *dir) {
        _cleanup_closedir_ DIR *d = opendir(dir);
        struct dirent *de;
        size_t n = 0;
        while (d && (de = readdir(d)))
                if (strncmp(de->d_name, TK_HOST_ALLOW_PREFIX, strlen(TK_HOST_ALLOW_PREFIX)) == 0)
                        n++;
        return n;
}

struct host_warn {
        tk_warn_fn warn;
        void *userdata;
        const char *name;
};

/* A host's key file is reported as hosts/NAME/FILE. */
static void warn_host_file(void *userdata, const char *file, const struct tc_err *why) {
        struct host_warn *hw = userdata;
        char path[PATH_MAX];
        snprintf(path, sizeof(path), TK_HOSTS_SUBDIR "/%s/%s", hw->name, file);
        if (hw->warn)
                hw->warn(hw->userdata, path, why);
}

static int load_host(const char *keydir, const char *name, const struct tk_hosts *prev, tk_warn_fn warn,
                     void *userdata, struct tk_host *h) {
        struct tc_err why = {};
        struct host_warn hw = { warn, userdata, name };
        const struct tk_host *old = tk_hosts_find(prev, name, strlen(name));
        char where[PATH_MAX];
        int r;

        snprintf(where, sizeof(where), TK_HOSTS_SUBDIR "/%s", name);
        *h = (struct tk_host) {};
        if (!(h->name = strdup(name)) || asprintf(&h->dir, "%s/%s", keydir, where) < 0) {
                h->dir = NULL;
                return -ENOMEM;
        }
        r = tk_host_state_read(keydir, name, &h->state, &why);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                if (warn)
                        warn(userdata, where, &why);
                return -EAGAIN;
        }
        r = tk_keyset_load_reusing(h->dir, old ? old->ks : NULL, warn_host_file, &hw, &h->ks);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                tc_fail(&why, r, "cannot be read: %s", strerror(-r));
                if (warn)
                        warn(userdata, where, &why);
                return -EAGAIN;
        }
        h->n_allow = count_allow(h->dir);
        return 0;
}

int tk_hosts_load(const char *keydir, const struct tk_hosts *prev, tk_warn_fn warn, void *userdata,
                  struct tk_hosts **ret) {
        _cleanup_free_ char *path = NULL;
        _cleanup_(tk_hosts_freep) struct tk_hosts *hs = calloc(1, sizeof(*hs));
        size_t cap = 0;
        struct dirent *de;

        if (!hs || asprintf(&path, "%s/" TK_HOSTS_SUBDIR, keydir) < 0)
                return -ENOMEM;
        _cleanup_closedir_ DIR *d = opendir(path);
        if (!d && errno == ENOENT) {
                *ret = TAKE_PTR(hs);
                return 0;
        }
        if (!d)
                return -errno;
        for (;;) {
                errno = 0;
                de = readdir(d);
                if (!de) {
                        if (errno != 0)
                                return -errno;
                        break;
                }
                if (de->d_name[0] == '.')
                        continue;
                if (!tk_host_name_valid(de->d_name)) {
                        struct tc_err why = {};
                        tc_fail(&why, -EINVAL, "is no valid host name, skipped");
                        if (warn)
                                warn(userdata, TK_HOSTS_SUBDIR, &why);
                        continue;
                }
                if (hs->n == cap) {
                        cap = cap ? 2 * cap : 16;
                        struct tk_host *nh = realloc(hs->hosts, cap * sizeof(*nh));
                        if (!nh)
                                return -ENOMEM;
                        hs->hosts = nh;
                }
                int r = load_host(keydir, de->d_name, prev, warn, userdata, &hs->hosts[hs->n]);
                if (r == -ENOMEM) {
                        host_clear(&hs->hosts[hs->n]);
                        return r;
                }
                if (r < 0) {
                        host_clear(&hs->hosts[hs->n]);
                        continue;
                }
                hs->n++;
        }
        if (hs->n > 0)
                qsort(hs->hosts, hs->n, sizeof(*hs->hosts), cmp_hosts);
        *ret = TAKE_PTR(hs);
        return 0;
}

/* mkdir that gives the new directory to KEYDIR's owner when run as root:
 * the server runs as that owner and removes allow tokens there. */
static int make_dir(int parent, const char *name, const struct stat *owner, struct tc_err *err) {
        if (mkdirat(parent, name, 0750) < 0)
                return -errno;
        if (geteuid() == 0 && (owner->st_uid != 0 || owner->st_gid != 0) &&
            fchownat(parent, name, owner->st_uid, owner->st_gid, AT_SYMLINK_NOFOLLOW) < 0)
                return tc_fail(err, -errno, "cannot give %s to uid %u: %s", name, (unsigned) owner->st_uid,
                               strerror(errno));
        /* umask 0337 (for keys) would leave it unsearchable. */
        if (fchmodat(parent, name, 0750, 0) < 0)
                return tc_fail(err, -errno, "cannot set the mode of %s: %s", name, strerror(errno));
        return 0;
}

int tk_host_add(const char *keydir, const char *name, char **exc_out, struct tc_err *err) {
        _cleanup_free_ char *dir = NULL, *exc = NULL;
        struct stat st;
        int r = host_dir(keydir, name, &dir, err);
        if (r < 0)
                return r;
        _cleanup_close_ int kfd = open(keydir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (kfd < 0 || fstat(kfd, &st) < 0)
                return tc_fail(err, -errno, "cannot open key directory %s: %s", keydir, strerror(errno));
        r = make_dir(kfd, TK_HOSTS_SUBDIR, &st, err);
        if (r < 0 && r != -EEXIST)
                return err->msg[0] ? r : tc_fail(err, r, "cannot create %s/" TK_HOSTS_SUBDIR ": %s", keydir, strerror(-r));
        _cleanup_close_ int hfd = openat(kfd, TK_HOSTS_SUBDIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (hfd < 0)
                return tc_fail(err, -errno, "cannot open %s/" TK_HOSTS_SUBDIR ": %s", keydir, strerror(errno));
        /* Created under a temporary name and renamed when complete: the
         * server never sees a host without its key and state. */
        char tmp[64], hex[17];
        random_hex(hex, 8);
        snprintf(tmp, sizeof(tmp), ".new-%s", hex);
        r = make_dir(hfd, tmp, &st, err);
        if (r < 0)
                return err->msg[0] ? r : tc_fail(err, r, "cannot create %s: %s", dir, strerror(-r));
        _cleanup_close_ int dfd = openat(hfd, tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (dfd < 0)
                r = tc_fail(err, -errno, "cannot open %s: %s", tmp, strerror(errno));
        if (r >= 0)
                r = tk_keygen_one(dfd, "ECMR", &exc, err);
        if (r >= 0)
                r = write_atomic(dfd, STATE_FILE, "active\n", false, 0640, err);
        if (r >= 0 && renameat2(hfd, tmp, hfd, name, RENAME_NOREPLACE) < 0)
                r = errno == EEXIST ? tc_fail(err, -EEXIST, "host %s exists already", name)
                                    : tc_fail(err, -errno, "cannot create %s: %s", dir, strerror(errno));
        if (r < 0) {
                if (exc)
                        (void) unlinkat(dfd, exc, 0);
                (void) unlinkat(dfd, STATE_FILE, 0);
                (void) unlinkat(hfd, tmp, AT_REMOVEDIR);
                return r;
        }
        if (fsync(hfd) < 0)
                return tc_fail(err, -errno, "cannot sync %s/" TK_HOSTS_SUBDIR ": %s", keydir, strerror(errno));
        if (exc_out)
                *exc_out = TAKE_PTR(exc);
        return 0;
}

/* Removes every file of dfd (a host directory holds no subdirectory), the
 * state file last: a host without it is active, and a server loading the
 * half-emptied directory must still read "revoked" there. */
static int empty_dir(int dfd) {
        _cleanup_closedir_ DIR *d = fdopendir(dup(dfd));
        struct dirent *de;
        int r = 0;
        if (!d)
                return -errno;
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0 &&
                    strcmp(de->d_name, STATE_FILE) != 0 && unlinkat(dfd, de->d_name, 0) < 0 && errno != ENOENT &&
                    r == 0)
                        r = -errno;
        if (r == 0 && unlinkat(dfd, STATE_FILE, 0) < 0 && errno != ENOENT)
                r = -errno;
        return r;
}

int tk_host_delete(const char *keydir, const char *name, bool force, struct tc_err *err) {
        enum tk_host_state st;
        _cleanup_close_ int dfd = -1;
        int r = open_host(keydir, name, &dfd, err);
        if (r < 0)
                return r;
        r = read_state_at(dfd, name, &st, err);
        if (r < 0 && !force)
                return r;
        if (!force && st != TK_HOST_REVOKED)
                return tc_fail(err, -EBUSY, "host %s is %s: revoke it first (tether-keys host revoke), or pass --force; "
                               "volumes bound to its keys can then never be recovered through it", name,
                               tk_host_state_name(st));
        _cleanup_free_ char *hosts = NULL;
        if (asprintf(&hosts, "%s/" TK_HOSTS_SUBDIR, keydir) < 0)
                return tc_fail(err, -ENOMEM, "out of memory");
        _cleanup_close_ int hfd = open(hosts, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (hfd < 0)
                return tc_fail(err, -errno, "cannot open %s: %s", hosts, strerror(errno));
        /* Revoked first, so that a server that sees the directory half
         * emptied refuses it rather than serving what is left. */
        (void) write_atomic(dfd, STATE_FILE, "revoked\n", true, 0640, err);
        r = empty_dir(dfd);
        if (r < 0)
                return tc_fail(err, r, "cannot remove the files of host %s: %s", name, strerror(-r));
        if (unlinkat(hfd, name, AT_REMOVEDIR) < 0)
                return tc_fail(err, -errno, "cannot remove the directory of host %s: %s", name, strerror(errno));
        (void) fsync(hfd);
        *err = (struct tc_err) {};
        return 0;
}

int tk_host_rotate(const char *keydir, const char *name, char **exc_out, struct tc_err *err) {
        _cleanup_close_ int dfd = -1;
        _cleanup_free_ char *exc = NULL;
        int r = open_host(keydir, name, &dfd, err);
        if (r < 0)
                return r;
        /* The names to hide, before the new key exists. */
        char **old = NULL;
        size_t n_old = 0;
        {
                _cleanup_closedir_ DIR *d = fdopendir(dup(dfd));
                struct dirent *de;
                if (!d)
                        return tc_fail(err, -errno, "cannot read host %s: %s", name, strerror(errno));
                while ((de = readdir(d))) {
                        size_t len = strlen(de->d_name);
                        if (de->d_name[0] == '.' || len <= 4 || strcmp(de->d_name + len - 4, ".jwk") != 0)
                                continue;
                        char **nn = realloc(old, (n_old + 1) * sizeof(*old));
                        if (!nn || !(nn[n_old] = strdup(de->d_name))) {
                                r = -ENOMEM;
                                old = nn ? nn : old;
                                break;
                        }
                        old = nn;
                        n_old++;
                }
        }
        if (r == 0)
                r = tk_keygen_one(dfd, "ECMR", &exc, err);
        else
                tc_fail(err, r, "out of memory");
        for (size_t i = 0; r == 0 && i < n_old; i++) {
                char hidden[NAME_MAX + 1];
                int h = tk_key_hide(dfd, old[i], hidden, sizeof(hidden));
                if (h < 0 && h != -ENOENT)
                        /* The new key is advertised with the old one: clients
                         * may bind to either; nothing is lost. */
                        r = tc_fail(err, h, "host %s: new key %s created, but %s cannot be hidden: %s", name, exc,
                                    old[i], strerror(-h));
        }
        for (size_t i = 0; i < n_old; i++)
                free(old[i]);
        free(old);
        if (r == 0 && fsync(dfd) < 0)
                r = tc_fail(err, -errno, "cannot sync host %s: %s", name, strerror(errno));
        if (r == 0 && exc_out)
                *exc_out = TAKE_PTR(exc);
        return r;
}

int tk_host_allow(const char *keydir, const char *name, char **token_out, struct tc_err *err) {
        _cleanup_close_ int dfd = -1;
        char token[64], hex[33];
        int r = open_host(keydir, name, &dfd, err);
        if (r < 0)
                return r;
        random_hex(hex, 16);
        snprintf(token, sizeof(token), TK_HOST_ALLOW_PREFIX "%s", hex);
        /* Writable by the server's user (the directory's owner) only: it is
         * the directory's write permission that lets it remove the token. */
        r = write_atomic(dfd, token, "", false, 0440, err);
        if (r < 0)
                return r;
        if (token_out && !(*token_out = strdup(token)))
                return tc_fail(err, -ENOMEM, "out of memory");
        return 0;
}

int tk_host_allow_consume(const char *host_dir) {
        _cleanup_closedir_ DIR *d = opendir(host_dir);
        struct dirent *de;
        if (!d)
                return -errno;
        while ((de = readdir(d))) {
                if (strncmp(de->d_name, TK_HOST_ALLOW_PREFIX, strlen(TK_HOST_ALLOW_PREFIX)) != 0)
                        continue;
                /* Only one unlink() of a name succeeds: the token is spent
                 * once, whoever else tries at the same time. */
                if (unlinkat(dirfd(d), de->d_name, 0) == 0) {
                        /* Spent for good: a crash must not bring it back. */
                        (void) fsync(dirfd(d));
                        return 0;
                }
        }
        return -ENOENT;
}
