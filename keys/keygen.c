/* Creating and rotating keys without ever leaving a half-written directory. */
#include "keyset.h"
#include "cleanup.h"
#include "harden.h"
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <jose/jwk.h>
#include <openssl/rand.h>

static bool is_valid_file_name(const char *name) {
        return name[0] && !strchr(name, '/') && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

int tk_key_file_write(int dfd, const char *name, const json_t *jwk, uid_t uid, gid_t gid, struct tc_err *err) {
        /* Holds "d": wiped, whatever allocator jansson has. */
        _cleanup_erase_free_ char *text = json_dumps(jwk, JSON_COMPACT | JSON_SORT_KEYS);
        char tmp[64];
        uint8_t rnd[8];
        struct stat dst;

        if (!text)
                return tc_fail(err, -ENOMEM, "cannot serialize key");
        if (RAND_bytes(rnd, sizeof(rnd)) != 1)
                return tc_fail(err, -EIO, "no randomness for a temporary name");
        snprintf(tmp, sizeof(tmp), ".tether-new-%02x%02x%02x%02x%02x%02x%02x%02x.tmp",
                 rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);

        _cleanup_close_ int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0440);
        if (fd < 0)
                return tc_fail(err, -errno, "cannot create a file in the key directory: %s", strerror(errno));

        int r = 0;
        size_t len = strlen(text), off = 0;
        while (off < len) {
                ssize_t w = write(fd, text + off, len - off);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        r = tc_fail(err, -errno, "cannot write %s: %s", name, strerror(errno));
                        goto undo;
                }
                off += (size_t) w;
        }
        /* By default the key belongs to whoever owns the directory, so a key
         * made by root for a server running as its own user stays readable. */
        if (geteuid() == 0 && uid != (uid_t) -1) {
                if (fchown(fd, uid, gid) < 0) {
                        r = tc_fail(err, -errno, "cannot give %s to uid %u: %s", name, (unsigned) uid, strerror(errno));
                        goto undo;
                }
        } else if (fstat(dfd, &dst) == 0 && geteuid() == 0 && (dst.st_uid != 0 || dst.st_gid != 0))
                (void) fchown(fd, dst.st_uid, dst.st_gid);
        if (fchmod(fd, 0440) < 0 || fsync(fd) < 0) {
                r = tc_fail(err, -errno, "cannot write %s: %s", name, strerror(errno));
                goto undo;
        }
        if (renameat2(dfd, tmp, dfd, name, RENAME_NOREPLACE) < 0) {
                r = tc_fail(err, -errno, "cannot create %s: %s", name, strerror(errno));
                goto undo;
        }
        return 0;
undo:
        (void) unlinkat(dfd, tmp, 0);
        return r;
}

static json_t *generate(const char *alg) {
        json_auto_t *jwk = json_pack("{s:s}", "alg", alg);
        return jwk && jose_jwk_gen(NULL, jwk) ? json_incref(jwk) : NULL;
}

static int make_one(int dfd, const char *alg, const char *name, char **out, struct tc_err *err) {
        json_auto_t *jwk = generate(alg);
        _cleanup_free_ char *file = NULL;

        if (!jwk)
                return tc_fail(err, -EIO, "cannot generate a %s key", alg);
        if (name) {
                if (!is_valid_file_name(name))
                        return tc_fail(err, -EINVAL, "invalid key file name '%s'", name);
                if (asprintf(&file, tc_has_suffix(name, ".jwk") ? "%s" : "%s.jwk", name) < 0)
                        return tc_fail(err, -ENOMEM, "out of memory");
        } else {
                _cleanup_free_ char *thp = tk_thumbprint(jwk, "S256");
                if (!thp || asprintf(&file, "%s.jwk", thp) < 0)
                        return tc_fail(err, -ENOMEM, "cannot compute a thumbprint");
        }
        int r = tk_key_file_write(dfd, file, jwk, (uid_t) -1, (gid_t) -1, err);
        if (r < 0)
                return r;
        *out = TAKE_PTR(file);
        return 0;
}

int tk_keygen_one(int dfd, const char *alg, char **out, struct tc_err *err) {
        return make_one(dfd, alg, NULL, out, err);
}

int tk_keygen_pair(const char *dir, const char *sig_name, const char *exc_name,
                   char **sig_out, char **exc_out, struct tc_err *err) {
        _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        _cleanup_free_ char *sig = NULL, *exc = NULL;
        int r;

        if (dfd < 0)
                return tc_fail(err, -errno, "cannot open key directory %s: %s", dir, strerror(errno));
        r = make_one(dfd, "ES512", sig_name, &sig, err);
        if (r < 0)
                return r;
        r = make_one(dfd, "ECMR", exc_name, &exc, err);
        if (r < 0) {
                /* A lone signing key would be advertised with no exchange key. */
                (void) unlinkat(dfd, sig, 0);
                return r;
        }
        if (fsync(dfd) < 0)
                return tc_fail(err, -errno, "cannot sync key directory %s: %s", dir, strerror(errno));
        if (sig_out)
                *sig_out = TAKE_PTR(sig);
        if (exc_out)
                *exc_out = TAKE_PTR(exc);
        return 0;
}

static void free_names(char **names, size_t n) {
        for (size_t i = 0; names && i < n; i++)
                free(names[i]);
        free(names);
}

void tk_rotation_clear(struct tk_rotation *rot) {
        free(rot->sig);
        free(rot->exc);
        free_names(rot->hidden_from, rot->n_hidden);
        free_names(rot->hidden_to, rot->n_hidden);
        *rot = (struct tk_rotation) {};
}

