#include "metrics.h"
#include "served.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The routes as the metrics name them: the ones a client uses, and the rest
 * together (404, 405, 414), so that a scanner's paths cannot make series. */
enum metrics_route { MR_ADV, MR_REC, MR_HEALTH, MR_OTHER, MR_MAX };
static const char *const route_names[MR_MAX] = { "adv", "rec", "health", "other" };

/* Index 0: a status outside 100..599, i.e. no answer was sent (code="none"). */
#define STATUS_SLOTS 600

static const int64_t bucket_us[METRICS_BUCKETS] = {
        500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000,
};
static const char *const bucket_le[METRICS_BUCKETS] = {
        "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
};

/* Counts per bucket (not cumulative: one add per request; the scrape sums
 * them), the last one for above every bound (+Inf). */
struct histogram {
        atomic_uint_fast64_t bucket[METRICS_BUCKETS + 1];
        atomic_uint_fast64_t sum_us;
};

/* One key's recoveries. thp is set once (compare-and-swap from NULL), never
 * changed or freed before metrics_free: lookups need no lock. */
struct key_slot {
        _Atomic(char *) thp;
        atomic_uint_fast64_t n;
};

/* The refusals, a subset of /rec's outcomes, under the names of the outcomes. */
static const enum rec_outcome refusals[] = {
        REC_OUTCOME_REVOKED, REC_OUTCOME_HELD, REC_OUTCOME_UNKNOWN_KEY, REC_OUTCOME_NOT_EXCHANGE,
        REC_OUTCOME_BAD_REQUEST,
};

struct metrics {
        char *version;
        double start_s;
        atomic_uint_fast64_t requests[MR_MAX][STATUS_SLOTS];
        struct histogram latency[2];   /* MR_ADV, MR_REC */
        atomic_uint_fast64_t outcomes[REC_OUTCOME_MAX];
        atomic_uint_fast64_t by_key_state[2];    /* recoveries with an advertised [0] / rotated [1] key */
        struct key_slot keys[METRICS_MAX_KEYS];
};

int metrics_new(const char *version, struct metrics **ret) {
        struct timespec now;
        /* calloc: zero is every atomic's initial value, and NULL every thp's. */
        struct metrics *m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->version = strdup(version ? version : "unknown");
        if (!m->version) {
                free(m);
                return -ENOMEM;
        }
        clock_gettime(CLOCK_REALTIME, &now);
        m->start_s = (double) now.tv_sec + (double) now.tv_nsec / 1e9;
        *ret = m;
        return 0;
}

void metrics_free(struct metrics *m) {
        if (!m)
                return;
        for (size_t i = 0; i < METRICS_MAX_KEYS; i++)
                free(atomic_load(&m->keys[i].thp));
        free(m->version);
        free(m);
}

static enum metrics_route route_of(enum route_kind k) {
        switch (k) {
        case ROUTE_ADV:
        case ROUTE_HOST_ADV:
                return MR_ADV;
        case ROUTE_REC:
        case ROUTE_HOST_REC:
                return MR_REC;
        case ROUTE_HEALTH:
                return MR_HEALTH;
        default:
                return MR_OTHER;
        }
}

