#include "keystore.h"
#include "hosts.h"
#include "cleanup.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <sys/file.h>
#include <dirent.h>
#include <stdio.h>
#include <libgen.h>
#include <sys/inotify.h>
#include <sys/stat.h>

/* The parent directory, for the key directory's name coming back. */
#define PARENT_MASK (IN_CREATE | IN_MOVED_TO | IN_ONLYDIR)
#define WATCH_MASK (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_CLOSE_WRITE | \
                    IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

/* A directory that never stops changing still gets loaded, eventually. */
#define LOAD_ATTEMPTS_MAX 20
/* While creating keys fails (a full disk), requests retry it at most this
 * often, instead of each one writing to the disk and to the log. */
#define KEYGEN_RETRY_MS 1000
/* rm -r deletes the key files before the directory: a directory that
 * disappears this soon after its keys started to is taken for removed whole,
 * and the keys it held before are served again. */
#define REMOVAL_WINDOW_MS 2000
/* No pair is created while keys keep disappearing, but for this long at most
 * from the first of a run of deletions: something that adds and deletes a key
 * file over and over (a config tool gone wrong) must not keep the directory
 * without an advertised key for ever. rm -r is long done by then. */
#define REMOVAL_HOLD_MAX_MS (2 * REMOVAL_WINDOW_MS)

/* Lines logged about single key files: each is logged when its fault
 * appears, not again at every reload while it stands. */
struct warnings {
        char **lines;
        size_t n;
};

struct keystore {
        char *dir;
        bool keygen;
        keystore_log_fn log;
        char *name;                  /* the key directory's name in its parent */
        int inotify_fd;
        int parent_watch;            /* -1 when the parent cannot be watched */
        /* The rest is read and written with reload_lock held, but for the
         * atomics: requests compare the directory at the path with dir_dev
         * and dir_ino without the lock. */
        int watch;                   /* -1 when the directory is not watched */
        dev_t dir_dev;               /* atomic; of the directory loaded, 0 when it is gone */
        ino_t dir_ino;               /* atomic */
        pthread_mutex_t reload_lock; /* one reload at a time */
        int reloading;               /* set while a reload is under way */
        int keys_wanted;             /* no advertised key; the next request generates a pair */
        int64_t keygen_retry_ms;     /* atomic; after a failure, no new attempt before this */
        int64_t keygen_held_ms;      /* atomic; while keys are being removed, none created before this */
        int keygen_error;            /* errno of the last failure to create keys, 0 after a success */
        unsigned n_unreadable;       /* key files of the load under way that exist but cannot be read */
        char unreadable[160];        /* the first of them, for the log */
        char **unreadable_kids;      /* those not served from memory, for /rec's 503 */
        size_t n_unreadable_kids;
        size_t n_unreadable_advertised;  /* of them, not hidden: the directory is not empty */
        struct warnings warned;      /* per-file faults logged and standing at the last load */
        struct warnings warning;     /* those of the load under way */
        char health_logged[400];     /* the /health state last logged */
        struct served_health health;
        pthread_mutex_t current_lock;
        struct served *current;      /* replaced only with reload_lock held */
        struct served *before_removal;  /* what was served before keys started to disappear */
        int64_t removal_ms;          /* when they did */
        int64_t keys_gone_ms;        /* when keys of this directory last went missing, 0: never */
        int64_t removals_began_ms;   /* the first loss of the run keys_gone_ms ends */
        bool other_dir;              /* the next set published is of a new directory */
        uint64_t loads;              /* atomic: loads of the directory, for the metrics */
        uint64_t load_failures;      /* atomic: of them, those that kept the keys loaded before */
        int *host_watches;           /* KEYDIR/hosts and each host directory */
        size_t hosts_unwatched;      /* host directories inotify refused to watch: re-read every second */
        int64_t hosts_polled_ms;     /* the last such re-read */
        size_t n_host_watches;
        struct tk_hosts *hosts_loaded;  /* the hosts of the last load, for the set it publishes */
};

/* Every line of the keystore goes through here: key file names and the
 * directory are anybody's bytes (a file named "a\n...\e[31m.jwk"), and
 * must not forge log lines or reach a terminal as escape sequences. */
