#include "passfifo.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <sys/stat.h>

#include "cleanup.h"
#include "crypttab.h"
#include "fanout.h"
#include "luks.h"
#include "netwatch.h"
#include "retry.h"
#include "tether.h"

#define ENVIRON_MAX_BYTES 65536
#define CRYPTTAB_MAX_BYTES 65536

/* ---------------------------------------------------------------- volumes cryptroot asks for */

void tc_crypt_volumes_clear(struct tc_crypt_volumes *v) {
        for (size_t i = 0; i < v->n; i++) {
                free(v->items[i].name);
                free(v->items[i].source);
        }
        free(v->items);
        memset(v, 0, sizeof(*v));
}

static int volume_add(struct tc_crypt_volumes *out, const char *name, const char *source, struct tc_err *err) {
        for (size_t i = 0; i < out->n; i++)
                if (strcmp(out->items[i].name, name) == 0)
                        return 0;  /* cryptroot sets a name up once */
        if (out->n >= TC_PASSFIFO_VOLUMES_MAX)
                return tc_fail(err, -E2BIG, "more than %d volumes; %s is left to the prompt", TC_PASSFIFO_VOLUMES_MAX,
                               name);
        struct tc_crypt_volume *grown = realloc(out->items, (out->n + 1) * sizeof(*grown));
        if (!grown)
                return tc_fail(err, -ENOMEM, "out of memory");
        out->items = grown;
        struct tc_crypt_volume *v = &out->items[out->n];
        v->name = strdup(name);
        v->source = tc_crypttab_source_path(source);
        if (!v->name || !v->source) {
                free(v->name);
                free(v->source);
                return tc_fail(err, -ENOMEM, "out of memory");
        }
        out->n++;
        return 0;
}

static int crypttab_read(const char *path, struct tc_crypt_volumes *out, struct tc_err *err) {
        _cleanup_free_ char *text = NULL;
        size_t len;
        int r = tc_read_file_max(path, CRYPTTAB_MAX_BYTES, &text, &len, err);
        if (r < 0 || !text)
                return r;
        for (char *line = text, *next; line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = '\0';
                char *save = NULL, *name = strtok_r(line, " \t", &save);
                char *source = name ? strtok_r(NULL, " \t", &save) : NULL;
                char *key = source ? strtok_r(NULL, " \t", &save) : NULL;
                char *options = key ? strtok_r(NULL, " \t", &save) : NULL;
                if (!source || name[0] == '#')
                        continue;
                /* A key file or a keyscript: cryptroot asks nobody. */
                if (key && strcmp(key, "none") != 0 && strcmp(key, "-") != 0)
                        continue;
                if (tc_crypttab_has_option(options, "keyscript"))
                        continue;
                if ((r = volume_add(out, name, source, err)) < 0)
                        return r;
        }
        return 0;
}

/* cryptopts=target=NAME,source=SPEC,luks,... (repeatable), as cryptroot
 * reads it when the image has no crypttab entry for the volume. */
static int cryptopts_read(const char *path, struct tc_crypt_volumes *out, struct tc_err *err) {
        _cleanup_free_ char *text = NULL;
        size_t len;
        int r = tc_read_file_max(path, 4096, &text, &len, err);
        if (r < 0 || !text)
                return r;
        char *save = NULL;
        for (char *w = strtok_r(text, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save)) {
                if (strncmp(w, "cryptopts=", 10) != 0)
                        continue;
                const char *name = NULL, *source = NULL;
                bool asks = true;
                char *osave = NULL;
                for (char *o = strtok_r(w + 10, ",", &osave); o; o = strtok_r(NULL, ",", &osave)) {
                        if (strncmp(o, "target=", 7) == 0)
                                name = o + 7;
                        else if (strncmp(o, "source=", 7) == 0)
                                source = o + 7;
                        else if ((strncmp(o, "key=", 4) == 0 && strcmp(o + 4, "none") != 0) ||
                                 strncmp(o, "keyscript=", 10) == 0)
                                asks = false;
                }
                /* cryptroot's default name for the root volume. */
                if (source && *source && asks && (r = volume_add(out, name && *name ? name : "cryptroot", source, err)) < 0)
                        return r;
        }
        return 0;
}