static void count(atomic_uint_fast64_t *c, uint64_t n) {
        atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static void histogram_observe(struct histogram *h, int64_t us) {
        size_t i = 0;
        if (us < 0)
                us = 0;
        while (i < METRICS_BUCKETS && us > bucket_us[i])
                i++;
        count(&h->bucket[i], 1);
        count(&h->sum_us, (uint64_t) us);
}

static uint32_t hash(const char *s) {
        uint32_t h = 2166136261u;    /* FNV-1a */
        for (; *s; s++)
                h = (h ^ (uint8_t) *s) * 16777619u;
        return h;
}

/* The slot of key thp, claimed if it has none yet; NULL when the table is
 * full (or out of memory). Open addressing, slots never freed: two threads
 * claiming at once race on the compare-and-swap, and the loser looks again. */
static struct key_slot *key_slot(struct metrics *m, const char *thp) {
        uint32_t start = hash(thp);
        char *copy = NULL;

        for (size_t i = 0; i < METRICS_MAX_KEYS; i++) {
                struct key_slot *slot = &m->keys[(start + i) % METRICS_MAX_KEYS];
                char *cur = atomic_load_explicit(&slot->thp, memory_order_acquire);
                if (!cur) {
                        if (!copy && !(copy = strdup(thp)))
                                return NULL;
                        if (atomic_compare_exchange_strong_explicit(&slot->thp, &cur, copy, memory_order_acq_rel,
                                                                    memory_order_acquire))
                                return slot;
                        /* Another thread took it first: cur is its key now. */
                }
                if (strcmp(cur, thp) == 0) {
                        free(copy);
                        return slot;
                }
        }
        free(copy);
        return NULL;
}

void metrics_observe(void *userdata, const struct request_record *r) {
        struct metrics *m = userdata;
        enum metrics_route route = route_of(r->route);
        int code = r->status >= 100 && r->status < STATUS_SLOTS ? r->status : 0;

        count(&m->requests[route][code], 1);
        if (route == MR_ADV || route == MR_REC)
                histogram_observe(&m->latency[route], r->duration_us);
        if (r->outcome <= REC_OUTCOME_NONE || r->outcome >= REC_OUTCOME_MAX)
                return;
        count(&m->outcomes[r->outcome], 1);
        /* r->key is set only once the kid matched one of the server's keys:
         * a client's made-up kids never make a series. */
        if (r->key && (r->outcome == REC_OUTCOME_RECOVERED || r->outcome == REC_OUTCOME_ALLOWED)) {
                count(&m->by_key_state[r->key_rotated], 1);
                struct key_slot *slot = key_slot(m, r->key);
                if (slot)
                        count(&slot->n, 1);
        }
}

/* A label value as the format escapes it: backslash, double quote, newline. */
static void put_label(FILE *f, const char *v) {
        for (; *v; v++) {
                if (*v == '\\' || *v == '"')
                        fputc('\\', f);
                if (*v == '\n')
                        fputs("\\n", f);
                else
                        fputc(*v, f);
        }
}

static void header(FILE *f, const char *name, const char *type, const char *help) {
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static uint64_t load(atomic_uint_fast64_t *c) {
        return atomic_load_explicit(c, memory_order_relaxed);
}

static void format_process(struct metrics *m, FILE *f) {
        header(f, "tether_up", "gauge", "1 while tetherd answers.");
        fputs("tether_up 1\n", f);
        header(f, "tether_build_info", "gauge", "The version of tetherd running, as a label.");
        fputs("tether_build_info{version=\"", f);
        put_label(f, m->version);
        fputs("\"} 1\n", f);
        header(f, "tether_process_start_time_seconds", "gauge", "When tetherd started, in seconds since the epoch.");
        fprintf(f, "tether_process_start_time_seconds %.3f\n", m->start_s);
}

static void format_requests(struct metrics *m, FILE *f) {
        header(f, "tether_http_requests_total", "counter",
               "Requests answered on the client port, by route and HTTP status (none: no answer was sent).");
        for (size_t r = 0; r < MR_MAX; r++)
                for (size_t c = 0; c < STATUS_SLOTS; c++) {
                        uint64_t n = load(&m->requests[r][c]);
                        if (n == 0)
                                continue;
                        if (c == 0)
                                fprintf(f, "tether_http_requests_total{route=\"%s\",code=\"none\"} %" PRIu64 "\n",
                                        route_names[r], n);
                        else
                                fprintf(f, "tether_http_requests_total{route=\"%s\",code=\"%zu\"} %" PRIu64 "\n",
                                        route_names[r], c, n);
                }

        header(f, "tether_http_request_duration_seconds", "histogram",
               "Time from the request line to the answer, for /adv and /rec.");
        for (size_t r = MR_ADV; r <= MR_REC; r++) {
                struct histogram *h = &m->latency[r];
                uint64_t cumulative = 0;
                /* The count is the buckets' sum, read once: +Inf and _count agree
                 * even while requests are counted during the scrape. */
                for (size_t b = 0; b <= METRICS_BUCKETS; b++) {
                        cumulative += load(&h->bucket[b]);
                        fprintf(f, "tether_http_request_duration_seconds_bucket{route=\"%s\",le=\"%s\"} %" PRIu64 "\n",
                                route_names[r], b < METRICS_BUCKETS ? bucket_le[b] : "+Inf", cumulative);
                }
                fprintf(f, "tether_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n", route_names[r],
                        (double) load(&h->sum_us) / 1e6);
                fprintf(f, "tether_http_request_duration_seconds_count{route=\"%s\"} %" PRIu64 "\n", route_names[r],
                        cumulative);
        }
}

static void format_recoveries(struct metrics *m, FILE *f) {
        header(f, "tether_recoveries_total", "counter", "Requests to /rec by outcome.");
        for (int o = REC_OUTCOME_NONE + 1; o < REC_OUTCOME_MAX; o++)
                fprintf(f, "tether_recoveries_total{outcome=\"%s\"} %" PRIu64 "\n", rec_outcome_name(o),
                        load(&m->outcomes[o]));

        header(f, "tether_recovery_refusals_total", "counter", "Requests to /rec refused, by reason.");
        for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++)
                fprintf(f, "tether_recovery_refusals_total{reason=\"%s\"} %" PRIu64 "\n",
                        rec_outcome_name(refusals[i]), load(&m->outcomes[refusals[i]]));

        /* Recoveries with rotated keys are the clients not rebound yet: the
         * figure to watch going to zero before pruning. */
        header(f, "tether_recoveries_by_key_state_total", "counter",
               "Successful recoveries by the state of the key used (rotated: its clients have not rebound).");
        fprintf(f, "tether_recoveries_by_key_state_total{state=\"advertised\"} %" PRIu64 "\n", load(&m->by_key_state[0]));
        fprintf(f, "tether_recoveries_by_key_state_total{state=\"rotated\"} %" PRIu64 "\n", load(&m->by_key_state[1]));

        header(f, "tether_key_recoveries_total", "counter",
               "Successful recoveries by exchange key (its S256 thumbprint).");
        for (size_t i = 0; i < METRICS_MAX_KEYS; i++) {
                const char *thp = atomic_load_explicit(&m->keys[i].thp, memory_order_acquire);
                if (!thp)
                        continue;
                fputs("tether_key_recoveries_total{key=\"", f);
                put_label(f, thp);
                fprintf(f, "\"} %" PRIu64 "\n", load(&m->keys[i].n));
        }
}

/* Hosts of KEYDIR/hosts by state, from the same version s as the key
 * counts; their names stay out of the labels (one series per host would
 * publish which machines exist and when they boot). */
static void format_hosts(const struct served *s, FILE *f) {
        size_t by_state[TK_HOST_STATE_MAX] = { 0 }, allow = 0, keys[2] = { 0 };

        for (size_t i = 0; s && s->hosts && i < s->hosts->n; i++) {
                const struct tk_host *h = &s->hosts->hosts[i];
                if ((unsigned) h->state < TK_HOST_STATE_MAX)
                        by_state[h->state]++;
                allow += h->n_allow;
                for (int hidden = 0; h->ks && hidden <= 1; hidden++)
                        keys[hidden] += tk_keyset_count(h->ks, TK_ROLE_EXCHANGE, hidden);
        }
        header(f, "tether_host_keys", "gauge",
               "Exchange keys of the hosts, by state (rotated: hidden, still used for /rec), over every host.");
        fprintf(f, "tether_host_keys{state=\"advertised\"} %zu\n", keys[0]);
        fprintf(f, "tether_host_keys{state=\"rotated\"} %zu\n", keys[1]);
        header(f, "tether_hosts", "gauge", "Hosts with keys of their own (KEYDIR/hosts), by state.");
        for (int st = 0; st < TK_HOST_STATE_MAX; st++)
                fprintf(f, "tether_hosts{state=\"%s\"} %zu\n", tk_host_state_name(st), by_state[st]);
        header(f, "tether_host_allow_tokens", "gauge", "Allow tokens of held hosts not spent yet.");
        fprintf(f, "tether_host_allow_tokens %zu\n", allow);
}

/* Gauges of what is served now, all from one version s: the keys, the
 * health, the hosts. */
static void format_served(const struct served *s, FILE *f) {
        static const struct {
                enum tk_role role;
                const char *name;
        } roles[] = { { TK_ROLE_SIGNING, "signing" }, { TK_ROLE_EXCHANGE, "exchange" } };

        header(f, "tether_keys", "gauge",
               "Shared keys (KEYDIR's, not its hosts') served now, by role and state "
               "(rotated: hidden, still used for /rec).");
        for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++)
                for (int hidden = 0; hidden <= 1; hidden++)
                        fprintf(f, "tether_keys{role=\"%s\",state=\"%s\"} %zu\n", roles[i].name,
                                hidden ? "rotated" : "advertised",
                                s && s->ks ? tk_keyset_count(s->ks, roles[i].role, hidden) : 0);

        enum served_state now = served_state(s);
        header(f, "tether_health", "gauge", "What /health answers: 1 for the current state.");
        for (int st = 0; st < SERVED_STATE_MAX; st++)
                fprintf(f, "tether_health{state=\"%s\"} %d\n", served_state_name(st), st == (int) now);
        format_hosts(s, f);
}

static void format_reloads(struct keystore *ks, FILE *f) {
        uint64_t loads, failures;
        keystore_reload_counts(ks, &loads, &failures);
        header(f, "tether_reloads_total", "counter", "Loads of the key directory, the first one included.");
        fprintf(f, "tether_reloads_total %" PRIu64 "\n", loads);
        header(f, "tether_reload_failures_total", "counter",
               "Loads of the key directory that failed, keeping the keys loaded before.");
        fprintf(f, "tether_reload_failures_total %" PRIu64 "\n", failures);
}

int metrics_format(struct metrics *m, struct keystore *ks, char **ret, size_t *len) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;

        format_process(m, f);
        format_requests(m, f);
        format_recoveries(m, f);
        if (ks) {
                struct served *s = keystore_current(ks);
                format_served(s, f);
                served_unref(s);
                format_reloads(ks, f);
        }
        bool failed = ferror(f);
        if (fclose(f) != 0 || failed) {
                free(buf);
                return -ENOMEM;
        }
        *ret = buf;
        *len = size;
        return 0;
}
