/* Key directory churn under load.
 *
 * Client threads loop: bind (GET /adv, verify it, encrypt), recover that
 * binding (POST /rec), and recover an older pooled binding whose key has
 * usually been rotated away since (hidden keys must still answer). Checker
 * threads fetch raw /adv and verify every one (a torn advertisement, keys
 * of one directory state signed by another's, fails to verify). Meanwhile
 * a rotator does what `tether-keys rotate` does (tk_rotate, the same code)
 * every --rotate-ms.
 *
 * Rotated keys: by default the rotator deletes a hidden key once no client
 * can still need it, as administrators do after clients re-bind: exactly
 * when no client in flight and no pooled binding can have seen it
 * advertised (see oldest_pin), so a 404 is always the server's fault; the
 * directory stays at ~26 files and deletions are part of the churn.
 * --keep-hidden lets them pile up instead (two files a tick, 400 in 20 s):
 * every reload must stay cheap as the directory grows. Before tetherd took
 * unchanged keys over from the set it serves, a reload re-validated every
 * key (~0.45 ms each) and signed one advertisement per hidden signing key
 * (~3 ms each), requests waited for it, and at 400 files clients timed out. */
#include "load.h"
#include "cleanup.h"
#include "util.h"
#include "http.h"
#include "keyset.h"
#include "tang.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define POOL_SIZE 16
/* A pooled binding is replaced once this many rotations old; hidden keys
 * live about as long, which bounds the directory to a few dozen files. */
#define POOL_MAX_AGE 10
#define ADV_CHECKERS 2
#define MAX_ADVERTISED 16
#define NO_PIN UINT64_MAX

struct pooled {
        bool used;
        struct load_binding b;
        uint64_t bound_from;   /* rotations done before its advertisement was fetched */
        uint64_t bound_until;  /* rotations done when its encryption finished */
};

struct hidden_key {
        uint64_t hidden_at;    /* the rotation that hid it */
        char name[NAME_MAX + 2];
};

struct churn {
        const char *url, *keydir;
        long seconds, n_clients, rotate_ms;
        bool keep_hidden;              /* --keep-hidden: let the directory grow */
        int stop;                      /* atomic */
        uint64_t rotations;            /* atomic: rotations completed */
        /* Atomic, one per client: the rotation count it read before fetching
         * the advertisement it works with, NO_PIN between rounds. A key hidden
         * by rotation h was no longer advertised once h rotations were done,
         * so a client pinned at e >= h never saw it. */
        uint64_t *pins;
        pthread_mutex_t pool_lock;
        struct pooled pool[POOL_SIZE];
        struct hidden_key *hidden;     /* rotator only, oldest first */
        size_t n_hidden;

        /* Atomic counters. */
        unsigned long binds, recovers, old_recovers, old_recovers_rotated;
        unsigned long advs, advs_torn, advs_without_exchange_key;
        unsigned long deleted, max_files, max_hidden;
        struct load_failures fail;
        char setup_error[512];
        int setup_failed;              /* atomic */
};

/* Durations of one kind of exchange, in microseconds. */
struct timings {
        int64_t *us;
        size_t n, cap;
};

struct client {
        struct churn *churn;
        size_t index;
        unsigned seed;
        struct timings bind, recover;
};

static bool stopping(struct churn *c) {
        return __atomic_load_n(&c->stop, __ATOMIC_ACQUIRE);
}

static void count(unsigned long *counter) {
        __atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
}