/* Other hidden names tried when ".X.jwk" is taken: ".X.1.jwk" and on. */
#define HIDE_SUFFIXES_MAX 1000

/* Renames the advertised key file name to a hidden name no file has yet,
 * written to hidden: ".X.jwk", else ".X.N.jwk". A key is never renamed over
 * another: clients may still be bound to a rotated key. */
int tk_key_hide(int dfd, const char *name, char *hidden, size_t len) {
        int base = (int) strlen(name) - 4;   /* without ".jwk" */

        for (unsigned n = 0; n <= HIDE_SUFFIXES_MAX; n++) {
                int w = n == 0 ? snprintf(hidden, len, ".%s", name) : snprintf(hidden, len, ".%.*s.%u.jwk", base, name, n);
                if (w < 0 || (size_t) w >= len || w > NAME_MAX)
                        return -ENAMETOOLONG;
                if (renameat2(dfd, name, dfd, hidden, RENAME_NOREPLACE) == 0)
                        return 0;
                if (errno != EEXIST)
                        return -errno;
        }
        return -EEXIST;
}

/* The advertised key files of d: the keys a rotation hides. */
static int advertised_names(DIR *d, char ***ret, size_t *n_ret) {
        char **names = NULL;
        size_t n = 0;
        struct dirent *de;

        while ((de = readdir(d))) {
                if (de->d_name[0] == '.' || !tc_has_suffix(de->d_name, ".jwk"))
                        continue;
                char **nn = realloc(names, (n + 1) * sizeof(*names));
                if (!nn) {
                        free_names(names, n);
                        return -ENOMEM;
                }
                names = nn;
                if (!(names[n] = strdup(de->d_name))) {
                        free_names(names, n);
                        return -ENOMEM;
                }
                n++;
        }
        *ret = names;
        *n_ret = n;
        return 0;
}

/* Puts the directory back as it was before rot: hidden keys get their names
 * back, the new pair goes. Returns 0 or the errno of the first step that
 * failed (the directory is then not as it was). */
static int undo_rotation(int dfd, const struct tk_rotation *rot) {
        int r = 0;
        for (size_t i = rot->n_hidden; i > 0; i--)
                if (renameat2(dfd, rot->hidden_to[i - 1], dfd, rot->hidden_from[i - 1], RENAME_NOREPLACE) < 0 && r == 0)
                        r = -errno;
        /* Only after every old key is advertised again. */
        if (r == 0 && (unlinkat(dfd, rot->sig, 0) < 0 || unlinkat(dfd, rot->exc, 0) < 0))
                r = -errno;
        (void) fsync(dfd);
        return r;
}

int tk_rotate_keys(const char *dir, struct tk_rotation *rot, struct tc_err *err) {
        _cleanup_closedir_ DIR *d = opendir(dir);
        char **old = NULL;
        size_t n_old = 0;
        int r;

        *rot = (struct tk_rotation) {};
        if (!d)
                return tc_fail(err, -errno, "cannot open key directory %s: %s", dir, strerror(errno));
        /* Remember what is advertised now; those are the keys to hide. */
        r = advertised_names(d, &old, &n_old);
        if (r < 0)
                return tc_fail(err, r, "out of memory");
        rot->hidden_from = calloc(n_old + 1, sizeof(char *));
        rot->hidden_to = calloc(n_old + 1, sizeof(char *));
        if (!rot->hidden_from || !rot->hidden_to) {
                free_names(old, n_old);
                tk_rotation_clear(rot);
                return tc_fail(err, -ENOMEM, "out of memory");
        }

        r = tk_keygen_pair(dir, NULL, NULL, &rot->sig, &rot->exc, err);
        if (r < 0) {
                free_names(old, n_old);
                tk_rotation_clear(rot);
                return r;
        }
        for (size_t i = 0; r == 0 && i < n_old; i++) {
                char hidden[NAME_MAX + 1];
                r = tk_key_hide(dirfd(d), old[i], hidden, sizeof(hidden));
                if (r == -ENOENT) {   /* gone meanwhile: nothing to hide */
                        r = 0;
                        continue;
                }
                if (r == 0) {
                        char *h = strdup(hidden);
                        if (!h) {
                                (void) renameat2(dirfd(d), hidden, dirfd(d), old[i], RENAME_NOREPLACE);
                                r = -ENOMEM;
                        } else {
                                rot->hidden_from[rot->n_hidden] = TAKE_PTR(old[i]);
                                rot->hidden_to[rot->n_hidden++] = h;
                                continue;
                        }
                }
                int u = undo_rotation(dirfd(d), rot);
                if (u == 0)
                        tc_fail(err, r, "cannot hide %s: %s; new keys removed again, nothing changed",
                                old[i], strerror(-r));
                else
                        tc_fail(err, r, "cannot hide %s: %s, and undoing failed (%s): new keys %s and %s "
                                "exist, %zu old key(s) hidden", old[i], strerror(-r), strerror(-u), rot->sig,
                                rot->exc, rot->n_hidden);
        }
        free_names(old, n_old);
        if (r == 0 && fsync(dirfd(d)) < 0)
                r = tc_fail(err, -errno, "cannot sync key directory %s: %s", dir, strerror(errno));
        if (r < 0)
                tk_rotation_clear(rot);
        return r;
}

int tk_rotate(const char *dir, struct tc_err *err) {
        struct tk_rotation rot;
        int r = tk_rotate_keys(dir, &rot, err);
        tk_rotation_clear(&rot);
        return r;
}