static void klog(const struct keystore *ks, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void klog(const struct keystore *ks, const char *fmt, ...) {
        char raw[1024], clean[sizeof(raw)];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(raw, sizeof(raw), fmt, ap);
        va_end(ap);
        ks->log("%s", log_sanitize(clean, sizeof(clean), raw, true));
}

static void warnings_clear(struct warnings *w) {
        for (size_t i = 0; i < w->n; i++)
                free(w->lines[i]);
        free(w->lines);
        *w = (struct warnings) {};
}

static bool warnings_has(const struct warnings *w, const char *line) {
        for (size_t i = 0; i < w->n; i++)
                if (strcmp(w->lines[i], line) == 0)
                        return true;
        return false;
}

/* Logs a fault of one key file unless the last load logged it already (it
 * still stands); noted either way for the next load to compare with. */
static void warn_once(struct keystore *ks, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn_once(struct keystore *ks, const char *fmt, ...) {
        char line[1024];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        if (!warnings_has(&ks->warned, line))
                klog(ks, "%s", line);
        if (warnings_has(&ks->warning, line))
                return;
        char **lines = realloc(ks->warning.lines, (ks->warning.n + 1) * sizeof(*lines));
        if (!lines)
                return;
        ks->warning.lines = lines;
        if ((lines[ks->warning.n] = strdup(line)))
                ks->warning.n++;
}

/* A load went through: the faults it found are the ones standing. A fault
 * gone from it is logged again if it comes back. */
static void warnings_settle(struct keystore *ks) {
        warnings_clear(&ks->warned);
        ks->warned = ks->warning;
        ks->warning = (struct warnings) {};
}

/* The errno that keeps a key file from being opened when the file still
 * counts as a key the server has: a regular file (through symbolic links)
 * whose mode or owner forbids reading it, or an I/O error. 0 when it opens,
 * and when it is no key at all: gone, a dangling symbolic link, a loop of
 * them, a socket or device. A link into a directory the server may not
 * search is counted as present: it may well be a key. *open_err: open's
 * errno, for the log, 0 when it opened. */
static int file_unreadable(const struct keystore *ks, const char *file, int *open_err) {
        _cleanup_free_ char *path = NULL;
        struct stat st;

        *open_err = 0;
        if (asprintf(&path, "%s/%s", ks->dir, file) < 0)
                return 0;
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd >= 0)
                return 0;
        int err = *open_err = errno;
        if (stat(path, &st) < 0)
                return errno == EACCES || errno == EPERM ? err : 0;
        return S_ISREG(st.st_mode) ? err : 0;
}

/* The key of set loaded from file, or NULL. */
static const struct tk_key *find_file(const struct tk_keyset *set, const char *file) {
        for (size_t i = 0; i < set->n_keys; i++)
                if (strcmp(set->keys[i].file, file) == 0)
                        return &set->keys[i];
        return NULL;
}

static void note_unreadable(struct keystore *ks, const char *file, int err, const char *outcome) {
        if (ks->n_unreadable++ == 0)
                snprintf(ks->unreadable, sizeof(ks->unreadable), "key file %s/%s cannot be read (%s); %s", ks->dir,
                         file, strerror(err), outcome);
}

static void forget_unreadable_kids(struct keystore *ks) {
        for (size_t i = 0; i < ks->n_unreadable_kids; i++)
                free(ks->unreadable_kids[i]);
        free(ks->unreadable_kids);
        ks->unreadable_kids = NULL;
        ks->n_unreadable_kids = ks->n_unreadable_advertised = 0;
}

/* A key file that exists is a key the server has, readable or not: it
 * counts as present (no key is created in its place), and /rec names it. */
static void note_unreadable_kid(struct keystore *ks, const char *file) {
        size_t len = strlen(file) - strlen(".jwk");
        const char *kid = file[0] == '.' ? file + 1 : file;
        char **kids = realloc(ks->unreadable_kids, (ks->n_unreadable_kids + 1) * sizeof(*kids));
        if (!kids)
                return;
        ks->unreadable_kids = kids;
        kids[ks->n_unreadable_kids] = strndup(kid, len - (size_t) (kid - file));
        if (kids[ks->n_unreadable_kids])
                ks->n_unreadable_kids++;
        if (file[0] != '.')
                ks->n_unreadable_advertised++;
}

static void warn_file(void *userdata, const char *file, const struct tc_err *why) {
        struct keystore *ks = userdata;
        int open_err, err = file_unreadable(ks, file, &open_err);

        if (err == 0 && open_err != 0)
                warn_once(ks, "key directory %s: %s %s (%s), skipped: not a key file", ks->dir, file, why->msg,
                          strerror(open_err));
        else if (err == 0)
                warn_once(ks, "key directory %s: %s %s, skipped", ks->dir, file, why->msg);
        else if (!find_file(ks->current->ks, file)) {   /* reload_lock held: current stays */
                warn_once(ks, "key directory %s: %s cannot be read: %s; skipped, but counted as present (no key is "
                          "created in its place; /rec for it answers 503): chown or chmod it so that uid %u can "
                          "read it", ks->dir, file, strerror(err), (unsigned) geteuid());
                note_unreadable(ks, file, err, "skipped");
                note_unreadable_kid(ks, file);
        }
        /* else: keep_unreadable_keys() keeps it and says so. */
}

/* A key file that becomes unreadable is an accident (a chmod, a restore
 * with the wrong owner), not a removal: the key it held stays in service,
 * so that clients bound to it still unlock while someone fixes it. */
static int keep_unreadable_keys(struct keystore *ks, struct tk_keyset *set) {
        const struct tk_keyset *old = ks->current->ks;

        for (size_t i = 0; i < old->n_keys; i++) {
                const struct tk_key *k = &old->keys[i];
                struct tc_err why = {};
                int open_err, err = find_file(set, k->file) ? 0 : file_unreadable(ks, k->file, &open_err);
                if (err == 0)
                        continue;
                json_t *copy = json_deep_copy(k->jwk);
                int r = copy ? tk_keyset_add(set, k->file, copy, &why) : -ENOMEM;
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        warn_once(ks, "key directory %s: %s cannot be read: %s; the key loaded from it %s: dropped",
                                  ks->dir, k->file, strerror(err), why.msg);
                        continue;
                }
                warn_once(ks, "key directory %s: %s cannot be read: %s; serving the key loaded from it before",
                          ks->dir, k->file, strerror(err));
                note_unreadable(ks, k->file, err, "serving the key loaded from it before");
        }
        return 0;
}

