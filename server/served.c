#include "served.h"
#include "cleanup.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <limits.h>

static int cmp_entries(const void *a, const void *b) {
        const struct thp_entry *x = a, *y = b;
        int c = strcmp(x->thp, y->thp);
        if (c != 0)
                return c;
        /* The same key under two names: the advertised copy wins. */
        return (int) x->key->hidden - (int) y->key->hidden;
}

/* Signs adv (by the advertised signing keys, and its extra signer if any)
 * and keeps the JWS as compact text, or marks it failed. Called before the
 * set is published, or with adv_lock held: requests read jws without it. */
static void adv_sign(const struct tk_keyset *ks, const struct tk_keyset *exchange, struct served_adv *adv) {
        json_auto_t *jws = tk_adv_sign_keys(ks, exchange, adv->extra_signer ? adv->extra_signer->jwk : NULL);
        char *text = jws ? json_dumps(jws, JSON_COMPACT) : NULL;
        if (!text) {
                adv->failed = true;
                return;
        }
        adv->len = strlen(text);
        __atomic_store_n(&adv->jws, text, __ATOMIC_RELEASE);
}

static void served_hosts_free(struct served *s) {
        for (size_t i = 0; s->shosts && i < s->n_hosts; i++) {
                struct served_host *h = &s->shosts[i];
                for (size_t j = 0; h->advs && j < s->n_advs; j++)
                        free(h->advs[j].jws);
                free(h->advs);
                free(h->index);
        }
        free(s->shosts);
        tk_hosts_free(s->hosts);
}

static void served_free(struct served *s) {
        if (!s)
                return;
        served_hosts_free(s);
        for (size_t i = 0; i < s->n_advs; i++)
                free(s->advs[i].jws);
        pthread_mutex_destroy(&s->adv_lock);
        free(s->advs);
        free(s->index);
        for (size_t i = 0; i < s->n_unreadable; i++)
                free(s->unreadable[i]);
        free(s->unreadable);
        tk_keyset_free(s->ks);
        free(s);
}

int served_build(struct tk_keyset *ks, struct served **ret) {
        struct served *s = calloc(1, sizeof(*s));
        int r = -ENOMEM;

        if (!s) {
                tk_keyset_free(ks);
                return -ENOMEM;
        }
        s->refcount = 1;
        s->ks = ks;
        pthread_mutex_init(&s->adv_lock, NULL);
        s->advs = calloc(ks->n_keys + 1, sizeof(*s->advs));
        s->index = calloc(ks->n_keys * TK_HASH_COUNT + 1, sizeof(*s->index));
        if (!s->advs || !s->index)
                goto fail;

        /* Tang serves nothing (500) unless an advertisement can be signed. */
        adv_sign(ks, NULL, &s->advs[0]);
        s->usable = s->advs[0].jws != NULL;
        if (s->usable)
                s->n_advs = 1;
        s->healthy = s->usable && tk_keyset_count(ks, TK_ROLE_EXCHANGE, false) > 0;

        for (size_t i = 0; i < ks->n_keys; i++) {
                const struct tk_key *k = &ks->keys[i];
                const struct served_adv *adv = NULL;

                if (k->role == TK_ROLE_SIGNING && s->usable) {
                        if (!k->hidden)
                                adv = &s->advs[0];
                        else {
                                s->advs[s->n_advs].extra_signer = k;
                                adv = &s->advs[s->n_advs++];
                        }
                }
                for (size_t h = 0; h < TK_HASH_COUNT; h++)
                        s->index[s->n_index++] = (struct thp_entry) { .thp = k->thp[h], .key = k, .adv = adv };
        }
        qsort(s->index, s->n_index, sizeof(*s->index), cmp_entries);
        *ret = s;
        return 0;
fail:
        served_free(s);
        return r;
}

struct served *served_ref(struct served *s) {
        __atomic_add_fetch(&s->refcount, 1, __ATOMIC_RELAXED);
        return s;
}