int tc_crypt_volumes_read(const char *crypttab, const char *cmdline, struct tc_crypt_volumes *out,
                          struct tc_err *err) {
        int r = 0;
        memset(out, 0, sizeof(*out));
        if (crypttab)
                r = crypttab_read(crypttab, out, err);
        if (r >= 0 && cmdline)
                r = cryptopts_read(cmdline, out, err);
        return r;
}

/* ---------------------------------------------------------------- the agent's state */

enum vol_state {
        VOL_NEW,        /* bindings not read yet (the device may not be there yet) */
        VOL_WAITING,    /* bound; servers unreachable so far */
        VOL_KEY,        /* key recovered */
        VOL_NOT_OURS,   /* no binding, not LUKS2, or a binding that cannot work */
        VOL_REFUSED,    /* our key was not taken: left to the prompt */
};

struct vol {
        char *name, *source;
        enum vol_state state;
        bool busy;                       /* in the recoverer's round */
        struct tc_luks_bindings bindings;
        uint8_t *key;
        size_t len;
        int token;
        unsigned answers;
        struct tc_retry retry;
};

/* The askpass whose FIFO is there now. */
struct asker {
        bool present;
        dev_t dev;
        ino_t ino;
        pid_t pid;               /* 0: reader not found yet */
        unsigned lookups;        /* times the reader was looked for in vain */
        struct vol *vol;         /* NULL: not a volume of ours */
        bool answered;
};

struct agent {
        const struct tc_passfifo_opts *o;
        struct tc_ctx ctx;               /* the caller's, cancelled when the agent stops */
        const char *fifo, *proc;
        bool network_reported[2];        /* IPv4, IPv6; the recoverer's */
        char *fifo_dir;
        char *fifo_real;                 /* the FIFO's path as /proc/PID/fd links show it */
        const char *fifo_name;
        pthread_mutex_t lock;            /* the volumes */
        pthread_mutex_t report_lock;
        pthread_mutex_t cryptsetup_lock; /* libcryptsetup is not thread-safe */
        struct vol *vols[TC_PASSFIFO_VOLUMES_MAX];
        size_t n;
        int kick;                        /* eventfd: to the recoverer (a volume is due) */
        int ready;                       /* eventfd: to the caller's thread (a key came) */
        struct asker asker;
        int64_t last_answer_ms;
        bool bad_fifo_reported;
};