/* Whether some key of old (by thumbprint, so that a rotation, a rename to
 * .X.jwk, is not a loss) is missing from new. */
static bool keys_lost(const struct served *old, const struct served *new) {
        for (size_t i = 0; i < old->ks->n_keys; i++) {
                const char *thp = old->ks->keys[i].thp[TK_HASH_S256];
                if (!served_find(new, thp, strlen(thp)))
                        return true;
        }
        return false;
}

/* Keys went missing at now: part of the run of deletions under way if the
 * last loss was within the window, else the first of a new one. */
static void note_keys_gone(struct keystore *ks, int64_t now) {
        if (!ks->keys_gone_ms || now - ks->keys_gone_ms > REMOVAL_WINDOW_MS)
                ks->removals_began_ms = now;
        ks->keys_gone_ms = now;
}

/* The first instant at which a pair may be created after the run of
 * deletions: the window after the last one, cut at REMOVAL_HOLD_MAX_MS
 * from the first. 0 when no key went missing. */
static int64_t keygen_hold_end(const struct keystore *ks) {
        if (!ks->keys_gone_ms)
                return 0;
        int64_t end = ks->keys_gone_ms + REMOVAL_WINDOW_MS, max = ks->removals_began_ms + REMOVAL_HOLD_MAX_MS;
        return (end < max ? end : max) + 1;
}

static void forget_before_removal(struct keystore *ks) {
        served_unref(ks->before_removal);
        ks->before_removal = NULL;
}

/* Remembers what was served before the first of a run of key removals. */
static void note_removals(struct keystore *ks, const struct served *next) {
        int64_t now = tc_now_ms();
        if (ks->other_dir) {
                ks->other_dir = false;
                forget_before_removal(ks);
                ks->keys_gone_ms = ks->removals_began_ms = 0;
                /* A new directory: nothing of it is being removed, and
                 * creating keys failed (if it did) in the old one. */
                __atomic_store_n(&ks->keygen_held_ms, 0, __ATOMIC_RELEASE);
                __atomic_store_n(&ks->keygen_retry_ms, 0, __ATOMIC_RELEASE);
                return;
        }
        if (ks->before_removal && now - ks->removal_ms > REMOVAL_WINDOW_MS)
                forget_before_removal(ks);
        if (keys_lost(ks->current, next))
                note_keys_gone(ks, now);
        if (!ks->before_removal && keys_lost(ks->current, next)) {
                ks->before_removal = served_ref(ks->current);
                ks->removal_ms = now;
        }
}

static void publish(struct keystore *ks, struct served *s) {
        note_removals(ks, s);
        pthread_mutex_lock(&ks->current_lock);
        struct served *old = ks->current;
        ks->current = s;
        pthread_mutex_unlock(&ks->current_lock);
        served_unref(old);
}

/* The directory went away just after its key files did (rm -r): the
 * deletions were part of removing it, not decisions about single keys. */
static void restore_before_removal(struct keystore *ks) {
        if (!ks->before_removal || tc_now_ms() - ks->removal_ms > REMOVAL_WINDOW_MS)
                return;
        const struct tk_keyset *set = ks->before_removal->ks;
        klog(ks, "key directory %s: removed together with its key files; serving the %zu signing, %zu exchange, "
             "%zu rotated key(s) loaded before",
             ks->dir, tk_keyset_count(set, TK_ROLE_SIGNING, false), tk_keyset_count(set, TK_ROLE_EXCHANGE, false),
             tk_keyset_count(set, TK_ROLE_SIGNING, true) + tk_keyset_count(set, TK_ROLE_EXCHANGE, true));
        struct served *s = TAKE_PTR(ks->before_removal);
        __atomic_store_n(&ks->keys_wanted, false, __ATOMIC_RELEASE);
        publish(ks, s);
}

static void warn_host(void *userdata, const char *file, const struct tc_err *why) {
        struct keystore *ks = userdata;
        warn_once(ks, "key directory %s: %s %s, skipped", ks->dir, file, why->msg);
}

static bool watch_listed(const int *wds, size_t n, int wd) {
        for (size_t i = 0; i < n; i++)
                if (wds[i] == wd)
                        return true;
        return false;
}

/* Watches KEYDIR/hosts and every host directory in it, before they are
 * read: a change after this is an event (and another load), one before is
 * in what the load reads. Watches of directories no longer there go. Called
 * with reload_lock held. */
