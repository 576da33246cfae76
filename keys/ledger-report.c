/* The report of `tether-keys usage`: what the ledger says about every key
 * of a key directory and every host, as JSON. Computed here, printed by the
 * program. */
#include "ledger.h"
#include "hosts.h"
#include "keyset.h"
#include "cleanup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *tk_ledger_iso_time(int64_t ms, char buf[static 32]) {
        if (ms < 0)
                return strcpy(buf, "-");
        time_t t = (time_t) (ms / 1000);
        struct tm tm;
        if (!gmtime_r(&t, &tm) || !strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
                return strcpy(buf, "?");
        return buf;
}

static const char *role_name(enum tk_role role) {
        switch (role) {
        case TK_ROLE_SIGNING: return "signing";
        case TK_ROLE_EXCHANGE: return "exchange";
        default: return "other";
        }
}

static int64_t ms_of(const json_t *obj, const char *name) {
        json_t *v = json_object_get(obj, name);
        return json_is_integer(v) ? (int64_t) json_integer_value(v) : -1;
}

static json_int_t count_of(const json_t *obj, const char *name) {
        int64_t v = ms_of(obj, name);
        return v < 0 ? 0 : (json_int_t) v;
}

/* A time in the report: ISO 8601 text, or null for none. */
static json_t *json_time(int64_t ms) {
        char buf[32];
        return ms < 0 ? json_null() : json_string(tk_ledger_iso_time(ms, buf));
}

static json_t *json_ms(int64_t ms) {
        return ms < 0 ? json_null() : json_integer((json_int_t) ms);
}

static int64_t ts_ms(const struct timespec *t) {
        return (int64_t) t->tv_sec * 1000 + t->tv_nsec / 1000000;
}

static json_int_t sum_values(const json_t *obj) {
        const char *name;
        json_t *v;
        json_int_t n = 0;
        json_object_foreach((json_t *) obj, name, v)
                n += json_integer_value(v);
        return n;
}

/* The fields a key's and a host's entries share: recoveries, first and
 * last, addresses, refused. */
static json_t *usage_fields(const json_t *e) {
        json_t *addrs = json_object_get(e, "addresses"), *refused = json_object_get(e, "refused");
        return json_pack("{s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:I}",
                         "recoveries", count_of(e, "recoveries"),
                         "first_recovery", json_time(ms_of(e, "first_ms")),
                         "last_recovery", json_time(ms_of(e, "last_ms")),
                         "first_recovery_ms", json_ms(ms_of(e, "first_ms")),
                         "last_recovery_ms", json_ms(ms_of(e, "last_ms")),
                         "last_addresses", addrs ? json_incref(addrs) : json_array(),
                         "refused", refused ? json_incref(refused) : json_object(),
                         "refused_total", sum_values(refused));
}

/* One key of the directory (host NULL) or of a host: file is relative to
 * the key directory. */
static json_t *key_usage(const json_t *agg, const struct tk_key *k, const char *host) {
        json_t *e = json_object_get(json_object_get(agg, "keys"), k->thp[TK_HASH_S256]);
        char created[32];
        int64_t c = ts_ms(&k->id.mtime);
        /* A hidden file's ctime: when the rename hid it (see prune). */
        int64_t rotated = k->hidden ? ts_ms(&k->id.ctime) : -1;
        _cleanup_free_ char *file = NULL;
        if (host && asprintf(&file, TK_HOSTS_SUBDIR "/%s/%s", host, k->file) < 0)
                return NULL;
        json_t *j = usage_fields(e);
        if (!j || json_object_update_new(j, json_pack("{s:s, s:s, s:s, s:s, s:s?, s:s, s:I, s:o, s:o}",
                         "file", file ? file : k->file, "thp", k->thp[TK_HASH_S256],
                         "state", k->hidden ? "rotated" : "advertised", "role", role_name(k->role),
                         "host", host, "created", tk_ledger_iso_time(c, created), "created_ms", (json_int_t) c,
                         "rotated", json_time(rotated), "rotated_ms", json_ms(rotated))) < 0) {
                json_decref(j);
                return NULL;
        }
        return j;
}

static bool keyset_has(const struct tk_keyset *ks, const char *thp) {
        for (size_t i = 0; ks && i < ks->n_keys; i++)
                if (strcmp(ks->keys[i].thp[TK_HASH_S256], thp) == 0)
                        return true;
        return false;
}

static int append(json_t *array, json_t *v) {
        return v ? json_array_append_new(array, v) : -1;
}

