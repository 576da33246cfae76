/* Taking over Tang's key directory: every key it serves, advertised and
 * rotated, copied into tetherd's without losing or changing one, Tang's
 * left as it was so that going back stays possible. */
#include "keyset.h"
#include "cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

void tk_migration_clear(struct tk_migration *m) {
        for (size_t i = 0; i < m->n_copied; i++)
                free(m->copied[i]);
        for (size_t i = 0; i < m->n_present; i++)
                free(m->present[i]);
        free(m->copied);
        free(m->present);
        *m = (struct tk_migration) {};
}

/* The source's skipped files: passed on, and a file that exists but cannot
 * be read remembered, since it may be a key clients are bound to. */
struct src_warn {
        tk_warn_fn warn;
        void *userdata;
        int dfd;
        char unreadable[NAME_MAX + 1];
};

static void src_warn(void *userdata, const char *file, const struct tc_err *why) {
        struct src_warn *w = userdata;
        _cleanup_close_ int fd = openat(w->dfd, file, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

        if (fd < 0 && (errno == EACCES || errno == EPERM) && !w->unreadable[0])
                snprintf(w->unreadable, sizeof(w->unreadable), "%s", file);
        if (w->warn)
                w->warn(w->userdata, file, why);
}

static const struct tk_key *find_key(const struct tk_keyset *ks, const char *file) {
        for (size_t i = 0; i < ks->n_keys; i++)
                if (strcmp(ks->keys[i].file, file) == 0)
                        return &ks->keys[i];
        return NULL;
}

static bool same_key(const struct tk_key *a, const struct tk_key *b) {
        if (a->hidden != b->hidden || a->role != b->role || !json_equal(a->jwk, b->jwk))
                return false;
        for (int h = 0; h < TK_HASH_COUNT; h++)
                if (strcmp(a->thp[h], b->thp[h]) != 0)
                        return false;
        return true;
}

/* migrate runs as root over a directory Tang's user may write: a key file
 * that is a symbolic link could make it copy any root-only file into
 * tetherd's directory (tangd follows links, but as its own user). Checked
 * after the load, against the file each key was read from: a link swapped
 * in before the load shows as the link itself, and one swapped in after it
 * as another inode. */
static int refuse_links(const char *src, int dfd, const struct tk_keyset *ks, struct tc_err *err) {
        for (size_t i = 0; i < ks->n_keys; i++) {
                const struct tk_key *k = &ks->keys[i];
                struct stat st;
                if (fstatat(dfd, k->file, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        return tc_fail(err, -errno, "%s/%s changed while it was read: run migrate again (nothing "
                                       "was copied)", src, k->file);
                if (S_ISLNK(st.st_mode))
                        return tc_fail(err, -ELOOP, "%s/%s is a symbolic link: migrate copies only regular files; "
                                       "if you trust what it points to, put that in its place (nothing was copied)",
                                       src, k->file);
                if (st.st_dev != k->id.dev || st.st_ino != k->id.ino)
                        return tc_fail(err, -EAGAIN, "%s/%s changed while it was read: run migrate again (nothing "
                                       "was copied)", src, k->file);
        }
        return 0;
}

/* A Tang directory holds signing and exchange keys only. */
static int refuse_other_keys(const char *src, const struct tk_keyset *ks, struct tc_err *err) {
        for (size_t i = 0; i < ks->n_keys; i++)
                if (ks->keys[i].role == TK_ROLE_OTHER)
                        return tc_fail(err, -EINVAL, "%s/%s is a JWK that neither signs nor derives keys: not a "
                                       "Tang key; remove it from %s or migrate by hand (nothing was copied)",
                                       src, ks->keys[i].file, src);
        return 0;
}

static int load_src(const char *src, struct src_warn *w, struct tk_keyset **ks, struct tc_err *err) {
        _cleanup_close_ int dfd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int r;

        if (dfd < 0 && errno == EACCES)
                return tc_fail(err, -EACCES, "cannot read %s: permission denied (Tang's key directory belongs to "
                               "Tang's user, mode 0750): run as root", src);
        if (dfd < 0 && errno == ENOENT)
                return tc_fail(err, -ENOENT, "%s does not exist", src);
        if (dfd < 0)
                return tc_fail(err, -errno, "cannot open %s: %s", src, strerror(errno));
        w->dfd = dfd;
        r = tk_keyset_load(src, src_warn, w, ks);
        if (r < 0)
                return tc_fail(err, r, "cannot read %s: %s", src, strerror(-r));
        if (w->unreadable[0])
                return tc_fail(err, -EACCES, "cannot read %s/%s: permission denied; clients may be bound to "
                               "it: run as root (nothing was copied)", src, w->unreadable);
        if ((r = refuse_links(src, dfd, *ks, err)) < 0 || (r = refuse_other_keys(src, *ks, err)) < 0)
                return r;
        if ((*ks)->n_keys == 0)
                return tc_fail(err, -ENOENT, "%s holds no key: nothing to migrate (Tang creates its first "
                               "keys when it first answers; until then no client can be bound to it)", src);
        return 0;
}

static int open_dst(const char *dst, uid_t uid, gid_t gid, struct tc_err *err) {
        int dfd = open(dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (dfd < 0 && errno == ENOENT) {
                if (mkdir(dst, 0750) < 0)
                        return tc_fail(err, -errno, "cannot create %s: %s", dst, strerror(errno));
                dfd = open(dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                /* umask may have taken bits off 0750; the server's user
                 * must be able to read the directory. */
                if (dfd >= 0 && (fchmod(dfd, 0750) < 0 ||
                                 (geteuid() == 0 && uid != (uid_t) -1 && fchown(dfd, uid, gid) < 0))) {
                        int r = -errno;
                        close(dfd);
                        return tc_fail(err, r, "cannot set the owner and mode of %s: %s", dst, strerror(-r));
                }
        }
        if (dfd < 0)
                return tc_fail(err, -errno, "cannot open %s: %s", dst, strerror(errno));
        return dfd;
}

/* Refuses, before anything is written, a destination that would serve
 * other keys than the source: a different key under one of the names, or
 * keys of its own. */
static int check_dst(const char *src, const struct tk_keyset *from, const char *dst, int dfd,
                     const struct tk_keyset *to, struct tc_err *err) {
        for (size_t i = 0; i < from->n_keys; i++) {
                const struct tk_key *k = &from->keys[i];
                const struct tk_key *there = find_key(to, k->file);
                struct stat st;

                if (there && !same_key(k, there))
                        return tc_fail(err, -EEXIST, "%s/%s holds a different key than %s/%s: refusing to "
                                       "overwrite it (nothing was copied)", dst, k->file, src, k->file);
                if (!there && fstatat(dfd, k->file, &st, AT_SYMLINK_NOFOLLOW) == 0)
                        return tc_fail(err, -EEXIST, "%s/%s exists and holds no key tetherd can read: refusing "
                                       "to overwrite it (nothing was copied)", dst, k->file);
        }
        for (size_t i = 0; i < to->n_keys; i++)
                if (!find_key(from, to->keys[i].file))
                        return tc_fail(err, -EEXIST, "%s already holds key %s, which %s does not have: tetherd "
                                       "would serve it too. It was created there by tetherd (first start on "
                                       "an empty directory) or by hand; if no client is bound to it, remove "
                                       "it, or migrate into an empty directory (nothing was copied)",
                                       dst, to->keys[i].file, src);
        return 0;
}

/* Who will own the keys written to dfd, as tk_key_file_write gives them:
 * uid:gid as root (if given), else the directory's owner as root, else
 * whoever runs this. */
static void key_owner(int dfd, uid_t uid, gid_t gid, uid_t *ou, gid_t *og) {
        struct stat st;
        if (geteuid() != 0) {
                *ou = geteuid();
                *og = getegid();
        } else if (uid != (uid_t) -1) {
                *ou = uid;
                *og = gid;
        } else if (fstat(dfd, &st) == 0) {
                *ou = st.st_uid;
                *og = st.st_gid;
        } else
                *ou = *og = 0;
}

/* Whether uid:gid has the access bits want (4: read, 5: read and search) on
 * st by its mode alone. Its supplementary groups are not looked at: a key
 * directory readable only through one is refused (a false refusal, named,
 * rather than a server that cannot see its keys). */
static bool owner_may(const struct stat *st, uid_t uid, gid_t gid, mode_t want) {
        if (uid == 0)
                return true;
        mode_t bits = st->st_uid == uid ? st->st_mode >> 6 : st->st_gid == gid ? st->st_mode >> 3 : st->st_mode;
        return (bits & want) == want;
}

/* tetherd, running as the keys' owner, must read dst and every key file in
 * it: the ones already there are kept as they are, so they are checked. */
static int check_readable(const char *dst, int dfd, const struct tk_keyset *to, uid_t uid, gid_t gid,
                          struct tc_err *err) {
        uid_t ou;
        gid_t og;
        struct stat st;
        key_owner(dfd, uid, gid, &ou, &og);
        if (fstat(dfd, &st) < 0)
                return tc_fail(err, -errno, "cannot stat %s: %s", dst, strerror(errno));
        if (!owner_may(&st, ou, og, 05))
                return tc_fail(err, -EACCES, "%s is owned by %u:%u, mode %04o: uid %u (gid %u), who will own the keys "
                               "and run tetherd, could not read it: chown %u:%u %s && chmod 0750 %s, then run "
                               "migrate again (nothing was copied)",
                               dst, (unsigned) st.st_uid, (unsigned) st.st_gid, (unsigned) (st.st_mode & 07777),
                               (unsigned) ou, (unsigned) og, (unsigned) ou, (unsigned) og, dst, dst);
        for (size_t i = 0; i < to->n_keys; i++) {
                const char *f = to->keys[i].file;
                if (fstatat(dfd, f, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        return tc_fail(err, -errno, "cannot stat %s/%s: %s", dst, f, strerror(errno));
                if (!owner_may(&st, ou, og, 04))
                        return tc_fail(err, -EACCES, "%s/%s is owned by %u:%u, mode %04o: uid %u (gid %u), who will "
                                       "own the keys and run tetherd, could not read it: chown %u:%u %s/%s && "
                                       "chmod 0440 %s/%s, then run migrate again (nothing was copied)",
                                       dst, f, (unsigned) st.st_uid, (unsigned) st.st_gid,
                                       (unsigned) (st.st_mode & 07777), (unsigned) ou, (unsigned) og, (unsigned) ou,
                                       (unsigned) og, dst, f, dst, f);
        }
        return 0;
}

/* tk_key_file_write's temporary name: ".tether-new-" 16 hex digits ".tmp". */
static bool is_stale_tmp(const char *name) {
        static const char prefix[] = ".tether-new-", suffix[] = ".tmp";
        const size_t p = sizeof(prefix) - 1, hex = 16;
        if (strlen(name) != p + hex + sizeof(suffix) - 1 || strncmp(name, prefix, p) != 0 ||
            strcmp(name + p + hex, suffix) != 0)
                return false;
        for (size_t i = p; i < p + hex; i++)
                if (!strchr("0123456789abcdef", name[i]))
                        return false;
        return true;
}

/* A killed run leaves its temporary file, a private key at mode 0440:
 * removed, if it is a regular file (a link or anything else is left). */
static int remove_stale_tmp(const char *dst, int dfd, size_t *n, struct tc_err *err) {
        int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
        struct dirent *de;
        int r = 0;
        if (!d) {
                r = tc_fail(err, -errno, "cannot list %s: %s", dst, strerror(errno));
                if (fd >= 0)
                        close(fd);
                return r;
        }
        while ((errno = 0, de = readdir(d))) {
                struct stat st;
                if (!is_stale_tmp(de->d_name) || fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
                    !S_ISREG(st.st_mode))
                        continue;
                if (unlinkat(dfd, de->d_name, 0) < 0 && errno != ENOENT) {
                        r = tc_fail(err, -errno, "cannot remove %s/%s, left by an interrupted run: %s", dst,
                                    de->d_name, strerror(errno));
                        break;
                }
                (*n)++;
        }
        closedir(d);
        return r;
}

static int push_name(char ***names, size_t *n, const char *name) {
        char **nn = realloc(*names, (*n + 1) * sizeof(**names));
        if (!nn)
                return -ENOMEM;
        *names = nn;
        if (!(nn[*n] = strdup(name)))
                return -ENOMEM;
        (*n)++;
        return 0;
}

static void undo_copies(int dfd, const struct tk_migration *m) {
        for (size_t i = 0; i < m->n_copied; i++)
                (void) unlinkat(dfd, m->copied[i], 0);
        (void) fsync(dfd);
}

/* dst, read back, serves exactly src's keys under the same names. */
static int verify(const char *dst, const struct tk_keyset *from, struct tc_err *err) {
        _cleanup_(tk_keyset_freep) struct tk_keyset *after = NULL;
        int r = tk_keyset_load(dst, NULL, NULL, &after);

        if (r < 0)
                return tc_fail(err, r, "cannot read %s back: %s", dst, strerror(-r));
        for (size_t i = 0; i < from->n_keys; i++) {
                const struct tk_key *there = find_key(after, from->keys[i].file);
                if (!there || !same_key(&from->keys[i], there))
                        return tc_fail(err, -EIO, "%s/%s does not read back as the key copied to it",
                                       dst, from->keys[i].file);
        }
        if (after->n_keys != from->n_keys)
                return tc_fail(err, -EIO, "%s holds %zu keys after copying %zu", dst, after->n_keys, from->n_keys);
        return 0;
}

int tk_migrate(const char *src, const char *dst, uid_t uid, gid_t gid, tk_warn_fn warn, void *userdata,
               struct tk_migration *m, struct tc_err *err) {
        _cleanup_(tk_keyset_freep) struct tk_keyset *from = NULL, *to = NULL;
        struct src_warn w = { .warn = warn, .userdata = userdata, .dfd = -1 };
        struct stat s1, s2;
        int r;

        *m = (struct tk_migration) {};
        if (stat(src, &s1) == 0 && stat(dst, &s2) == 0 && s1.st_dev == s2.st_dev && s1.st_ino == s2.st_ino)
                return tc_fail(err, -EINVAL, "%s and %s are the same directory", src, dst);
        r = load_src(src, &w, &from, err);
        if (r < 0)
                return r;

        _cleanup_close_ int dfd = open_dst(dst, uid, gid, err);
        if (dfd < 0)
                return dfd;
        /* The destination's own invalid files do not matter: the names
         * written are checked one by one. */
        r = tk_keyset_load(dst, NULL, NULL, &to);
        if (r < 0)
                return tc_fail(err, r, "cannot read %s: %s", dst, strerror(-r));
        r = check_dst(src, from, dst, dfd, to, err);
        if (r < 0 || (r = check_readable(dst, dfd, to, uid, gid, err)) < 0 ||
            (r = remove_stale_tmp(dst, dfd, &m->n_stale, err)) < 0)
                return r;

        for (size_t i = 0; i < from->n_keys; i++) {
                const struct tk_key *k = &from->keys[i];
                bool present = find_key(to, k->file) != NULL;

                if (!present) {
                        r = tk_key_file_write(dfd, k->file, k->jwk, uid, gid, err);
                        if (r < 0) {
                                tc_wrap(err, r, "%s", dst);
                                goto undo;
                        }
                }
                r = push_name(present ? &m->present : &m->copied, present ? &m->n_present : &m->n_copied, k->file);
                if (r < 0) {
                        if (!present)
                                (void) unlinkat(dfd, k->file, 0);
                        tc_fail(err, r, "out of memory");
                        goto undo;
                }
                if (k->hidden)
                        m->n_rotated++;
                else
                        m->n_advertised++;
        }
        if (fsync(dfd) < 0) {
                r = tc_fail(err, -errno, "cannot sync %s: %s", dst, strerror(errno));
                goto undo;
        }
        r = verify(dst, from, err);
        if (r < 0)
                goto undo;
        return 0;
undo:
        undo_copies(dfd, m);
        tk_migration_clear(m);
        return r;
}