static void watch_hosts(struct keystore *ks) {
        _cleanup_free_ char *path = NULL;
        int *wds = NULL;
        size_t n = 0, cap = 0;

        if (asprintf(&path, "%s/" TK_HOSTS_SUBDIR, ks->dir) < 0)
                return;
        int wd = inotify_add_watch(ks->inotify_fd, path, WATCH_MASK | IN_DONT_FOLLOW);
        _cleanup_closedir_ DIR *d = wd >= 0 ? opendir(path) : NULL;
        struct dirent *de;
        size_t unwatched = wd < 0 && errno != ENOENT && errno != ENOTDIR;
        int watch_errno = wd < 0 ? errno : 0;
        if (wd >= 0 && (wds = malloc(sizeof(*wds) * (cap = 16))))
                wds[n++] = wd;
        while (wds && d && (de = readdir(d))) {
                _cleanup_free_ char *host = NULL;
                if (!tk_host_name_valid(de->d_name) || asprintf(&host, "%s/%s", path, de->d_name) < 0)
                        continue;
                if ((wd = inotify_add_watch(ks->inotify_fd, host, WATCH_MASK | IN_DONT_FOLLOW)) < 0) {
                        /* A state change there would go unseen: polled instead. */
                        if (errno != ENOENT && errno != ENOTDIR) {
                                unwatched++;
                                watch_errno = errno;
                        }
                        continue;
                }
                if (n == cap) {
                        int *nw = realloc(wds, sizeof(*wds) * (cap *= 2));
                        if (!nw)
                                break;
                        wds = nw;
                }
                wds[n++] = wd;
        }
        for (size_t i = 0; i < ks->n_host_watches; i++)
                if (!watch_listed(wds, n, ks->host_watches[i]) && ks->host_watches[i] != ks->watch &&
                    ks->host_watches[i] != ks->parent_watch)
                        inotify_rm_watch(ks->inotify_fd, ks->host_watches[i]);
        free(ks->host_watches);
        ks->host_watches = wds;
        ks->n_host_watches = wds ? n : 0;
        if (unwatched && !ks->hosts_unwatched)
                klog(ks, "key directory %s: cannot watch %zu host director%s (%s%s): their states are read again "
                         "every second instead of at once", ks->dir, unwatched, unwatched == 1 ? "y" : "ies",
                     strerror(watch_errno),
                     watch_errno == ENOSPC ? "; raise fs.inotify.max_user_watches" : "");
        else if (!unwatched && ks->hosts_unwatched)
                klog(ks, "key directory %s: every host directory is watched again", ks->dir);
        __atomic_store_n(&ks->hosts_unwatched, unwatched, __ATOMIC_RELEASE);
}

/* The hosts of KEYDIR/hosts, their unchanged keys taken over from the set
 * being served: a reload of 500 hosts costs stats, not 500 key checks. A
 * hosts directory that cannot be read serves no host (404), never the
 * states read before: a revocation must not be missed. */
static void load_hosts(struct keystore *ks) {
        struct tk_hosts *hosts = NULL;

        watch_hosts(ks);
        tk_hosts_free(TAKE_PTR(ks->hosts_loaded));
        int r = tk_hosts_load(ks->dir, ks->current->hosts, warn_host, ks, &hosts);
        if (r < 0) {
                warn_once(ks, "key directory %s: cannot read %s/: %s; serving no host until it can be read", ks->dir,
                          TK_HOSTS_SUBDIR, strerror(-r));
                return;
        }
        ks->hosts_loaded = hosts;
}

static int load(struct keystore *ks, struct tk_keyset **ret) {
        struct tk_keyset *set = NULL;

        ks->n_unreadable = 0;
        forget_unreadable_kids(ks);
        warnings_clear(&ks->warning);
        /* Unchanged files are taken over from the keys being served (current
         * changes only under reload_lock, which we hold): a reload costs a
         * stat per key, so a directory that changes every 100 ms still gets
         * a load done between two changes (see load_consistent). */
        int r = tk_keyset_load_reusing(ks->dir, ks->current->ks, warn_file, ks, &set);
        /* Logged when the fault changes, not on every retry of a request. */
        if (r == -ENOENT) {
                /* Not on disk any more: used for /rec, never advertised, so
                 * that no client binds to keys a restart loses. Set before the
                 * keys from before the removal are published again. */
                __atomic_store_n(&ks->health.adv_withheld, true, __ATOMIC_RELEASE);
                __atomic_store_n(&ks->keys_wanted, false, __ATOMIC_RELEASE);
                if (served_health_set(&ks->health, SERVED_FAULT_DIRECTORY,
                                      "key directory %s is gone; /rec uses the keys loaded before, /adv answers 500",
                                      ks->dir))
                        klog(ks, "key directory %s: gone; the keys already loaded are used for /rec, not advertised",
                             ks->dir);
                restore_before_removal(ks);
                return r;
        }
        if (r < 0) {
                if (served_health_set(&ks->health, SERVED_FAULT_DIRECTORY,
                                      "key directory %s cannot be read (%s); serving the keys loaded before", ks->dir,
                                      strerror(-r)))
                        klog(ks, "key directory %s: cannot read: %s; keeping the keys already loaded", ks->dir,
                             strerror(-r));
                return r;
        }
        r = keep_unreadable_keys(ks, set);
        if (r < 0) {
                tk_keyset_free(set);
                klog(ks, "key directory %s: out of memory while loading; keeping the keys already loaded", ks->dir);
                return r;
        }
        load_hosts(ks);
        warnings_settle(ks);
        *ret = set;
        return 0;
}