static void report(struct agent *a, enum tc_agent_event e, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void report(struct agent *a, enum tc_agent_event e, const char *fmt, ...) {
        char msg[1024];
        va_list ap;
        if (!a->o->report)
                return;
        /* Names come from crypttab and other processes: escaped, one line. */
        va_start(ap, fmt);
        tc_vformat(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        pthread_mutex_lock(&a->report_lock);
        a->o->report(a->o->report_data, e, msg);
        pthread_mutex_unlock(&a->report_lock);
}

static void poke(int fd) {
        uint64_t one = 1;
        (void) !write(fd, &one, sizeof(one));
}

/* Under a->lock. */
static struct vol *vol_add(struct agent *a, const char *name, const char *source) {
        if (a->n >= TC_PASSFIFO_VOLUMES_MAX)
                return NULL;
        struct vol *v = calloc(1, sizeof(*v));
        if (!v || !(v->name = strdup(name)) || !(v->source = strdup(source))) {
                if (v)
                        free(v->name);
                free(v);
                return NULL;
        }
        tc_retry_init(&v->retry, a->o->backoff_min_ms);
        a->vols[a->n++] = v;
        return v;
}

static void vols_free(struct agent *a) {
        for (size_t i = 0; i < a->n; i++) {
                struct vol *v = a->vols[i];
                free(v->name);
                free(v->source);
                tc_luks_bindings_clear(&v->bindings);
                tc_secret_free(v->key, v->len);
                free(v);
        }
        a->n = 0;
}

/* ---------------------------------------------------------------- the recoverer's thread */

struct attempt {
        struct agent *a;
        struct vol *v;
        uint8_t *key;
        size_t len;
        int token, r;
        struct tc_err err;
};

static int attempt_run(void *data, size_t i, struct tc_fanout *f) {
        struct attempt *t = &((struct attempt *) data)[i];
        (void) f;  /* cancelled through the agent's context */
        t->r = tc_luks_bindings_recover(&t->a->ctx, t->v->source, &t->v->bindings, &t->token, &t->key, &t->len, &t->err);
        return t->r;
}

/* In the recoverer's thread as each volume's attempt ends: the key is handed
 * to the caller's thread at once, whatever the others' servers take. */
static int attempt_collect(void *data, size_t i, int r) {
        struct attempt *t = &((struct attempt *) data)[i];
        struct agent *a = t->a;
        struct vol *v = t->v;
        pthread_mutex_lock(&a->lock);
        bool new_error = false;
        v->busy = false;
        v->retry.last_try_ms = tc_now_ms();
        if (t->r >= 0) {
                v->key = TAKE_PTR(t->key);
                v->len = t->len;
                v->token = t->token;
                v->state = VOL_KEY;
        } else if (t->r == -EACCES)
                new_error = tc_retry_failed(&v->retry, a->o->backoff_max_ms, t->err.msg);
        else
                v->state = VOL_NOT_OURS;
        pthread_mutex_unlock(&a->lock);
        /* The caller's thread answers, or sees one more volume settled. */
        if (t->r != -EACCES)
                poke(a->ready);
        if (t->r >= 0)
                report(a, TC_AGENT_RECOVERED, "%s: key recovered (token %d)", v->name, t->token);
        else if (new_error)
                report(a, TC_AGENT_RETRYING, "%s: %s (trying again, at most every %.0f s)", v->name, t->err.msg,
                       (double) a->o->backoff_max_ms / 1000);
        else if (t->r != -EACCES)
                report(a, TC_AGENT_SKIPPED, "%s: %s", v->name, t->err.msg);
        return r;
}

static bool agent_cancelled(void *data) {
        return tc_ctx_cancelled(&((struct attempt *) data)->a->ctx);
}

static const struct tc_fanout_ops round_ops = {
        .run = attempt_run,
        .collect = attempt_collect,
        .cancelled = agent_cancelled,
};

/* A new volume's bindings, once its device is there; false if the volume
 * has nothing to recover (now or for good). */
static bool bindings_read(struct agent *a, struct vol *v) {
        struct tc_err err = {};
        struct stat st;
        if (stat(v->source, &st) < 0)
                return false;  /* not yet: tried again when its askpass appears */
        pthread_mutex_lock(&a->cryptsetup_lock);
        int r = tc_luks_list(v->source, false, &v->bindings, &err);
        pthread_mutex_unlock(&a->cryptsetup_lock);
        if (r >= 0 && v->bindings.n == 0)
                r = tc_fail(&err, -ENOENT, "no tether/clevis binding");
        pthread_mutex_lock(&a->lock);
        v->state = r < 0 ? VOL_NOT_OURS : VOL_WAITING;
        pthread_mutex_unlock(&a->lock);
        if (r < 0) {
                report(a, TC_AGENT_SKIPPED, "%s (%s): %s", v->name, v->source, err.msg);
                poke(a->ready);  /* maybe the last volume to settle */
        }
        return r >= 0;
}

/* One round: every due volume's recovery at once. Returns the next retry
 * time, or -1 for none. */
static int64_t round_run(struct agent *a) {
        struct attempt tries[TC_PASSFIFO_VOLUMES_MAX];
        struct vol *due[TC_PASSFIFO_VOLUMES_MAX];
        bool unread[TC_PASSFIFO_VOLUMES_MAX];
        size_t n = 0, n_due = 0;
        int64_t now = tc_now_ms(), wake = -1;

        pthread_mutex_lock(&a->lock);
        for (size_t i = 0; i < a->n; i++) {
                struct vol *v = a->vols[i];
                if (v->busy || !(v->state == VOL_NEW || v->state == VOL_WAITING))
                        continue;
                if (v->state == VOL_WAITING && v->retry.next_try_ms > now) {
                        tc_retry_wake(&v->retry, &wake);
                        continue;
                }
                v->busy = true;
                unread[n_due] = v->state == VOL_NEW;
                due[n_due++] = v;
        }
        pthread_mutex_unlock(&a->lock);
        /* Volumes are only ever added, and freed after this thread ends. */
        for (size_t i = 0; i < n_due; i++) {
                struct vol *v = due[i];
                if (unread[i] && !bindings_read(a, v)) {
                        pthread_mutex_lock(&a->lock);
                        v->busy = false;
                        pthread_mutex_unlock(&a->lock);
                        continue;
                }
                tries[n++] = (struct attempt) { .a = a, .v = v };
        }
        /* Quorum 0: every volume's attempt runs to its end. */
        (void) tc_fanout_run(&round_ops, tries, &(struct tc_fanout_opts) { .n = n });
        pthread_mutex_lock(&a->lock);
        for (size_t i = 0; i < n; i++) {
                tc_secret_free(tries[i].key, tries[i].len);
                /* Not collected (cancelled): nothing learnt. */
                tries[i].v->busy = false;
                if (tries[i].v->state == VOL_WAITING)
                        tc_retry_wake(&tries[i].v->retry, &wake);
        }
        pthread_mutex_unlock(&a->lock);
        return wake;
}

/* "DEVICE ADDRESS" of the first address of family outside loopback, false
 * if none. */
static bool first_address(int family, char *out, size_t size) {
        struct ifaddrs *list;
        bool found = false;
        if (getifaddrs(&list) < 0)
                return false;
        for (struct ifaddrs *i = list; i && !found; i = i->ifa_next) {
                char host[INET6_ADDRSTRLEN];
                if (!i->ifa_addr || (i->ifa_flags & IFF_LOOPBACK) || i->ifa_addr->sa_family != family)
                        continue;
                if (getnameinfo(i->ifa_addr, i->ifa_addr->sa_family == AF_INET ? sizeof(struct sockaddr_in) :
                                sizeof(struct sockaddr_in6), host, sizeof(host), NULL, 0, NI_NUMERICHOST) != 0)
                        continue;
                /* An IPv6 link-local address alone reaches no server. */
                if (i->ifa_addr->sa_family == AF_INET6 && strncmp(host, "fe80:", 5) == 0)
                        continue;
                snprintf(out, size, "%s %s", i->ifa_name, host);
                found = true;
        }
        freeifaddrs(list);
        return found;
}

/* Once per family (IPv6 often comes long before a DHCP lease): when the
 * boot's network came up is what one asks first when a volume did not
 * unlock. */
static void network_report(struct agent *a) {
        static const int families[] = { AF_INET, AF_INET6 };
        for (size_t f = 0; f < 2; f++) {
                char where[IFNAMSIZ + INET6_ADDRSTRLEN + 8];
                if (!a->network_reported[f] && first_address(families[f], where, sizeof(where))) {
                        a->network_reported[f] = true;
                        report(a, TC_AGENT_NETWORK, "network up: %s", where);
                }
        }
}

static void network_changed(struct agent *a) {
        network_report(a);
        pthread_mutex_lock(&a->lock);
        for (size_t i = 0; i < a->n; i++)
                tc_retry_network_changed(&a->vols[i]->retry);
        pthread_mutex_unlock(&a->lock);
}

static void *recoverer(void *data) {
        struct agent *a = data;
        _cleanup_close_ int netwatch = tc_netwatch_open();
        network_report(a);
        while (!tc_ctx_cancelled(&a->ctx)) {
                int64_t wake = round_run(a), now = tc_now_ms();
                /* An address that came while the round ran, before netlink
                 * was looked at. */
                network_report(a);
                if (tc_ctx_cancelled(&a->ctx))
                        break;
                struct pollfd p[2] = { { .fd = a->kick, .events = POLLIN }, { .fd = netwatch, .events = POLLIN } };
                int timeout = wake < 0 ? -1 : wake <= now ? 0 : (int) (wake - now);
                if (poll(p, netwatch >= 0 ? 2 : 1, timeout) < 0 && errno != EINTR)
                        break;
                if (p[0].revents)
                        tc_drain(a->kick);
                if (netwatch >= 0 && p[1].revents) {
                        tc_netwatch_wait(netwatch, 0);
                        network_changed(a);
                }
        }
        return NULL;
}

/* ---------------------------------------------------------------- the askpass */

/* The process (not ours) holding the FIFO (dev, ino) open for reading: the
 * askpass. 0 if none yet. */
static pid_t fifo_reader(const struct agent *a, dev_t dev, ino_t ino) {
        _cleanup_closedir_ DIR *d = opendir(a->proc);
        pid_t self = getpid();
        if (!d)
                return 0;
        for (struct dirent *e; (e = readdir(d));) {
                char *end;
                long pid = strtol(e->d_name, &end, 10);
                if (*end || pid <= 0 || pid == self)
                        continue;
                char path[64 + 4096];
                snprintf(path, sizeof(path), "%s/%ld/fd", a->proc, pid);
                _cleanup_closedir_ DIR *fds = opendir(path);
                if (!fds)
                        continue;  /* gone, or a kernel thread */
                for (struct dirent *f; (f = readdir(fds));) {
                        char target[4096];
                        struct stat st;
                        if (f->d_name[0] == '.')
                                continue;
                        snprintf(path, sizeof(path), "%s/%ld/fd/%s", a->proc, pid, f->d_name);
                        /* The link's text first: stat() would reach into
                         * whatever the fd is (a hung network file system). */
                        ssize_t n = readlink(path, target, sizeof(target) - 1);
                        if (n < 0)
                                continue;
                        target[n] = '\0';
                        if (strcmp(target, a->fifo_real) != 0)
                                continue;
                        if (stat(path, &st) < 0 || !S_ISFIFO(st.st_mode) || st.st_dev != dev || st.st_ino != ino)
                                continue;
                        /* A writer (cryptroot-unlock, someone typing remotely) is not the asker. */
                        snprintf(path, sizeof(path), "%s/%ld/fdinfo/%s", a->proc, pid, f->d_name);
                        _cleanup_fclose_ FILE *info = fopen(path, "re");
                        char line[128];
                        unsigned long flags = 0;
                        while (info && fgets(line, sizeof(line), info))
                                if (sscanf(line, "flags: %lo", &flags) == 1)
                                        break;
                        if ((flags & O_ACCMODE) == O_RDONLY)
                                return (pid_t) pid;
                }
        }
        return 0;
}

/* CRYPTTAB_NAME and CRYPTTAB_SOURCE of the askpass: cryptroot exports them
 * for it (and for keyscripts). */
static int asker_volume(const struct agent *a, pid_t pid, char **name, char **source, struct tc_err *err) {
        char path[4096 + 64];
        _cleanup_free_ char *env = NULL;
        size_t len;
        snprintf(path, sizeof(path), "%s/%ld/environ", a->proc, (long) pid);
        int r = tc_read_file_max(path, ENVIRON_MAX_BYTES, &env, &len, err);
        if (r < 0)
                return r;
        if (!env)
                return tc_fail(err, -ESRCH, "the askpass (pid %ld) is gone", (long) pid);
        *name = *source = NULL;
        for (size_t i = 0; i < len; i += strlen(env + i) + 1) {
                if (strncmp(env + i, "CRYPTTAB_NAME=", 14) == 0 && !*name)
                        *name = strdup(env + i + 14);
                else if (strncmp(env + i, "CRYPTTAB_SOURCE=", 16) == 0 && !*source)
                        *source = strdup(env + i + 16);
        }
        if (!*name || !*source || !**name || !**source) {
                free(*name);
                free(*source);
                *name = *source = NULL;
                return tc_fail(err, -ENOENT, "the askpass (pid %ld) has no CRYPTTAB_NAME and CRYPTTAB_SOURCE",
                               (long) pid);
        }
        return 0;
}

/* The volume the askpass asks for: by name, else by device; a volume the
 * crypttab did not list is added. Under a->lock. */
static struct vol *vol_for(struct agent *a, const char *name, const char *source) {
        for (size_t i = 0; i < a->n; i++)
                if (strcmp(a->vols[i]->name, name) == 0)
                        return a->vols[i];
        for (size_t i = 0; i < a->n; i++)
                if (tc_same_file(a->vols[i]->source, source))
                        return a->vols[i];
        return vol_add(a, name, source);
}

/* Writes the key into the FIFO (dev, ino) if it is still the one there and
 * someone reads it. SIGPIPE, should the reader go, stays in this thread. */
static int fifo_write(const struct agent *a, dev_t dev, ino_t ino, pid_t reader, const uint8_t *key, size_t len,
                      struct tc_err *err) {
        _cleanup_close_ int fd = open(a->fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        struct stat st;
        if (fd < 0)
                return tc_fail(err, -errno, "%s: %s", a->fifo, errno == ENXIO ? "nobody reads it" : strerror(errno));
        if (fstat(fd, &st) < 0 || !S_ISFIFO(st.st_mode) || st.st_dev != dev || st.st_ino != ino)
                return tc_fail(err, -ESTALE, "%s: replaced meanwhile", a->fifo);
        /* Every askpass shares the FIFO: the one asked about may have gone
         * (someone typed) and the next volume's opened it since. Narrows
         * that window to the write itself. */
        if (fifo_reader(a, dev, ino) != reader)
                return tc_fail(err, -ESTALE, "%s: its askpass went meanwhile", a->fifo);
        sigset_t pipe, old;
        sigemptyset(&pipe);
        sigaddset(&pipe, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe, &old);
        int r = 0;
        for (size_t done = 0; done < len && r == 0;) {
                ssize_t n = write(fd, key + done, len - done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        r = -errno;
                else
                        done += (size_t) n;
        }
        if (r == -EPIPE) {
                struct timespec zero = {};
                sigtimedwait(&pipe, NULL, &zero);
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return r < 0 ? tc_fail(err, r, "%s: %s", a->fifo, strerror(-r)) : 0;
}

/* Asked again after an answer: the key goes once more only if it opens
 * its keyslot (cryptroot asks again after any failure); a third ask is
 * the user's. Under a->lock. */
static bool reask_refused(struct agent *a, struct vol *v) {
        struct tc_err err = {};
        int slot = -1;
        if (v->answers >= 2) {
                report(a, TC_AGENT_REFUSED, "%s: asked again after %u answers; leaving it to the passphrase prompt",
                       v->name, v->answers);
                return true;
        }
        for (size_t i = 0; i < v->bindings.n; i++)
                if (v->bindings.items[i].token == v->token)
                        slot = v->bindings.items[i].slot;
        pthread_mutex_lock(&a->cryptsetup_lock);
        int r = tc_luks_key_opens(v->source, slot, v->key, v->len, &err);
        pthread_mutex_unlock(&a->cryptsetup_lock);
        if (r >= 0)
                return false;
        report(a, TC_AGENT_REFUSED, "%s: %s; leaving it to the passphrase prompt", v->name, err.msg);
        return true;
}

/* Looks at the FIFO: a new askpass is identified, and answered if its
 * volume's key is there. */
static void asker_serve(struct agent *a) {
        struct asker *k = &a->asker;
        struct stat st;
        struct tc_err err = {};

        if (lstat(a->fifo, &st) < 0) {
                k->present = false;
                return;
        }
        if (!S_ISFIFO(st.st_mode) || (st.st_uid != 0 && st.st_uid != geteuid())) {
                if (!a->bad_fifo_reported)
                        report(a, TC_AGENT_BAD_QUESTION, "%s: not a FIFO of root's; not answered", a->fifo);
                a->bad_fifo_reported = true;
                k->present = false;
                return;
        }
        if (!k->present || k->dev != st.st_dev || k->ino != st.st_ino)
                *k = (struct asker) { .present = true, .dev = st.st_dev, .ino = st.st_ino };
        /* Debian's askpass never removes its FIFO: the next askpass (the
         * next volume, or the same one asked again) opens the same one. So
         * the question is the reader, not the FIFO: one that went was
         * answered or typed into; another one is a new question. */
        pid_t reader = fifo_reader(a, st.st_dev, st.st_ino);
        if (reader == 0 || (k->pid != 0 && reader != k->pid))
                *k = (struct asker) { .present = true, .dev = st.st_dev, .ino = st.st_ino, .lookups = k->lookups };
        if (reader == 0 || k->answered) {
                /* IN_OPEN comes before the opener's fd is in its table
                 * (/proc shows it a moment later): the loop looks again
                 * after short pauses, see asker_recheck_ms(). */
                k->lookups++;
                return;
        }
        /* Found: the next look is at the next event (its IN_CLOSE, a key),
         * not on the short pauses, which would go on as long as it waits. */
        k->lookups = 0;
        if (k->pid == 0) {
                _cleanup_free_ char *name = NULL, *source = NULL;
                k->pid = reader;
                if (asker_volume(a, k->pid, &name, &source, &err) < 0) {
                        report(a, TC_AGENT_SKIPPED, "%s", err.msg);
                        k->answered = true;  /* nothing to say to this one */
                        return;
                }
                pthread_mutex_lock(&a->lock);
                k->vol = vol_for(a, name, source);
                pthread_mutex_unlock(&a->lock);
                if (!k->vol) {
                        report(a, TC_AGENT_SKIPPED, "%s: more than %d volumes, or out of memory; left to the prompt",
                               name, TC_PASSFIFO_VOLUMES_MAX);
                        k->answered = true;
                        return;
                }
                /* Its device is there now, if it was not before. */
                poke(a->kick);
        }
        pthread_mutex_lock(&a->lock);
        struct vol *v = k->vol;
        if (v->state == VOL_KEY && v->answers > 0 && reask_refused(a, v))
                v->state = VOL_REFUSED;
        if (v->state != VOL_KEY) {
                /* Nothing to say to this one, ever: left to the prompt. */
                if (v->state == VOL_REFUSED || v->state == VOL_NOT_OURS)
                        k->answered = true;
                pthread_mutex_unlock(&a->lock);
                return;
        }
        int r = fifo_write(a, k->dev, k->ino, k->pid, v->key, v->len, &err);
        if (r >= 0) {
                v->answers++;
                k->answered = true;
                a->last_answer_ms = tc_now_ms();
        }
        pthread_mutex_unlock(&a->lock);
        if (r >= 0)
                report(a, TC_AGENT_ANSWERED, "%s: answered with the key of token %d", v->name, v->token);
        else
                /* The askpass went: someone typed. */
                report(a, TC_AGENT_SKIPPED, "%s: %s", v->name, err.msg);
}

/* How long to wait before looking for the FIFO's (new) reader again, or -1:
 * after each event on the FIFO's directory, 10, 20, 40... ms, 2.5 s in all;
 * then only the next event. The FIFO stays between askpasses, so without
 * this bound an idle FIFO would be looked at forever. */
#define ASKER_LOOKUPS_MAX 8
static int asker_recheck_ms(const struct asker *k) {
        if (!k->present || k->lookups == 0 || k->lookups > ASKER_LOOKUPS_MAX)
                return -1;
        return 10 << (k->lookups - 1);
}

/* Nothing left to do: every volume settled, none asked about now. */
static bool agent_done(struct agent *a) {
        bool done = a->n > 0, answered = false;
        pthread_mutex_lock(&a->lock);
        for (size_t i = 0; i < a->n && done; i++) {
                struct vol *v = a->vols[i];
                answered |= v->answers > 0;
                done = v->state == VOL_NOT_OURS || v->state == VOL_REFUSED || (v->state == VOL_KEY && v->answers > 0);
        }
        pthread_mutex_unlock(&a->lock);
        /* An askpass still waiting for an answer. */
        if (!done || (a->asker.pid != 0 && !a->asker.answered))
                return false;
        return !answered || tc_now_ms() >= a->last_answer_ms + a->o->linger_ms;
}

static int agent_init(struct agent *a, const struct tc_ctx *ctx, const struct tc_passfifo_opts *o, struct tc_err *err) {
        *a = (struct agent) { .o = o, .fifo = o->fifo ? o->fifo : TC_PASSFIFO, .proc = o->proc ? o->proc : "/proc",
                              .kick = -1, .ready = -1 };
        tc_ctx_child(&a->ctx, ctx);
        pthread_mutex_init(&a->lock, NULL);
        pthread_mutex_init(&a->report_lock, NULL);
        pthread_mutex_init(&a->cryptsetup_lock, NULL);
        const char *slash = strrchr(a->fifo, '/');
        if (!slash || !slash[1])
                return tc_fail(err, -EINVAL, "%s: not a path to a file", a->fifo);
        a->fifo_dir = slash == a->fifo ? strdup("/") : strndup(a->fifo, (size_t) (slash - a->fifo));
        a->fifo_name = slash + 1;
        if (!a->fifo_dir)
                return tc_fail(err, -ENOMEM, "out of memory");
        /* As /proc/PID/fd shows it: /lib is a symbolic link in merged-/usr images. */
        _cleanup_free_ char *dir = realpath(a->fifo_dir, NULL);
        if (!dir)
                return tc_fail(err, -errno, "%s: %s", a->fifo_dir, strerror(errno));
        if (asprintf(&a->fifo_real, "%s%s%s", dir, strcmp(dir, "/") == 0 ? "" : "/", a->fifo_name) < 0) {
                a->fifo_real = NULL;
                return tc_fail(err, -ENOMEM, "out of memory");
        }
        a->kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        a->ready = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (a->kick < 0 || a->ready < 0)
                return tc_fail(err, -errno, "cannot start: %s", strerror(errno));
        for (size_t i = 0; o->volumes && i < o->volumes->n; i++)
                if (!vol_add(a, o->volumes->items[i].name, o->volumes->items[i].source))
                        return tc_fail(err, -ENOMEM, "out of memory");
        return 0;
}

static void agent_done_free(struct agent *a) {
        vols_free(a);
        free(a->fifo_dir);
        free(a->fifo_real);
        if (a->kick >= 0)
                close(a->kick);
        if (a->ready >= 0)
                close(a->ready);
        pthread_mutex_destroy(&a->lock);
        pthread_mutex_destroy(&a->report_lock);
        pthread_mutex_destroy(&a->cryptsetup_lock);
}

static int agent_loop(struct agent *a, const struct tc_ctx *ctx, struct tc_err *err) {
        _cleanup_close_ int inotify = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        if (inotify < 0)
                return tc_fail(err, -errno, "inotify: %s", strerror(errno));
        /* IN_OPEN: askpass makes the FIFO (unless it is there), then opens
         * it; only once it reads can its process be found. IN_CLOSE: an
         * askpass went (answered, or typed into). Watch first, then look. */
        if (inotify_add_watch(inotify, a->fifo_dir, IN_CREATE | IN_OPEN | IN_CLOSE | IN_MOVED_TO | IN_DELETE | IN_ONLYDIR) < 0)
                return tc_fail(err, -errno, "%s: %s", a->fifo_dir, strerror(errno));
        while (!tc_ctx_cancelled(ctx)) {
                asker_serve(a);
                if (agent_done(a))
                        break;
                int64_t now = tc_now_ms(), wake = a->last_answer_ms ? a->last_answer_ms + a->o->linger_ms : -1;
                struct pollfd p[2] = { { .fd = inotify, .events = POLLIN }, { .fd = a->ready, .events = POLLIN } };
                int timeout = wake < 0 ? -1 : wake <= now ? 0 : (int) (wake - now);
                int recheck = asker_recheck_ms(&a->asker);
                if (recheck >= 0 && (timeout < 0 || recheck < timeout))
                        timeout = recheck;
                if (poll(p, 2, timeout) < 0 && errno != EINTR)
                        return tc_fail(err, -errno, "poll: %s", strerror(errno));
                if (p[0].revents) {
                        tc_drain(inotify);
                        /* Something happened to the FIFO: look afresh. */
                        a->asker.lookups = 0;
                }
                if (p[1].revents)
                        tc_drain(a->ready);
        }
        return 0;
}

int tc_passfifo_run(const struct tc_ctx *ctx, const struct tc_passfifo_opts *o, struct tc_err *err) {
        struct agent a;
        pthread_t thread;
        sigset_t all, old;
        int r = agent_init(&a, ctx, o, err);
        if (r >= 0) {
                /* The recoverer and its workers take no signal: the caller's
                 * thread gets them and its poll wakes. */
                sigfillset(&all);
                pthread_sigmask(SIG_BLOCK, &all, &old);
                r = -pthread_create(&thread, NULL, recoverer, &a);
                pthread_sigmask(SIG_SETMASK, &old, NULL);
                if (r < 0)
                        r = tc_fail(err, r, "cannot start a thread: %s", strerror(-r));
        }
        if (r >= 0) {
                r = agent_loop(&a, ctx, err);
                tc_ctx_cancel(&a.ctx);
                poke(a.kick);
                pthread_join(thread, NULL);
        }
        agent_done_free(&a);
        return r;
}