void served_unref(struct served *s) {
        if (s && __atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) == 0)
                served_free(s);
}

const struct served_adv *served_adv_get(const struct served *cs, const struct thp_entry *e) {
        /* The lazily signed advertisements are the one thing of a published
         * set that still changes; adv_lock orders their writers. */
        struct served *s = (struct served *) cs;
        struct served_adv *adv = (struct served_adv *) e->adv;

        if (!adv || __atomic_load_n(&adv->jws, __ATOMIC_ACQUIRE))
                return adv;
        pthread_mutex_lock(&s->adv_lock);
        if (!adv->jws && !adv->failed)
                adv_sign(s->ks, NULL, adv);
        pthread_mutex_unlock(&s->adv_lock);
        return adv->jws ? adv : NULL;
}

static const struct thp_entry *find_entry(const struct thp_entry *index, size_t n, const char *thp, size_t len) {
        size_t lo = 0, hi = n;

        /* Lower bound, so that of duplicates the first (advertised) wins. */
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                const char *t = index[mid].thp;
                int c = strncmp(t, thp, len);
                if (c == 0 && t[len] != '\0')
                        c = 1;
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        if (lo < n && strncmp(index[lo].thp, thp, len) == 0 && index[lo].thp[len] == '\0')
                return &index[lo];
        return NULL;
}

const struct thp_entry *served_find(const struct served *s, const char *thp, size_t len) {
        return find_entry(s->index, s->n_index, thp, len);
}

const struct thp_entry *served_find_host_key(const struct served_host *h, const char *thp, size_t len) {
        return find_entry(h->index, h->n_index, thp, len);
}

const struct served_host *served_find_host(const struct served *s, const char *name, size_t len) {
        const struct tk_host *h = s ? tk_hosts_find(s->hosts, name, len) : NULL;
        return h ? &s->shosts[h - s->hosts->hosts] : NULL;
}

/* Nothing is signed here: a directory with hundreds of hosts would cost
 * hundreds of signatures on every reload, and requests wait for reloads. */
int served_set_hosts(struct served *s, struct tk_hosts *hosts) {
        s->hosts = hosts;
        if (!hosts || hosts->n == 0)
                return 0;
        s->shosts = calloc(hosts->n, sizeof(*s->shosts));
        if (!s->shosts)
                return -ENOMEM;
        s->n_hosts = hosts->n;
        for (size_t i = 0; i < hosts->n; i++) {
                struct served_host *h = &s->shosts[i];
                const struct tk_keyset *ks = hosts->hosts[i].ks;
                h->host = &hosts->hosts[i];
                h->advs = calloc(s->n_advs + 1, sizeof(*h->advs));
                h->index = calloc(ks->n_keys * TK_HASH_COUNT + 1, sizeof(*h->index));
                if (!h->advs || !h->index)
                        return -ENOMEM;
                for (size_t j = 0; j < s->n_advs; j++)
                        h->advs[j].extra_signer = s->advs[j].extra_signer;
                for (size_t k = 0; k < ks->n_keys; k++) {
                        const struct tk_key *key = &ks->keys[k];
                        if (!h->adv_thp && !key->hidden && key->role == TK_ROLE_EXCHANGE)
                                h->adv_thp = key->thp[TK_HASH_S256];
                        for (size_t x = 0; x < TK_HASH_COUNT; x++)
                                h->index[h->n_index++] = (struct thp_entry) { .thp = key->thp[x], .key = key };
                }
                qsort(h->index, h->n_index, sizeof(*h->index), cmp_entries);
        }
        return 0;
}