/* After a load that went through: what it found out is the state now. */
static void loaded(struct keystore *ks) {
        served_health_set(&ks->health, SERVED_FAULT_DIRECTORY, NULL);
        if (ks->n_unreadable == 0)
                served_health_set(&ks->health, SERVED_FAULT_KEY_FILES, NULL);
        else if (ks->n_unreadable == 1)
                served_health_set(&ks->health, SERVED_FAULT_KEY_FILES, "%s", ks->unreadable);
        else
                served_health_set(&ks->health, SERVED_FAULT_KEY_FILES, "%s (and %u more)", ks->unreadable,
                                  ks->n_unreadable - 1);
}

/* Whether the directory at the path is not the one watched and loaded: it
 * was removed, or replaced (rm -rf; mkdir). A stat per request: that is the
 * check that makes "never advertise a key that is not on disk" hold even
 * before inotify's events are read. */
static bool dir_moved(struct keystore *ks) {
        struct stat st;
        dev_t dev = 0;
        ino_t ino = 0;
        if (stat(ks->dir, &st) == 0 && S_ISDIR(st.st_mode))
                dev = st.st_dev, ino = st.st_ino;
        return dev != __atomic_load_n(&ks->dir_dev, __ATOMIC_ACQUIRE) ||
               ino != __atomic_load_n(&ks->dir_ino, __ATOMIC_ACQUIRE);
}

/* Called with reload_lock held: watches the directory now at the path (if
 * any) and remembers which one it is. */
static void watch_dir(struct keystore *ks) {
        struct stat st;

        if (ks->watch >= 0)
                inotify_rm_watch(ks->inotify_fd, ks->watch);
        ks->watch = inotify_add_watch(ks->inotify_fd, ks->dir, WATCH_MASK);
        bool there = ks->watch >= 0 && stat(ks->dir, &st) == 0 && S_ISDIR(st.st_mode);
        __atomic_store_n(&ks->dir_dev, there ? st.st_dev : 0, __ATOMIC_RELEASE);
        __atomic_store_n(&ks->dir_ino, there ? st.st_ino : 0, __ATOMIC_RELEASE);
}

/* Empties the inotify queue; returns whether anything in it concerns the
 * key directory. Called with reload_lock held. */
static bool drain(struct keystore *ks) {
        char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
        bool any = false, lost_watch = false;
        ssize_t n;

        while ((n = read(ks->inotify_fd, buf, sizeof(buf))) > 0) {
                for (char *p = buf; p < buf + n;) {
                        struct inotify_event *ev = (struct inotify_event *) p;
                        if (ev->wd == ks->watch) {
                                any = true;
                                if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF))
                                        lost_watch = true;
                        } else if (ev->mask & IN_Q_OVERFLOW) {
                                any = true;   /* events were lost: whatever changed, load it */
                        } else if (ev->wd == ks->parent_watch) {
                                if (ev->len > 0 && strcmp(ev->name, ks->name) == 0)
                                        any = lost_watch = true;
                        } else
                                any = true;   /* KEYDIR/hosts or a host directory */
                        p += sizeof(*ev) + ev->len;
                }
        }
        /* The same inode number may come back at once (rm -rf; mkdir):
         * only the events tell that apart, not dir_moved(). */
        if (lost_watch || dir_moved(ks)) {
                any = true;
                bool was_there = __atomic_load_n(&ks->dir_ino, __ATOMIC_ACQUIRE) != 0;
                watch_dir(ks);
                bool there = __atomic_load_n(&ks->dir_ino, __ATOMIC_ACQUIRE) != 0;
                if (was_there)
                        klog(ks, "key directory %s: removed or replaced", ks->dir);
                if (there)
                        klog(ks, "key directory %s: watching %s", ks->dir, was_there ? "the new one" : "again");
                /* The next set published comes from another directory: no
                 * key of the old one is lost by a deletion in this one. */
                ks->other_dir = there;
        }
        return any;
}

static bool events_queued(struct keystore *ks) {
        struct pollfd p = { .fd = ks->inotify_fd, .events = POLLIN };
        return poll(&p, 1, 0) > 0;
}

/* readdir() is not a snapshot: a rename during it can hide both the old and
 * the new name. A load during which the directory changed is thrown away and
 * done again, so that what gets published is a state the directory was in. */
static int load_consistent(struct keystore *ks, struct tk_keyset **ret) {
        for (unsigned attempt = 1;; attempt++) {
                struct tk_keyset *set = NULL;
                int r = load(ks, &set);
                if (r < 0)
                        return r;
                if (!events_queued(ks) || attempt == LOAD_ATTEMPTS_MAX) {
                        *ret = set;
                        return 0;
                }
                tk_keyset_free(set);
                (void) drain(ks);
        }
}

/* Creating keys failed: requests retry no sooner than KEYGEN_RETRY_MS, and
 * it is logged once per cause (errno: the messages name random files),
 * however many retries fail the same way. */
static void keygen_failed(struct keystore *ks, int r, const struct tc_err *why) {
        __atomic_store_n(&ks->keygen_retry_ms, tc_now_ms() + KEYGEN_RETRY_MS, __ATOMIC_RELEASE);
        served_health_set(&ks->health, SERVED_FAULT_KEYGEN, "no advertised key, and creating one in %s failed (%s)",
                          ks->dir, why->msg);
        if (r != ks->keygen_error)
                klog(ks, "key directory %s: no advertised key and cannot create one: %s", ks->dir, why->msg);
        ks->keygen_error = r;
}

