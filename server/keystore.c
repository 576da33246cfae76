#include "keystore.h"
#include "cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/file.h>
#include <sys/inotify.h>

#define WATCH_MASK (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_CLOSE_WRITE | \
                    IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

/* A directory that never stops changing still gets loaded, eventually. */
#define LOAD_ATTEMPTS_MAX 20

struct keystore {
        char *dir;
        bool keygen;
        keystore_log_fn log;
        int inotify_fd;
        int watch;                   /* -1 when the directory is not watched */
        pthread_mutex_t reload_lock; /* one reload at a time */
        int reloading;               /* set while a reload is under way */
        int keys_wanted;             /* no advertised key; the next request generates a pair */
        pthread_mutex_t current_lock;
        struct served *current;
};

static void warn_file(void *userdata, const char *file, const char *reason) {
        struct keystore *ks = userdata;
        ks->log("key directory %s: %s %s, skipped", ks->dir, file, reason);
}

static void publish(struct keystore *ks, struct served *s) {
        pthread_mutex_lock(&ks->current_lock);
        struct served *old = ks->current;
        ks->current = s;
        pthread_mutex_unlock(&ks->current_lock);
        served_unref(old);
}

static int load(struct keystore *ks, struct tk_keyset **ret) {
        int r = tk_keyset_load(ks->dir, warn_file, ks, ret);
        if (r < 0)
                ks->log("key directory %s: cannot read: %s; keeping the keys already loaded", ks->dir, strerror(-r));
        return r;
}

/* Empties the inotify queue; returns whether anything was in it. */
static bool drain(struct keystore *ks) {
        char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
        bool any = false, lost_watch = false;
        ssize_t n;

        while ((n = read(ks->inotify_fd, buf, sizeof(buf))) > 0) {
                any = true;
                for (char *p = buf; p < buf + n;) {
                        struct inotify_event *ev = (struct inotify_event *) p;
                        if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF))
                                lost_watch = true;
                        p += sizeof(*ev) + ev->len;
                }
        }
        if (lost_watch && ks->watch >= 0) {
                inotify_rm_watch(ks->inotify_fd, ks->watch);
                ks->watch = -1;
                ks->log("key directory %s: removed or replaced; serving the keys already loaded", ks->dir);
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

/* Tang's behaviour: a directory with no advertised key gets a fresh pair.
 * Per-connection (inetd) servers may all find the same empty directory at
 * once; a lock on it makes the first one generate and the others see it. */
static int generate_first_pair(struct keystore *ks, struct tk_keyset **set) {
        _cleanup_free_ char *sig = NULL, *exc = NULL;
        char err[512];
        _cleanup_close_ int dirfd = open(ks->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (dirfd < 0 || flock(dirfd, LOCK_EX) < 0) {
                ks->log("key directory %s: cannot lock it to create keys: %s", ks->dir, strerror(errno));
                return 0;
        }
        tk_keyset_free(*set);
        *set = NULL;
        if (load_consistent(ks, set) < 0)
                return -1;
        if ((*set)->n_advertised_files > 0)
                return 0;
        if (tk_keygen_pair(ks->dir, NULL, NULL, &sig, &exc, err, sizeof(err)) < 0) {
                ks->log("key directory %s: no advertised key and cannot create one: %s", ks->dir, err);
                return 0;
        }
        ks->log("key directory %s: no advertised key; created %s and %s", ks->dir, sig, exc);
        tk_keyset_free(*set);
        *set = NULL;
        /* Our own file events; the load below sees everything before it. */
        (void) drain(ks);
        return load_consistent(ks, set);
}

/* Called with reload_lock held. Keys are generated only for a request (or
 * at start), as tang does: tangd-rotate-keys hides the old pair before it
 * creates the new one, and a watcher must not fill that gap with a third. */
static void reload(struct keystore *ks, bool keygen_now) {
        struct tk_keyset *set = NULL;
        struct served *s = NULL;

        if (load_consistent(ks, &set) < 0)
                return;
        bool wanted = set->n_advertised_files == 0 && ks->keygen;
        if (wanted && keygen_now) {
                if (generate_first_pair(ks, &set) < 0)
                        return;
                wanted = set->n_advertised_files == 0;
        }
        __atomic_store_n(&ks->keys_wanted, wanted, __ATOMIC_RELEASE);
        size_t n_sig = tk_keyset_count(set, TK_ROLE_SIGNING, false);
        size_t n_exc = tk_keyset_count(set, TK_ROLE_EXCHANGE, false);
        size_t n_hidden = tk_keyset_count(set, TK_ROLE_SIGNING, true) + tk_keyset_count(set, TK_ROLE_EXCHANGE, true);
        if (served_build(set, &s) < 0) {
                ks->log("key directory %s: out of memory while loading; keeping the keys already loaded", ks->dir);
                return;
        }
        if (!s->usable)
                ks->log("key directory %s: no usable signing key: answering 500 until one appears", ks->dir);
        ks->log("key directory %s: loaded %zu signing, %zu exchange, %zu rotated key(s)", ks->dir, n_sig, n_exc, n_hidden);
        publish(ks, s);
}

static bool pending(struct keystore *ks, bool keygen_now) {
        return events_queued(ks) || __atomic_load_n(&ks->reloading, __ATOMIC_ACQUIRE) ||
               (keygen_now && __atomic_load_n(&ks->keys_wanted, __ATOMIC_ACQUIRE));
}

static void refresh(struct keystore *ks, bool force, bool keygen_now) {
        if (!force && !pending(ks, keygen_now))
                return;
        pthread_mutex_lock(&ks->reload_lock);
        __atomic_store_n(&ks->reloading, 1, __ATOMIC_RELEASE);
        /* Drained under the lock and before loading: an event that arrives
         * during the load stays queued and triggers the next reload. */
        if (drain(ks) || force || (keygen_now && ks->keys_wanted))
                reload(ks, keygen_now);
        __atomic_store_n(&ks->reloading, 0, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&ks->reload_lock);
}

void keystore_refresh(struct keystore *ks, bool force) {
        refresh(ks, force, false);
}

bool keystore_rewatch(struct keystore *ks) {
        if (ks->watch >= 0)
                return true;
        ks->watch = inotify_add_watch(ks->inotify_fd, ks->dir, WATCH_MASK);
        if (ks->watch < 0)
                return false;
        ks->log("key directory %s: watching again", ks->dir);
        keystore_refresh(ks, true);
        return true;
}

struct served *keystore_acquire(struct keystore *ks) {
        refresh(ks, false, true);
        pthread_mutex_lock(&ks->current_lock);
        struct served *s = served_ref(ks->current);
        pthread_mutex_unlock(&ks->current_lock);
        return s;
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
        ks->watch = -1;
        pthread_mutex_init(&ks->reload_lock, NULL);
        pthread_mutex_init(&ks->current_lock, NULL);
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
        /* Something to serve (500s) even if the first load fails. */
        empty = calloc(1, sizeof(*empty));
        if (!empty || served_build(empty, &ks->current) < 0) {
                keystore_close(ks);
                return -ENOMEM;
        }
        refresh(ks, true, true);
        *ret = ks;
        return 0;
}

void keystore_close(struct keystore *ks) {
        if (!ks)
                return;
        served_unref(ks->current);
        if (ks->inotify_fd >= 0)
                close(ks->inotify_fd);
        pthread_mutex_destroy(&ks->reload_lock);
        pthread_mutex_destroy(&ks->current_lock);
        free(ks->dir);
        free(ks);
}