const struct served_adv *served_host_adv_get(const struct served *cs, const struct served_host *h,
                                             const struct thp_entry *e) {
        struct served *s = (struct served *) cs;
        size_t i = 0;

        if (!s->usable)
                return NULL;
        if (e) {
                if (!e->adv)
                        return NULL;
                i = (size_t) (e->adv - s->advs);
        }
        struct served_adv *adv = &h->advs[i];
        if (__atomic_load_n(&adv->jws, __ATOMIC_ACQUIRE))
                return adv;
        pthread_mutex_lock(&s->adv_lock);
        if (!adv->jws && !adv->failed)
                adv_sign(s->ks, h->host->ks, adv);
        pthread_mutex_unlock(&s->adv_lock);
        return adv->jws ? adv : NULL;
}

bool served_unreadable(const struct served *s, const char *kid, size_t len) {
        for (size_t i = 0; s && i < s->n_unreadable; i++)
                if (strncmp(s->unreadable[i], kid, len) == 0 && s->unreadable[i][len] == '\0')
                        return true;
        return false;
}

bool served_host_unreadable(const struct served_host *h, const char *kid, size_t len) {
        char path[PATH_MAX];
        for (int hidden = 0; hidden <= 1; hidden++) {
                int n = snprintf(path, sizeof(path), "%s/%s%.*s.jwk", h->host->dir, hidden ? "." : "", (int) len, kid);
                struct stat st;
                if (n < 0 || (size_t) n >= sizeof(path) || lstat(path, &st) < 0 || !S_ISREG(st.st_mode))
                        continue;
                if (access(path, R_OK) < 0 && errno == EACCES)
                        return true;
        }
        return false;
}

bool served_adv_withheld(const struct served *s) {
        return s && s->health && __atomic_load_n(&s->health->adv_withheld, __ATOMIC_ACQUIRE);
}

void served_health_init(struct served_health *h) {
        memset(h, 0, sizeof(*h));
        pthread_mutex_init(&h->lock, NULL);
}

void served_health_destroy(struct served_health *h) {
        pthread_mutex_destroy(&h->lock);
}

bool served_health_set(struct served_health *h, enum served_fault f, const char *fmt, ...) {
        char msg[sizeof(h->fault[0])] = "";
        va_list ap;

        assert(f < SERVED_FAULT_MAX);
        if (fmt) {
                va_start(ap, fmt);
                vsnprintf(msg, sizeof(msg), fmt, ap);
                va_end(ap);
        }
        pthread_mutex_lock(&h->lock);
        bool changed = strcmp(h->fault[f], msg) != 0;
        if (changed)
                memcpy(h->fault[f], msg, sizeof(msg));
        pthread_mutex_unlock(&h->lock);
        return changed;
}

bool served_health_describe(struct served_health *h, char *buf, size_t len) {
        size_t used = 0;

        if (len == 0)
                return false;
        buf[0] = '\0';
        pthread_mutex_lock(&h->lock);
        for (size_t f = 0; f < SERVED_FAULT_MAX; f++) {
                if (!h->fault[f][0])
                        continue;
                int n = snprintf(buf + used, len - used, "%s%s", used ? "; " : "", h->fault[f]);
                if (n < 0 || (size_t) n >= len - used) {
                        used = len - 1;
                        break;
                }
                used += (size_t) n;
        }
        pthread_mutex_unlock(&h->lock);
        return used > 0;
}

enum served_state served_state(const struct served *s) {
        char faults[8];

        if (!s || !s->healthy)
                return SERVED_STATE_UNAVAILABLE;
        return s->health && served_health_describe(s->health, faults, sizeof(faults)) ? SERVED_STATE_DEGRADED
                                                                                      : SERVED_STATE_OK;
}

const char *served_state_name(enum served_state st) {
        static const char *const names[SERVED_STATE_MAX] = {
                [SERVED_STATE_OK] = "ok",
                [SERVED_STATE_DEGRADED] = "degraded",
                [SERVED_STATE_UNAVAILABLE] = "unavailable",
        };
        return (unsigned) st < SERVED_STATE_MAX ? names[st] : "unavailable";
}