static void raise_max(unsigned long *max, unsigned long v) {
        unsigned long cur = __atomic_load_n(max, __ATOMIC_RELAXED);
        while (v > cur && !__atomic_compare_exchange_n(max, &cur, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                ;
}

static void timings_add(struct timings *t, int64_t us) {
        if (t->n == t->cap) {
                size_t cap = t->cap ? t->cap * 2 : 1024;
                int64_t *n = realloc(t->us, cap * sizeof(*n));
                if (!n)
                        return;   /* a figure short, not a wrong one */
                t->us = n, t->cap = cap;
        }
        t->us[t->n++] = us;
}

static void setup_failure(struct churn *c, const char *fmt, const char *detail) {
        if (__atomic_exchange_n(&c->setup_failed, 1, __ATOMIC_ACQ_REL) == 0)
                snprintf(c->setup_error, sizeof(c->setup_error), fmt, detail);
        __atomic_store_n(&c->stop, 1, __ATOMIC_RELEASE);
}

/* ------------------------------------------------------------ rotator */

/* Advertised key files (not starting with '.'), as tk_rotate sees them. */
static int list_advertised(const char *dir, char names[][NAME_MAX + 1], size_t *n, size_t *n_files) {
        _cleanup_closedir_ DIR *d = opendir(dir);
        struct dirent *de;
        if (!d)
                return -errno;
        *n = *n_files = 0;
        while ((de = readdir(d))) {
                if (!tc_has_suffix(de->d_name, ".jwk"))
                        continue;
                (*n_files)++;
                if (de->d_name[0] == '.')
                        continue;
                if (*n == MAX_ADVERTISED)
                        return -E2BIG;
                memcpy(names[(*n)++], de->d_name, strlen(de->d_name) + 1);
        }
        return 0;
}

static int remember_hidden(struct churn *c, const char *name, uint64_t hidden_at) {
        struct hidden_key *nh = realloc(c->hidden, (c->n_hidden + 1) * sizeof(*nh));
        if (!nh)
                return -ENOMEM;
        c->hidden = nh;
        nh[c->n_hidden].hidden_at = hidden_at;
        snprintf(nh[c->n_hidden].name, sizeof(nh[c->n_hidden].name), ".%s", name);
        c->n_hidden++;
        return 0;
}

static int rotate_once(struct churn *c) {
        char advertised[MAX_ADVERTISED][NAME_MAX + 1];
        struct tc_err err = {};
        size_t n = 0, n_files = 0;
        int r = list_advertised(c->keydir, advertised, &n, &n_files);
        if (r < 0) {
                setup_failure(c, "cannot list the key directory: %s", strerror(-r));
                return r;
        }
        raise_max(&c->max_files, n_files);
        r = tk_rotate(c->keydir, &err);
        if (r < 0) {
                tc_wrap(&err, r, "rotation failed");
                setup_failure(c, "%s", err.msg);
                return r;
        }
        uint64_t done = __atomic_add_fetch(&c->rotations, 1, __ATOMIC_SEQ_CST);
        for (size_t i = 0; i < n; i++)
                if (remember_hidden(c, advertised[i], done) < 0) {
                        setup_failure(c, "%s", "out of memory");
                        return -ENOMEM;
                }
        return 0;
}

/* The oldest rotation count any client in flight or pooled binding is
 * pinned at. Clients lower their pin to a pooled binding's under the same
 * lock, so a binding taken from the pool is never unpinned in between.
 * Pooled bindings past POOL_MAX_AGE go first: however slow the clients
 * are, the directory stays bounded by that age plus one client round. */
static uint64_t oldest_pin(struct churn *c) {
        uint64_t oldest = NO_PIN, now = __atomic_load_n(&c->rotations, __ATOMIC_SEQ_CST);
        pthread_mutex_lock(&c->pool_lock);
        for (size_t i = 0; i < POOL_SIZE; i++) {
                struct pooled *p = &c->pool[i];
                if (p->used && now - p->bound_from > POOL_MAX_AGE) {
                        load_binding_clear(&p->b);
                        p->used = false;
                }
                if (p->used && p->bound_from < oldest)
                        oldest = p->bound_from;
        }
        for (long i = 0; i < c->n_clients; i++) {
                uint64_t pin = __atomic_load_n(&c->pins[i], __ATOMIC_SEQ_CST);
                if (pin < oldest)
                        oldest = pin;
        }
        pthread_mutex_unlock(&c->pool_lock);
        return oldest;
}

static int prune_hidden(struct churn *c) {
        uint64_t oldest = oldest_pin(c);
        size_t i = 0;
        /* hidden_at < oldest rather than <=: one rotation of margin costs
         * two files and no thought about the order of the rename and the
         * server's reload. */
        for (; i < c->n_hidden && c->hidden[i].hidden_at < oldest; i++) {
                _cleanup_close_ int dfd = open(c->keydir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (dfd < 0 || unlinkat(dfd, c->hidden[i].name, 0) < 0) {
                        setup_failure(c, "cannot delete a hidden key: %s", strerror(errno));
                        return -errno;
                }
                count(&c->deleted);
        }
        memmove(c->hidden, c->hidden + i, (c->n_hidden - i) * sizeof(*c->hidden));
        c->n_hidden -= i;
        raise_max(&c->max_hidden, c->n_hidden);
        return 0;
}

static void *rotator_main(void *arg) {
        struct churn *c = arg;
        struct timespec next;
        clock_gettime(CLOCK_MONOTONIC, &next);
        int64_t deadline = load_now_us() + c->seconds * 1000000;

        while (!stopping(c) && load_now_us() < deadline) {
                if (rotate_once(c) < 0 || (!c->keep_hidden && prune_hidden(c) < 0))
                        break;
                /* A fixed schedule: a slow rotation shortens the next pause. */
                next.tv_nsec += c->rotate_ms * 1000000;
                next.tv_sec += next.tv_nsec / 1000000000;
                next.tv_nsec %= 1000000000;
                while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
                        ;
        }
        __atomic_store_n(&c->stop, 1, __ATOMIC_RELEASE);
        return NULL;
}

/* ------------------------------------------------------------ clients */

static void pin(struct churn *c, size_t i, uint64_t at) {
        __atomic_store_n(&c->pins[i], at, __ATOMIC_SEQ_CST);
}

/* Recovers a random pooled binding, if there is one yet. */
static void recover_pooled(struct churn *c, struct client *cl, const struct tc_ctx *ctx) {
        struct load_binding old = {};
        struct pooled *p = &c->pool[rand_r(&cl->seed) % POOL_SIZE];
        struct tc_err err;
        bool have = false;
        uint64_t bound_until = 0;

        pthread_mutex_lock(&c->pool_lock);
        if (p->used && load_binding_copy(&old, &p->b) == 0) {
                have = true;
                bound_until = p->bound_until;
                if (p->bound_from < __atomic_load_n(&c->pins[cl->index], __ATOMIC_SEQ_CST))
                        pin(c, cl->index, p->bound_from);
        }
        pthread_mutex_unlock(&c->pool_lock);
        if (!have)
                return;

        /* Its key was in an advertisement fetched before bound_until + 1
         * rotations were done, so at worst one made by rotation bound_until + 1
         * (under way during the fetch) and hidden by the next. */
        bool rotated = __atomic_load_n(&c->rotations, __ATOMIC_SEQ_CST) > bound_until + 1;
        int64_t t0 = load_now_us();
        int r = load_recover(ctx, &old, &err);
        timings_add(&cl->recover, load_now_us() - t0);
        if (r < 0)
                load_fail(&c->fail, rotated ? "recover a binding to a rotated key (POST /rec)"
                                            : "recover an earlier binding (POST /rec)", err.msg);
        else {
                count(&c->old_recovers);
                if (rotated)
                        count(&c->old_recovers_rotated);
        }
        load_binding_clear(&old);
}

/* Puts b into the pool if its slot is free or stale; takes b either way. */
static void offer(struct churn *c, struct client *cl, struct load_binding *b, uint64_t from, uint64_t until) {
        struct pooled *p = &c->pool[rand_r(&cl->seed) % POOL_SIZE];
        struct load_binding drop = *b;

        pthread_mutex_lock(&c->pool_lock);
        if (!p->used || __atomic_load_n(&c->rotations, __ATOMIC_SEQ_CST) - p->bound_from >= POOL_MAX_AGE) {
                drop = p->b;
                *p = (struct pooled) { .used = true, .b = *b, .bound_from = from, .bound_until = until };
        }
        pthread_mutex_unlock(&c->pool_lock);
        load_binding_clear(&drop);
        memset(b, 0, sizeof(*b));
}

static void client_round(struct churn *c, struct client *cl, const struct tc_ctx *ctx) {
        struct load_binding fresh;
        struct tc_err err;
        uint64_t from = __atomic_load_n(&c->rotations, __ATOMIC_SEQ_CST);

        pin(c, cl->index, from);
        int64_t t0 = load_now_us();
        int r = load_bind(ctx, c->url, &fresh, &err);
        timings_add(&cl->bind, load_now_us() - t0);
        if (r < 0) {
                load_fail(&c->fail, "bind (GET /adv, verify, encrypt)", err.msg);
                load_binding_clear(&fresh);
                goto unpin;
        }
        uint64_t until = __atomic_load_n(&c->rotations, __ATOMIC_SEQ_CST);
        count(&c->binds);
        t0 = load_now_us();
        r = load_recover(ctx, &fresh, &err);
        timings_add(&cl->recover, load_now_us() - t0);
        if (r < 0)
                load_fail(&c->fail, "recover a fresh binding (POST /rec)", err.msg);
        else
                count(&c->recovers);
        recover_pooled(c, cl, ctx);
        offer(c, cl, &fresh, from, until);
unpin:
        pin(c, cl->index, NO_PIN);
}

static void *client_main(void *arg) {
        struct client *cl = arg;
        struct tc_ctx ctx;
        if (load_ctx_init(&ctx) < 0) {
                setup_failure(cl->churn, "%s", "TETHER_TIMEOUT is malformed");
                return NULL;
        }
        while (!stopping(cl->churn))
                client_round(cl->churn, cl, &ctx);
        return NULL;
}

/* ------------------------------------------------------------ advertisement checkers */

static void check_adv(struct churn *c, const char *body, size_t len) {
        json_auto_t *jws = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
        json_auto_t *payload = NULL;
        struct tc_err err;

        if (!json_is_object(jws)) {
                count(&c->advs_torn);
                load_fail(&c->fail, "GET /adv", "the answer is not a JSON object");
                return;
        }
        if (tk_adv_verify(jws, &payload, &err) < 0) {
                count(&c->advs_torn);
                load_fail(&c->fail, "GET /adv: torn advertisement", err.msg);
                return;
        }
        json_auto_t *derive = tc_tang_keys_for(payload, "deriveKey");
        if (json_array_size(derive) == 0) {
                count(&c->advs_without_exchange_key);
                load_fail(&c->fail, "GET /adv", "the advertisement holds no exchange key");
                return;
        }
        count(&c->advs);
}

static void *adv_checker_main(void *arg) {
        struct churn *c = arg;
        struct tc_http_reply reply;
        struct tc_ctx ctx;
        struct tc_err err;
        char url[512], msg[600];

        snprintf(url, sizeof(url), "%s/adv", c->url);
        if (load_ctx_init(&ctx) < 0) {
                setup_failure(c, "%s", "TETHER_TIMEOUT is malformed");
                return NULL;
        }
        while (!stopping(c)) {
                if (tc_http_request(&ctx, url, NULL, 0, NULL, &reply, &err) < 0) {
                        load_fail(&c->fail, "GET /adv", err.msg);
                        continue;
                }
                if (reply.status != 200) {
                        snprintf(msg, sizeof(msg), "answered HTTP %ld", reply.status);
                        load_fail(&c->fail, "GET /adv", msg);
                } else
                        check_adv(c, reply.body, reply.len);
                tc_http_reply_clear(&reply);
        }
        return NULL;
}

/* ------------------------------------------------------------ main */

/* p50, p99 and max of one kind of exchange over every client. */
static void report_timings(const char *name, const struct client *cls, long n, size_t offset) {
        struct timings all = {};
        for (long i = 0; i < n; i++) {
                const struct timings *t = (const struct timings *) ((const char *) &cls[i] + offset);
                for (size_t j = 0; j < t->n; j++)
                        timings_add(&all, t->us[j]);
        }
        printf("%s_P50_MS=%.1f\n", name, (double) load_percentile(all.us, all.n, 50) / 1000);
        printf("%s_P99_MS=%.1f\n", name, (double) load_percentile(all.us, all.n, 99) / 1000);
        printf("%s_MAX_MS=%.1f\n", name, (double) load_percentile(all.us, all.n, 100) / 1000);
        free(all.us);
}

static void report(const struct churn *c, double seconds) {
        printf("SECONDS=%.1f\n", seconds);
        printf("CLIENTS=%ld\n", c->n_clients);
        printf("ROTATIONS=%" PRIu64 "\n", c->rotations);
        printf("ROTATE_MS=%ld\n", c->rotate_ms);
        printf("BINDS=%lu\n", c->binds);
        printf("RECOVERS=%lu\n", c->recovers);
        printf("OLD_RECOVERS=%lu\n", c->old_recovers);
        printf("OLD_RECOVERS_ROTATED=%lu\n", c->old_recovers_rotated);
        printf("ADVS_VERIFIED=%lu\n", c->advs);
        printf("ADVS_TORN=%lu\n", c->advs_torn);
        printf("ADVS_NO_EXCHANGE_KEY=%lu\n", c->advs_without_exchange_key);
        printf("HIDDEN_DELETED=%lu\n", c->deleted);
        printf("MAX_KEY_FILES=%lu\n", c->max_files);
        printf("MAX_HIDDEN_TRACKED=%lu\n", c->max_hidden);
        printf("FAILURES=%lu\n", c->fail.count);
        printf("HTTP_500=%lu\n", c->fail.http500);
}

static int parse_args(int argc, char **argv, struct churn *c) {
        static const struct option opts[] = {
                { "url", required_argument, NULL, 'u' },      { "keydir", required_argument, NULL, 'k' },
                { "seconds", required_argument, NULL, 's' },  { "clients", required_argument, NULL, 'c' },
                { "rotate-ms", required_argument, NULL, 'r' }, { "keep-hidden", no_argument, NULL, 'K' }, {},
        };
        bool ok = true;
        int o;
        c->seconds = 20, c->n_clients = 8, c->rotate_ms = 100;
        while (ok && (o = getopt_long(argc, argv, "", opts, NULL)) != -1)
                switch (o) {
                case 'u': c->url = optarg; break;
                case 'k': c->keydir = optarg; break;
                case 's': ok = load_parse_long(optarg, 1, 3600, &c->seconds); break;
                case 'c': ok = load_parse_long(optarg, 1, 256, &c->n_clients); break;
                case 'r': ok = load_parse_long(optarg, 10, 60000, &c->rotate_ms); break;
                case 'K': c->keep_hidden = true; break;
                default: ok = false;
                }
        return load_args_check("churn", ok, c->url && c->keydir && optind == argc, "--url and --keydir", c->url);
}

static void churn_free(struct churn *c) {
        for (size_t i = 0; i < POOL_SIZE; i++)
                load_binding_clear(&c->pool[i].b);
        free(c->pins);
        free(c->hidden);
}

int load_churn_main(int argc, char **argv) {
        struct churn c = {};
        pthread_t rotator, checkers[ADV_CHECKERS], *clients = NULL;
        struct client *cls = NULL;
        size_t n_checkers = 0;
        long started = 0;
        int ret = 2;

        if (parse_args(argc, argv, &c) < 0)
                return 2;
        load_failures_init(&c.fail);
        pthread_mutex_init(&c.pool_lock, NULL);
        c.pins = calloc((size_t) c.n_clients, sizeof(*c.pins));
        clients = calloc((size_t) c.n_clients, sizeof(*clients));
        cls = calloc((size_t) c.n_clients, sizeof(*cls));
        if (!c.pins || !clients || !cls)
                goto out;
        for (long i = 0; i < c.n_clients; i++)
                c.pins[i] = NO_PIN;

        int64_t start = load_now_us();
        if (pthread_create(&rotator, NULL, rotator_main, &c) != 0)
                goto out;
        for (; n_checkers < ADV_CHECKERS; n_checkers++)
                if (pthread_create(&checkers[n_checkers], NULL, adv_checker_main, &c) != 0) {
                        setup_failure(&c, "%s", "cannot start a thread");
                        break;
                }
        for (; !c.setup_failed && started < c.n_clients; started++) {
                cls[started] = (struct client) { .churn = &c, .index = (size_t) started, .seed = (unsigned) (start + started) };
                if (pthread_create(&clients[started], NULL, client_main, &cls[started]) != 0) {
                        setup_failure(&c, "%s", "cannot start a thread");
                        break;
                }
        }
        pthread_join(rotator, NULL);
        for (size_t i = 0; i < n_checkers; i++)
                pthread_join(checkers[i], NULL);
        for (long i = 0; i < started; i++)
                pthread_join(clients[i], NULL);

        report(&c, (double) (load_now_us() - start) / 1e6);
        report_timings("BIND", cls, started, offsetof(struct client, bind));
        report_timings("RECOVER", cls, started, offsetof(struct client, recover));
        load_failures_print(&c.fail, "churn");
        if (c.setup_failed) {
                fprintf(stderr, "tether-load churn: %s\n", c.setup_error);
                goto out;
        }
        ret = c.fail.count == 0 ? 0 : 1;
out:
        for (long i = 0; cls && i < started; i++) {
                free(cls[i].bind.us);
                free(cls[i].recover.us);
        }
        free(clients);
        free(cls);
        churn_free(&c);
        return ret;
}