static int add_keys(json_t *keys, const struct tk_keyset *ks, const struct tk_hosts *hosts, const json_t *agg) {
        for (size_t i = 0; i < ks->n_keys; i++)
                if (append(keys, key_usage(agg, &ks->keys[i], NULL)) < 0)
                        return -1;
        for (size_t h = 0; hosts && h < hosts->n; h++)
                for (size_t i = 0; hosts->hosts[h].ks && i < hosts->hosts[h].ks->n_keys; i++)
                        if (append(keys, key_usage(agg, &hosts->hosts[h].ks->keys[i], hosts->hosts[h].name)) < 0)
                                return -1;
        /* Keys the ledger saw that the directory no longer holds. */
        const char *thp;
        json_t *e;
        json_object_foreach(json_object_get(agg, "keys"), thp, e) {
                bool found = keyset_has(ks, thp);
                for (size_t h = 0; hosts && h < hosts->n && !found; h++)
                        found = keyset_has(hosts->hosts[h].ks, thp);
                if (found)
                        continue;
                json_t *j = usage_fields(e);
                if (!j || json_object_update_new(j, json_pack("{s:n, s:s, s:s, s:n, s:n, s:n, s:n, s:n, s:n}",
                                "file", "thp", thp, "state", "gone", "role", "host", "created", "created_ms",
                                "rotated", "rotated_ms")) < 0 || json_array_append_new(keys, j) < 0)
                        return -1;
        }
        return 0;
}

static json_t *host_usage(const char *name, const char *state, json_int_t allow, const json_t *e) {
        json_t *j = usage_fields(e);
        if (!j || json_object_update_new(j, json_pack("{s:s, s:s, s:I, s:I}", "host", name, "state", state,
                                                      "allow_tokens", allow, "pending", count_of(e, "pending"))) < 0) {
                json_decref(j);
                return NULL;
        }
        return j;
}

static int cmp_host(const void *a, const void *b) {
        return strcmp(json_string_value(json_object_get(*(json_t *const *) a, "host")),
                      json_string_value(json_object_get(*(json_t *const *) b, "host")));
}

/* Every host of the directory, with or without records, and the hosts
 * only the ledger knows (deleted since): "gone". Sorted by name. */
static int add_hosts(json_t *out, const struct tk_hosts *hosts, const json_t *agg) {
        json_t *seen = json_object_get(agg, "hosts");
        _cleanup_(json_decrefp) json_t *all = json_array();
        if (!all)
                return -1;
        for (size_t h = 0; hosts && h < hosts->n; h++) {
                const struct tk_host *host = &hosts->hosts[h];
                if (append(all, host_usage(host->name, tk_host_state_name(host->state), (json_int_t) host->n_allow,
                                           json_object_get(seen, host->name))) < 0)
                        return -1;
        }
        const char *name;
        json_t *e;
        json_object_foreach(seen, name, e)
                if (!(hosts && tk_hosts_find(hosts, name, strlen(name))) &&
                    append(all, host_usage(name, "gone", 0, e)) < 0)
                        return -1;
        size_t n = json_array_size(all);
        _cleanup_free_ json_t **v = calloc(n ? n : 1, sizeof(*v));
        if (!v)
                return -1;
        for (size_t i = 0; i < n; i++)
                v[i] = json_array_get(all, i);
        qsort(v, n, sizeof(*v), cmp_host);
        for (size_t i = 0; i < n; i++)
                if (json_array_append(out, v[i]) < 0)
                        return -1;
        return 0;
}

json_t *tk_ledger_report(const struct tk_keyset *ks, const struct tk_hosts *hosts, const json_t *agg,
                         const char *ledger_dir) {
        char started[32];
        json_t *keys = json_array(), *host_list = json_array();
        json_t *unknown = json_object_get(agg, "unknown_key");
        json_auto_t *report = json_pack("{s:{s:s, s:s, s:I, s:I}, s:o, s:o, s:o}", "ledger", "dir", ledger_dir,
                                        "started", tk_ledger_iso_time(ms_of(agg, "started_ms"), started),
                                        "started_ms", (json_int_t) ms_of(agg, "started_ms"),
                                        "records", count_of(agg, "records"), "keys", keys, "hosts", host_list,
                                        "unknown_key", unknown ? json_incref(unknown) : json_object());
        if (!report || add_keys(keys, ks, hosts, agg) < 0 || add_hosts(host_list, hosts, agg) < 0)
                return NULL;
        return json_incref(report);
}