/* Whether a request should reload to create keys. A replaced directory
 * is reloaded anyway (its events), whatever a hold of the old one says. */
static bool keygen_due(struct keystore *ks) {
        int64_t now = tc_now_ms();
        return __atomic_load_n(&ks->keys_wanted, __ATOMIC_ACQUIRE) &&
               now >= __atomic_load_n(&ks->keygen_retry_ms, __ATOMIC_ACQUIRE) &&
               now >= __atomic_load_n(&ks->keygen_held_ms, __ATOMIC_ACQUIRE);
}

/* Tang's behaviour: a directory with no advertised key gets a fresh pair.
 * Per-connection (inetd) servers may all find the same empty directory at
 * once; a lock on it makes the first one generate and the others see it.
 * *set is replaced by the directory as it is afterwards. Returns < 0 only
 * when it cannot be loaded again; a failure to create keys is noted
 * (keygen_failed) and returns 0. */
static int generate_first_pair(struct keystore *ks, struct tk_keyset **set) {
        _cleanup_free_ char *sig = NULL, *exc = NULL;
        struct tc_err err = {};
        _cleanup_close_ int dirfd = open(ks->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int r;

        if (dirfd < 0 || flock(dirfd, LOCK_EX) < 0) {
                r = tc_fail(&err, -errno, "cannot lock the directory: %s", strerror(errno));
                keygen_failed(ks, r, &err);
                return 0;
        }
        tk_keyset_free(*set);
        *set = NULL;
        r = load_consistent(ks, set);
        if (r < 0)
                return r;
        if ((*set)->n_advertised_files > 0 || ks->n_unreadable_advertised > 0)
                return 0;
        /* On failure tk_keygen_pair leaves no file behind, not even half of a pair. */
        r = tk_keygen_pair(ks->dir, NULL, NULL, &sig, &exc, &err);
        if (r < 0) {
                keygen_failed(ks, r, &err);
                return 0;
        }
        __atomic_store_n(&ks->keygen_retry_ms, 0, __ATOMIC_RELEASE);
        ks->keygen_error = 0;
        klog(ks, "key directory %s: no advertised key; created %s and %s", ks->dir, sig, exc);
        /* Only REMOVAL_HOLD_MAX_MS let it through: say what kept it back. */
        int64_t now = tc_now_ms();
        if (ks->keys_gone_ms && now - ks->keys_gone_ms <= REMOVAL_WINDOW_MS)
                klog(ks, "key directory %s: key files kept disappearing for %lld ms, less than %d ms apart: taken for "
                     "no rm -r, the pair was created all the same; look for what adds and deletes key files there",
                     ks->dir, (long long) (now - ks->removals_began_ms), REMOVAL_WINDOW_MS);
        tk_keyset_free(*set);
        *set = NULL;
        /* Our own file events; the load below sees everything before it. */
        (void) drain(ks);
        r = load_consistent(ks, set);
        if (r < 0)
                return r;
        /* Deleted as soon as created: never served, but gone all the same,
         * and the directory is being emptied (rm -r). */
        if (!find_file(*set, sig) || !find_file(*set, exc))
                note_keys_gone(ks, tc_now_ms());
        return 0;
}

/* Whether set, a directory with no advertised key, is one being emptied:
 * keys of the set being served are missing from it (or went missing within
 * REMOVAL_WINDOW_MS), in the same directory. rm -r deletes the files one by
 * one: a pair created between two deletions would make its rmdir fail and
 * leave a key nobody asked for. A run of deletions that goes on past
 * REMOVAL_HOLD_MAX_MS is no rm -r: the pair is created all the same. A new
 * directory (rm -rf; mkdir) is not being emptied: it gets its pair at once,
 * as from tangd. */
static bool removal_under_way(struct keystore *ks, const struct tk_keyset *set) {
        if (ks->other_dir)
                return false;
        int64_t now = tc_now_ms();
        const struct tk_keyset *old = ks->current->ks;
        for (size_t i = 0; i < old->n_keys; i++) {
                bool kept = false;
                for (size_t j = 0; j < set->n_keys && !kept; j++)
                        kept = strcmp(old->keys[i].thp[TK_HASH_S256], set->keys[j].thp[TK_HASH_S256]) == 0;
                if (!kept) {
                        /* publish() notes it too, in the same run. */
                        note_keys_gone(ks, now);
                        break;
                }
        }
        return now < keygen_hold_end(ks);
}

/* No key is created before the removal's hold is over: requests until
 * then are answered 500 without reloading; the first one after it creates
 * the pair, as tangd would in a directory emptied on purpose. */
static void hold_keygen(struct keystore *ks) {
        __atomic_store_n(&ks->keygen_held_ms, keygen_hold_end(ks), __ATOMIC_RELEASE);
}

/* Called with reload_lock held. Keys are generated only for a request (or
 * at start), as tang does: tangd-rotate-keys hides the old pair before it
 * creates the new one, and a watcher must not fill that gap with a third. */
static int load_and_publish(struct keystore *ks, bool keygen_now) {
        struct tk_keyset *set = NULL;
        struct served *s = NULL;

        if (load_consistent(ks, &set) < 0)
                return -EIO;
        bool wanted = set->n_advertised_files == 0 && ks->n_unreadable_advertised == 0 && ks->keygen;
        bool removing = wanted && removal_under_way(ks, set);
        if (removing)
                hold_keygen(ks);
        else if (wanted && keygen_now && tc_now_ms() >= __atomic_load_n(&ks->keygen_retry_ms, __ATOMIC_ACQUIRE)) {
                if (generate_first_pair(ks, &set) < 0)
                        return -EIO;
                wanted = set->n_advertised_files == 0 && ks->n_unreadable_advertised == 0;
        }
        __atomic_store_n(&ks->keys_wanted, wanted, __ATOMIC_RELEASE);
        loaded(ks);
        if (!wanted)
                served_health_set(&ks->health, SERVED_FAULT_KEYGEN, NULL);
        size_t n_sig = tk_keyset_count(set, TK_ROLE_SIGNING, false);
        size_t n_exc = tk_keyset_count(set, TK_ROLE_EXCHANGE, false);
        size_t n_hidden = tk_keyset_count(set, TK_ROLE_SIGNING, true) + tk_keyset_count(set, TK_ROLE_EXCHANGE, true);
        if (served_build(set, &s) < 0) {
                klog(ks, "key directory %s: out of memory while loading; keeping the keys already loaded", ks->dir);
                return -ENOMEM;
        }
        if (served_set_hosts(s, TAKE_PTR(ks->hosts_loaded)) < 0) {
                served_unref(s);
                klog(ks, "key directory %s: out of memory while loading; keeping the keys already loaded", ks->dir);
                return -ENOMEM;
        }
        s->health = &ks->health;
        s->no_adv = removing                        ? SERVED_NO_ADV_REMOVED
                    : ks->n_unreadable_advertised > 0 ? SERVED_NO_ADV_UNREADABLE
                                                      : SERVED_NO_ADV_NO_KEY;
        s->unreadable = TAKE_PTR(ks->unreadable_kids);
        s->n_unreadable = ks->n_unreadable_kids;
        ks->n_unreadable_kids = 0;
        if (!s->usable)
                klog(ks, "key directory %s: no usable signing key: answering 500 until one appears", ks->dir);
        klog(ks, "key directory %s: loaded %zu signing, %zu exchange, %zu rotated key(s)", ks->dir, n_sig, n_exc, n_hidden);
        if (s->n_hosts > 0) {
                size_t n[TK_HOST_STATE_MAX] = {};
                for (size_t i = 0; i < s->n_hosts; i++)
                        n[s->hosts->hosts[i].state]++;
                klog(ks, "key directory %s: %zu host(s): %zu active, %zu revoked, %zu held", ks->dir, s->n_hosts,
                     n[TK_HOST_ACTIVE], n[TK_HOST_REVOKED], n[TK_HOST_HELD]);
        }
        publish(ks, s);
        /* After the publication: a request never sees the keys of a
         * directory that is gone without the flag. */
        __atomic_store_n(&ks->health.adv_withheld, false, __ATOMIC_RELEASE);
        return 0;
}

/* Every load is counted, and so is every failed one (the metrics). */
static void reload(struct keystore *ks, bool keygen_now) {
        __atomic_add_fetch(&ks->loads, 1, __ATOMIC_RELAXED);
        if (load_and_publish(ks, keygen_now) < 0)
                __atomic_add_fetch(&ks->load_failures, 1, __ATOMIC_RELAXED);
}

static bool pending(struct keystore *ks, bool keygen_now) {
        return events_queued(ks) || __atomic_load_n(&ks->reloading, __ATOMIC_ACQUIRE) ||
               (keygen_now && keygen_due(ks)) || dir_moved(ks);
}

/* /health says only ok, degraded or unavailable; the reasons, which name the
 * directory and its files, go to the log when they change. Called with
 * reload_lock held. */
static void log_health(struct keystore *ks) {
        char faults[300], state[sizeof(ks->health_logged)];
        bool faulty = served_health_describe(&ks->health, faults, sizeof(faults));

        pthread_mutex_lock(&ks->current_lock);
        bool usable = ks->current->usable, healthy = ks->current->healthy;
        pthread_mutex_unlock(&ks->current_lock);
        if (healthy)
                snprintf(state, sizeof(state), "%s%s", faulty ? "degraded: " : "ok", faulty ? faults : "");
        else
                snprintf(state, sizeof(state), "unavailable: %s%s%s",
                         usable ? "no advertised exchange key" : "no usable signing key", faulty ? "; " : "",
                         faulty ? faults : "");
        if (strcmp(state, ks->health_logged) == 0)
                return;
        snprintf(ks->health_logged, sizeof(ks->health_logged), "%s", state);
        klog(ks, "key directory %s: /health: %s", ks->dir, state);
}

static void refresh(struct keystore *ks, bool force, bool keygen_now) {
        if (!force && !pending(ks, keygen_now))
                return;
        pthread_mutex_lock(&ks->reload_lock);
        __atomic_store_n(&ks->reloading, 1, __ATOMIC_RELEASE);
        /* Drained under the lock and before loading: an event that arrives
         * during the load stays queued and triggers the next reload. */
        if (drain(ks) || force || (keygen_now && keygen_due(ks)))
                reload(ks, keygen_now);
        log_health(ks);
        __atomic_store_n(&ks->reloading, 0, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&ks->reload_lock);
}

void keystore_refresh(struct keystore *ks, bool force) {
        refresh(ks, force, false);
}

int keystore_housekeep(struct keystore *ks) {
        /* Host directories inotify could not watch (out of watches): a
         * revocation there must still apply, a second late at most. */
        int64_t now = tc_now_ms();
        bool poll_hosts = __atomic_load_n(&ks->hosts_unwatched, __ATOMIC_ACQUIRE) > 0;
        if (poll_hosts && now - ks->hosts_polled_ms >= 1000) {
                ks->hosts_polled_ms = now;
                refresh(ks, true, false);
        } else
                /* Whatever changed at the path is noticed, and watched, there. */
                refresh(ks, false, false);
        pthread_mutex_lock(&ks->reload_lock);
        int timeout_ms = ks->watch >= 0 && ks->parent_watch >= 0 && !poll_hosts ? -1 : 1000;
        /* Keys of a removal are kept only for its window: a deleted private
         * key must not stay in memory until the directory next changes. */
        if (ks->before_removal) {
                int64_t left = ks->removal_ms + REMOVAL_WINDOW_MS + 1 - tc_now_ms();
                if (left <= 0)
                        forget_before_removal(ks);
                else if (timeout_ms < 0 || left < timeout_ms)
                        timeout_ms = (int) left;
        }
        pthread_mutex_unlock(&ks->reload_lock);
        return timeout_ms;
}

struct served *keystore_current(struct keystore *ks) {
        pthread_mutex_lock(&ks->current_lock);
        struct served *s = served_ref(ks->current);
        pthread_mutex_unlock(&ks->current_lock);
        return s;
}

struct served *keystore_acquire(struct keystore *ks) {
        refresh(ks, false, true);
        return keystore_current(ks);
}

void keystore_reload_counts(const struct keystore *ks, uint64_t *loads, uint64_t *failures) {
        *loads = __atomic_load_n(&ks->loads, __ATOMIC_RELAXED);
        *failures = __atomic_load_n(&ks->load_failures, __ATOMIC_RELAXED);
}

int keystore_watch_fd(const struct keystore *ks) {
        return ks->inotify_fd;
}

int keystore_open(const char *dir, bool keygen, keystore_log_fn log, struct keystore **ret) {
        struct keystore *ks = calloc(1, sizeof(*ks));
        struct tk_keyset *empty = NULL;
        int r;

        if (!ks)
                return -ENOMEM;
        ks->dir = strdup(dir);
        ks->keygen = keygen;
        ks->log = log;
        ks->watch = ks->parent_watch = -1;
        strcpy(ks->health_logged, "ok");
        pthread_mutex_init(&ks->reload_lock, NULL);
        pthread_mutex_init(&ks->current_lock, NULL);
        served_health_init(&ks->health);
        ks->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (!ks->dir || ks->inotify_fd < 0) {
                r = ks->dir ? -errno : -ENOMEM;
                keystore_close(ks);
                return r;
        }
        ks->watch = inotify_add_watch(ks->inotify_fd, dir, WATCH_MASK);
        if (ks->watch < 0) {
                r = -errno;
                keystore_close(ks);
                return r;
        }
        struct stat st;
        if (stat(dir, &st) == 0) {
                ks->dir_dev = st.st_dev;
                ks->dir_ino = st.st_ino;
        }
        /* Without it (a parent we may not read), the main loop looks for a
         * re-created directory every second; requests look at every one. */
        _cleanup_free_ char *copy = strdup(dir), *copy2 = strdup(dir);
        if (!copy || !copy2 || !(ks->name = strdup(basename(copy)))) {
                keystore_close(ks);
                return -ENOMEM;
        }
        ks->parent_watch = inotify_add_watch(ks->inotify_fd, dirname(copy2), PARENT_MASK);
        /* Something to serve (500s) even if the first load fails. */
        empty = calloc(1, sizeof(*empty));
        if (!empty || served_build(empty, &ks->current) < 0) {
                keystore_close(ks);
                return -ENOMEM;
        }
        ks->current->health = &ks->health;
        refresh(ks, true, true);
        *ret = ks;
        return 0;
}

void keystore_close(struct keystore *ks) {
        if (!ks)
                return;
        served_unref(ks->current);
        served_unref(ks->before_removal);
        if (ks->inotify_fd >= 0)
                close(ks->inotify_fd);
        pthread_mutex_destroy(&ks->reload_lock);
        pthread_mutex_destroy(&ks->current_lock);
        served_health_destroy(&ks->health);
        forget_unreadable_kids(ks);
        tk_hosts_free(ks->hosts_loaded);
        free(ks->host_watches);
        warnings_clear(&ks->warned);
        warnings_clear(&ks->warning);
        free(ks->name);
        free(ks->dir);
        free(ks);
}
