#include "askpass.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "cleanup.h"
#include "crypttab.h"
#include "fanout.h"
#include "luks.h"
#include "netwatch.h"
#include "retry.h"
#include "tether.h"

#define QUESTION_MAX_BYTES 65536

/* ---------------------------------------------------------------- questions */

void tc_question_clear(struct tc_question *q) {
        free(q->socket);
        free(q->id);
        memset(q, 0, sizeof(*q));
}

static char *dup_value(const char *line, const char *key) {
        size_t n = strlen(key);
        return strncmp(line, key, n) == 0 && line[n] == '=' ? strdup(line + n + 1) : NULL;
}

/* Question files are systemd's: regular, root's (or the agent's own user's,
 * when it runs unprivileged on a directory of its own), small. Anything else
 * is refused before a byte is read: a FIFO would block the agent, /dev/zero
 * would never end, a symlink or another user's file is not a question
 * systemd asked. */
static int question_open(const char *path, struct tc_err *err) {
        struct stat st, at;
        if (lstat(path, &st) < 0)
                return tc_fail(err, -errno, "%s: %s", path, strerror(errno));
        if (!S_ISREG(st.st_mode))
                return tc_fail(err, -EPERM, "%s: not a regular file", path);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
        if (fd < 0)
                return tc_fail(err, -errno, "%s: %s", path, strerror(errno));
        if (fstat(fd, &at) < 0 || !S_ISREG(at.st_mode) || at.st_dev != st.st_dev || at.st_ino != st.st_ino)
                return tc_fail(err, -EPERM, "%s: replaced while being opened", path);
        if (at.st_uid != 0 && at.st_uid != geteuid())
                return tc_fail(err, -EPERM, "%s: owned by uid %u, not by root", path, (unsigned) at.st_uid);
        return TAKE_FD(fd);
}

/* The whole file, NUL-terminated, if it has at most QUESTION_MAX_BYTES. */
static int question_slurp(const char *path, char **text, struct tc_err *err) {
        _cleanup_close_ int fd = question_open(path, err);
        if (fd < 0)
                return fd;
        return tc_read_fd_max(fd, path, QUESTION_MAX_BYTES, text, NULL, err);
}

/* Where the answer goes: an absolute path that fits a socket address. */
static bool socket_path_valid(const char *s) {
        if (!s || s[0] != '/' || strlen(s) >= sizeof(((struct sockaddr_un *) 0)->sun_path))
                return false;
        for (const unsigned char *p = (const unsigned char *) s; *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        return false;
        return true;
}

int tc_question_read(const char *path, struct tc_question *q, struct tc_err *err) {
        _cleanup_free_ char *text = NULL;
        bool in_ask = false;

        memset(q, 0, sizeof(*q));
        int r = question_slurp(path, &text, err);
        if (r < 0)
                return r;
        for (char *line = text, *next; line && *line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = '\0';
                line[strcspn(line, "\r")] = '\0';
                if (line[0] == '[') {
                        in_ask = strcmp(line, "[Ask]") == 0;
                        continue;
                }
                if (!in_ask)
                        continue;
                char *v;
                if ((v = dup_value(line, "Socket"))) {
                        free(q->socket);
                        q->socket = v;
                } else if ((v = dup_value(line, "Id"))) {
                        free(q->id);
                        q->id = v;
                } else if (strncmp(line, "PID=", 4) == 0)
                        q->pid = (pid_t) strtol(line + 4, NULL, 10);
                else if (strncmp(line, "NotAfter=", 9) == 0)
                        q->not_after_us = strtoull(line + 9, NULL, 10);
        }
        if (!socket_path_valid(q->socket)) {
                tc_question_clear(q);
                return tc_fail(err, -EBADMSG, "%s: no usable Socket=", path);
        }
        return 0;
}

bool tc_question_live(const struct tc_question *q) {
        if (q->pid > 0 && kill(q->pid, 0) < 0 && errno == ESRCH)
                return false;
        return q->not_after_us == 0 || (uint64_t) tc_now_ms() * 1000 < q->not_after_us;
}

int tc_question_answer(const struct tc_question *q, const uint8_t *password, size_t len, struct tc_err *err) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct stat st;
        /* Checked again as it is used: the key goes to a socket, nothing else
         * (not a symlink to one elsewhere). */
        if (!socket_path_valid(q->socket))
                return tc_fail(err, -EBADMSG, "cannot answer: no usable Socket=");
        if (lstat(q->socket, &st) < 0)
                return tc_fail(err, -errno, "cannot answer on %s: %s", q->socket, strerror(errno));
        if (!S_ISSOCK(st.st_mode))
                return tc_fail(err, -ENOTSOCK, "cannot answer on %s: not a socket", q->socket);
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        size_t msg_len = len + 1;
        uint8_t *msg = malloc(msg_len);
        TC_CLEANUP_SECRET(msg, msg_len);
        if (fd < 0 || !msg)
                return tc_fail(err, fd < 0 ? -errno : -ENOMEM, "cannot answer: %s", strerror(fd < 0 ? errno : ENOMEM));
        strncpy(sa.sun_path, q->socket, sizeof(sa.sun_path) - 1);
        msg[0] = '+';
        memcpy(msg + 1, password, len);
        if (sendto(fd, msg, msg_len, MSG_NOSIGNAL, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return tc_fail(err, -errno, "cannot answer on %s: %s", q->socket, strerror(errno));
        return 0;
}

/* ---------------------------------------------------------------- volumes */

/* What the agent remembers of each volume it was asked about. */
struct volume {
        char *device;
        bool not_ours;           /* no binding, or not LUKS2 */
        bool refused;            /* our key does not open the volume */
        char *answered;          /* the question file we answered last */
        unsigned answers;
        struct tc_retry retry;
        struct volume *next;
};

/* A question file refused as unsafe or malformed: reported once, not read
 * again while it stays (the same name and inode). */
struct bad_question {
        char *name;
        ino_t ino;
        bool seen;               /* in the current round */
        struct bad_question *next;
};

struct agent {
        const struct tc_ctx *ctx;
        const struct tc_agent_opts *o;
        const char *dir;
        struct volume *volumes;
        struct bad_question *bad;
        int64_t last_answer_ms;
};

static void report(const struct agent *a, enum tc_agent_event e, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static void report(const struct agent *a, enum tc_agent_event e, const char *fmt, ...) {
        char msg[1024];
        va_list ap;
        if (!a->o->report)
                return;
        /* Device names come from question files: one log line, whatever they
         * hold, escaped as error messages are. */
        va_start(ap, fmt);
        tc_vformat(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        a->o->report(a->o->report_data, e, msg);
}

static struct volume *volume_get(struct agent *a, const char *device) {
        for (struct volume *v = a->volumes; v; v = v->next)
                if (strcmp(v->device, device) == 0)
                        return v;
        struct volume *v = calloc(1, sizeof(*v));
        if (!v || !(v->device = strdup(device))) {
                free(v);
                return NULL;
        }
        tc_retry_init(&v->retry, a->o->backoff_min_ms);
        v->next = a->volumes;
        a->volumes = v;
        return v;
}

static bool bad_question_known(struct agent *a, const char *name, ino_t ino) {
        for (struct bad_question *b = a->bad; b; b = b->next)
                if (b->ino == ino && strcmp(b->name, name) == 0)
                        return (b->seen = true);
        return false;
}

static void bad_question_add(struct agent *a, const char *name, ino_t ino) {
        struct bad_question *b = calloc(1, sizeof(*b));
        if (!b || !(b->name = strdup(name))) {
                free(b);
                return;  /* reported again next round: no harm */
        }
        b->ino = ino;
        b->seen = true;
        b->next = a->bad;
        a->bad = b;
}

/* Forgets the files gone since the last round; all of them when drop_all. */
static void bad_questions_prune(struct agent *a, bool drop_all) {
        for (struct bad_question **p = &a->bad; *p;) {
                struct bad_question *b = *p;
                if (b->seen && !drop_all) {
                        b->seen = false;
                        p = &b->next;
                        continue;
                }
                *p = b->next;
                free(b->name);
                free(b);
        }
}

static void volumes_free(struct agent *a) {
        while (a->volumes) {
                struct volume *v = a->volumes;
                a->volumes = v->next;
                free(v->device);
                free(v->answered);
                free(v);
        }
}

/* ---------------------------------------------------------------- one round */

struct attempt {
        const struct tc_ctx *ctx;
        struct volume *volume;
        struct tc_question q;
        char *path;
        struct tc_luks_bindings bindings;
        uint8_t *key;
        size_t len;
        int token, r;
        struct tc_err err;
};

static void attempt_clear(struct attempt *t) {
        tc_question_clear(&t->q);
        free(t->path);
        tc_luks_bindings_clear(&t->bindings);
        tc_secret_free(t->key, t->len);
}

/* Reads question `name`; returns 1 and fills t if it is due for an attempt,
 * 0 if not (not ours, refused, waiting), updating *wake_ms for the latter. */
static int question_due(struct agent *a, const char *name, ino_t ino, struct attempt *t, int64_t *wake_ms) {
        struct tc_err err = {};
        if (asprintf(&t->path, "%s/%s", a->dir, name) < 0)
                return -ENOMEM;
        int r = tc_question_read(t->path, &t->q, &err);
        if (r == -ENOENT)
                return 0;  /* answered or withdrawn meanwhile */
        if (r < 0) {
                bad_question_add(a, name, ino);
                report(a, TC_AGENT_BAD_QUESTION, "%s; not answered", err.msg);
                return 0;
        }
        if (!tc_question_live(&t->q) || !t->q.id || strncmp(t->q.id, "cryptsetup:", 11) != 0)
                return 0;
        struct volume *v = volume_get(a, t->q.id + 11);
        if (!v)
                return -ENOMEM;
        t->volume = v;
        if (v->not_ours || v->refused)
                return 0;
        if (v->answered) {
                if (strcmp(v->answered, t->path) == 0)
                        return 0;  /* answered; systemd has not removed it yet */
                /* Asked again: our key was wrong, or systemd-cryptsetup tried
                 * another volume's passphrase from the kernel keyring first (it
                 * does that when several volumes ask at once). The key is
                 * checked before it is sent again; a third ask is the user's. */
                free(TAKE_PTR(v->answered));
                if (v->answers >= 2) {
                        v->refused = true;
                        report(a, TC_AGENT_REFUSED, "%s: asked again after %u answers; leaving it to the passphrase prompt",
                               v->device, v->answers);
                        return 0;
                }
                v->retry.next_try_ms = 0;
        }
        if (tc_now_ms() < v->retry.next_try_ms) {
                tc_retry_wake(&v->retry, wake_ms);
                return 0;
        }
        r = tc_luks_list(v->device, false, &t->bindings, &err);
        if (r >= 0 && t->bindings.n == 0)
                r = tc_fail(&err, -ENOENT, "%s: no tether/clevis binding", v->device);
        if (r < 0) {
                v->not_ours = true;
                report(a, TC_AGENT_SKIPPED, "%s", err.msg);
                return 0;
        }
        return 1;
}

/* After a re-ask: true (and the volume given up) if the key does not open
 * its slot. */
static bool key_refused(struct agent *a, struct attempt *t) {
        struct tc_err err = {};
        int slot = -1;
        for (size_t i = 0; i < t->bindings.n; i++)
                if (t->bindings.items[i].token == t->token)
                        slot = t->bindings.items[i].slot;
        if (tc_luks_key_opens(t->volume->device, slot, t->key, t->len, &err) >= 0)
                return false;
        t->volume->refused = true;
        report(a, TC_AGENT_REFUSED, "%s; leaving it to the passphrase prompt", err.msg);
        return true;
}

static void attempt_finish(struct agent *a, struct attempt *t) {
        struct volume *v = t->volume;
        v->retry.last_try_ms = tc_now_ms();
        if (t->r >= 0) {
                struct tc_err err = {};
                if (v->answers > 0 && key_refused(a, t))
                        return;
                if (tc_question_answer(&t->q, t->key, t->len, &err) < 0) {
                        /* The question went away meanwhile: someone typed. */
                        report(a, TC_AGENT_SKIPPED, "%s: %s", v->device, err.msg);
                        return;
                }
                free(v->answered);
                v->answered = TAKE_PTR(t->path);
                v->answers++;
                a->last_answer_ms = v->retry.last_try_ms;
                report(a, TC_AGENT_ANSWERED, "%s: answered with the key of token %d", v->device, t->token);
                return;
        }
        if (t->r != -EACCES) {
                v->not_ours = true;
                report(a, TC_AGENT_SKIPPED, "%s", t->err.msg);
                return;
        }
        if (tc_retry_failed(&v->retry, a->o->backoff_max_ms, t->err.msg))
                report(a, TC_AGENT_RETRYING, "%s (trying again, at most every %.0f s)", t->err.msg,
                       (double) a->o->backoff_max_ms / 1000);
}

/* One round's attempts, run at once (tc_fanout_run). */
struct round {
        struct agent *a;
        struct attempt *tries;
        int64_t *wake_ms;
};

static int attempt_run(void *data, size_t i, struct tc_fanout *f) {
        struct attempt *t = &((struct round *) data)->tries[i];
        (void) f;  /* cancelled through the agent's context */
        t->r = tc_luks_bindings_recover(t->ctx, t->volume->device, &t->bindings, &t->token, &t->key, &t->len, &t->err);
        return t->r;
}

/* In the agent's thread, as each attempt ends: its answer goes out at once,
 * whatever the other volumes' servers take. */
static int attempt_collect(void *data, size_t i, int r) {
        struct round *round = data;
        struct attempt *t = &round->tries[i];
        attempt_finish(round->a, t);
        if (t->r == -EACCES)
                tc_retry_wake(&t->volume->retry, round->wake_ms);
        return r;
}

static bool agent_cancelled(void *data) {
        return tc_ctx_cancelled(((struct round *) data)->a->ctx);
}

static const struct tc_fanout_ops round_ops = {
        .run = attempt_run,
        .collect = attempt_collect,
        .cancelled = agent_cancelled,
};

/* Tries every due question, the volumes at once. Returns the number of
 * questions pending (ours or not) and sets *wake_ms to the next retry time,
 * or -1 for none. */
static int round_run(struct agent *a, int64_t *wake_ms) {
        _cleanup_closedir_ DIR *d = opendir(a->dir);
        struct attempt *tries = NULL;
        size_t n = 0, cap = 0;
        int pending = 0, r = 0;

        *wake_ms = -1;
        if (!d)
                return errno == ENOENT ? 0 : -errno;
        for (struct dirent *e; !tc_ctx_cancelled(a->ctx) && (e = readdir(d));) {
                if (strncmp(e->d_name, "ask.", 4) != 0)
                        continue;
                pending++;
                if (bad_question_known(a, e->d_name, e->d_ino))
                        continue;
                if (n == cap) {
                        struct attempt *grown = realloc(tries, (cap = cap ? cap * 2 : 8) * sizeof(*tries));
                        if (!grown) {
                                r = -ENOMEM;
                                break;
                        }
                        tries = grown;
                }
                tries[n] = (struct attempt) { .ctx = a->ctx };
                r = question_due(a, e->d_name, e->d_ino, &tries[n], wake_ms);
                if (r < 0)
                        break;
                if (r == 0)
                        attempt_clear(&tries[n]);
                else
                        n++;
        }
        bad_questions_prune(a, false);
        /* On an error the attempts gathered so far still run, and are freed.
         * Quorum 0: every volume's attempt runs to its end, whatever the
         * others do. */
        struct round round = { .a = a, .tries = tries, .wake_ms = wake_ms };
        int f = tc_fanout_run(&round_ops, &round, &(struct tc_fanout_opts) { .n = n });
        if (f == -ENOMEM && r >= 0)
                r = f;
        for (size_t i = 0; i < n; i++)
                attempt_clear(&tries[i]);
        free(tries);
        return r < 0 ? r : pending;
}

/* After a network change, every volume still waiting is due again. */
static void network_changed(struct agent *a) {
        for (struct volume *v = a->volumes; v; v = v->next)
                tc_retry_network_changed(&v->retry);
}

int tc_agent_run(const struct tc_ctx *ctx, const struct tc_agent_opts *o, struct tc_err *err) {
        struct agent a = { .ctx = ctx, .o = o, .dir = o->dir ? o->dir : TC_ASK_DIR };
        _cleanup_close_ int inotify = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        _cleanup_close_ int netwatch = tc_netwatch_open();
        int r = 0;

        if (inotify < 0)
                return tc_fail(err, -errno, "inotify: %s", strerror(errno));
        /* Watch first, then look: a question written in between is not missed. */
        if (inotify_add_watch(inotify, a.dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM | IN_ONLYDIR) < 0)
                return tc_fail(err, -errno, "%s: %s", a.dir, strerror(errno));
        while (!tc_ctx_cancelled(ctx)) {
                int64_t wake_ms;
                int pending = round_run(&a, &wake_ms);
                if (pending < 0) {
                        r = tc_fail(err, pending, "%s: %s", a.dir, strerror(-pending));
                        break;
                }
                /* A round cancelled midway collects no attempt and sets no
                 * retry time: the signal came already, poll must not wait. */
                if (tc_ctx_cancelled(ctx))
                        break;
                int64_t now = tc_now_ms();
                if (pending == 0) {
                        if (!a.last_answer_ms || now >= a.last_answer_ms + o->linger_ms)
                                break;
                        wake_ms = a.last_answer_ms + o->linger_ms;
                }
                struct pollfd p[2] = { { .fd = inotify, .events = POLLIN }, { .fd = netwatch, .events = POLLIN } };
                int timeout = wake_ms < 0 ? -1 : wake_ms <= now ? 0 : (int) (wake_ms - now);
                if (poll(p, netwatch >= 0 ? 2 : 1, timeout) < 0 && errno != EINTR) {
                        r = tc_fail(err, -errno, "poll: %s", strerror(errno));
                        break;
                }
                if (p[0].revents)
                        tc_drain(inotify);
                if (netwatch >= 0 && p[1].revents) {
                        tc_netwatch_wait(netwatch, 0);
                        network_changed(&a);
                }
        }
        volumes_free(&a);
        bad_questions_prune(&a, true);
        return r;
}
