/* The usage ledger's format: records, CRC, aggregate, snapshot, replay.
 * ledger.h describes the files. */
#include "ledger.h"
#include "hosts.h"
#include "keyset.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static void put_u32(uint8_t *p, uint32_t v) {
        for (int i = 0; i < 4; i++)
                p[i] = (uint8_t) (v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p) {
        return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24;
}

static uint32_t crc_of(const uint8_t *p, size_t len) {
        return (uint32_t) crc32(crc32(0L, Z_NULL, 0), p, (uInt) len);
}

static size_t put_str(uint8_t *p, const char *s) {
        size_t n = s ? strnlen(s, 255) : 0;
        p[0] = (uint8_t) n;
        if (n)
                memcpy(p + 1, s, n);
        return n + 1;
}

ssize_t tk_ledger_encode(const char *outcome, const char *key, const char *host, const char *address,
                         int64_t time_ms, uint8_t *buf, size_t size) {
        /* Every field fits: 1 + 8 + 4 * 256 < TK_LEDGER_PAYLOAD_MAX + ... is
         * checked below rather than assumed. */
        if (size < TK_LEDGER_HEADER + 1 + 8 + 4 * 256)
                return -ENOBUFS;
        uint8_t *p = buf + TK_LEDGER_HEADER;
        size_t n = 0;
        p[n++] = TK_LEDGER_VERSION;
        for (int i = 0; i < 8; i++)
                p[n++] = (uint8_t) ((uint64_t) time_ms >> (8 * i));
        n += put_str(p + n, outcome);
        n += put_str(p + n, key);
        n += put_str(p + n, host);
        n += put_str(p + n, address);
        if (n > TK_LEDGER_PAYLOAD_MAX)
                return -ENOBUFS;
        put_u32(buf, (uint32_t) n);
        put_u32(buf + 4, crc_of(p, n));
        return (ssize_t) (TK_LEDGER_HEADER + n);
}

/* What the writer puts in a field: outcome names, thumbprints, host names,
 * inet_ntop's text. Anything else (a NUL, a control character, bytes that
 * are not UTF-8) is a corrupt record even under a right CRC: the aggregate
 * is JSON, and such a byte made every replay fail ("out of memory" from a
 * JSON key jansson refuses), so tetherd --ledger would not start; a NUL
 * would make snapshot.json unreadable to the next start; and `tether-keys
 * usage` prints these fields to a terminal. */
static bool field_valid(const uint8_t *p, size_t len) {
        for (size_t i = 0; i < len; i++)
                if (p[i] < 0x21 || p[i] > 0x7e)
                        return false;
        return true;
}

ssize_t tk_ledger_decode(const uint8_t *buf, size_t len, struct tk_ledger_record *r) {
        if (len < TK_LEDGER_HEADER)
                return 0;
        uint32_t n = get_u32(buf);
        if (n < 1 + 8 + 4 || n > TK_LEDGER_PAYLOAD_MAX)
                return -EBADMSG;
        if (len - TK_LEDGER_HEADER < n)
                return 0;
        const uint8_t *p = buf + TK_LEDGER_HEADER;
        if (crc_of(p, n) != get_u32(buf + 4) || p[0] != TK_LEDGER_VERSION)
                return -EBADMSG;
        uint64_t t = 0;
        for (int i = 0; i < 8; i++)
                t |= (uint64_t) p[1 + i] << (8 * i);
        r->time_ms = (int64_t) t;
        size_t off = 9;
        const char **fields[] = { &r->outcome, &r->key, &r->host, &r->address };
        uint8_t *lens[] = { &r->outcome_len, &r->key_len, &r->host_len, &r->address_len };
        for (size_t i = 0; i < ELEMENTSOF(fields); i++) {
                if (off >= n || n - off - 1 < p[off] || !field_valid(p + off + 1, p[off]))
                        return -EBADMSG;
                *lens[i] = p[off];
                *fields[i] = (const char *) p + off + 1;
                off += 1 + (size_t) p[off];
        }
        if (off != n)
                return -EBADMSG;
        return (ssize_t) (TK_LEDGER_HEADER + n);
}

bool tk_ledger_is_recovery(const char *outcome, size_t len) {
        return (len == 9 && memcmp(outcome, "recovered", 9) == 0) || (len == 7 && memcmp(outcome, "allowed", 7) == 0);
}

json_t *tk_ledger_agg_new(int64_t started_ms) {
        return json_pack("{s:i, s:I, s:I, s:I, s:I, s:{}, s:{}, s:{}}", "version", TK_LEDGER_VERSION, "started_ms",
                         (json_int_t) started_ms, "segment", (json_int_t) 0, "offset", (json_int_t) 0, "records",
                         (json_int_t) 0, "unknown_key", "keys", "hosts");
}

static int incr(json_t *obj, const char *name, size_t name_len, json_int_t by) {
        json_t *v = json_object_getn(obj, name, name_len);
        if (v)
                return json_integer_set(v, json_integer_value(v) + by);
        return json_object_setn_new(obj, name, name_len, json_integer(by));
}

static int set_int(json_t *obj, const char *name, json_int_t value) {
        return json_object_set_new(obj, name, json_integer(value));
}

/* The entry name/len of the map obj[map], created empty when missing. */
static json_t *entry(json_t *agg, const char *map, const char *name, size_t len) {
        json_t *m = json_object_get(agg, map);
        if (!json_is_object(m))
                return NULL;
        json_t *e = json_object_getn(m, name, len);
        if (!e) {
                e = json_pack("{s:I, s:[], s:{}}", "recoveries", (json_int_t) 0, "addresses", "refused");
                if (!e || json_object_setn_new(m, name, len, e) < 0)
                        return NULL;
        }
        return e;
}

/* The address first, each at most once, TK_LEDGER_ADDRESSES of them. */
static int remember_address(json_t *e, const char *addr, size_t len) {
        json_t *a = json_object_get(e, "addresses");
        if (!json_is_array(a) || len == 0)
                return 0;
        for (size_t i = 0; i < json_array_size(a); i++) {
                json_t *v = json_array_get(a, i);
                if (json_string_length(v) == len && memcmp(json_string_value(v), addr, len) == 0) {
                        json_array_remove(a, i);
                        break;
                }
        }
        if (json_array_insert_new(a, 0, json_stringn(addr, len)) < 0)
                return -ENOMEM;
        while (json_array_size(a) > TK_LEDGER_ADDRESSES)
                json_array_remove(a, json_array_size(a) - 1);
        return 0;
}

static int count(json_t *e, const struct tk_ledger_record *r, bool host) {
        /* Any request naming the key, refused ones too (a held host still
         * needs it): prune keeps keys seen within its window. */
        if (json_integer_value(json_object_get(e, "seen_ms")) <= r->time_ms && set_int(e, "seen_ms", r->time_ms) < 0)
                return -ENOMEM;
        if (tk_ledger_is_recovery(r->outcome, r->outcome_len)) {
                json_t *first = json_object_get(e, "first_ms");
                if (incr(e, "recoveries", strlen("recoveries"), 1) < 0 ||
                    ((!first || json_integer_value(first) > r->time_ms) && set_int(e, "first_ms", r->time_ms) < 0) ||
                    (json_integer_value(json_object_get(e, "last_ms")) <= r->time_ms &&
                     set_int(e, "last_ms", r->time_ms) < 0) ||
                    remember_address(e, r->address, r->address_len) < 0)
                        return -ENOMEM;
        } else if (incr(json_object_get(e, "refused"), r->outcome, r->outcome_len, 1) < 0)
                return -ENOMEM;
        if (host && r->outcome_len == 4 && memcmp(r->outcome, "held", 4) == 0)
                return incr(e, "pending", strlen("pending"), 1) < 0 ? -ENOMEM : 0;
        if (host && r->outcome_len == 7 && memcmp(r->outcome, "allowed", 7) == 0)
                return set_int(e, "pending", 0) < 0 ? -ENOMEM : 0;
        return 0;
}

int tk_ledger_agg_add(json_t *agg, const struct tk_ledger_record *r) {
        if (incr(agg, "records", strlen("records"), 1) < 0)
                return -ENOMEM;
        if (r->key_len == 0) {
                json_t *u = json_object_get(agg, "unknown_key");
                if (!u || incr(u, r->outcome, r->outcome_len, 1) < 0)
                        return -ENOMEM;
        } else {
                json_t *e = entry(agg, "keys", r->key, r->key_len);
                if (!e || count(e, r, false) < 0)
                        return -ENOMEM;
        }
        if (r->host_len) {
                json_t *e = entry(agg, "hosts", r->host, r->host_len);
                if (!e || count(e, r, true) < 0)
                        return -ENOMEM;
        }
        return 0;
}

int64_t tk_ledger_segment_index(const char *name) {
        char hex[17];
        if (strlen(name) != 4 + 16 + 4 || strncmp(name, "seg-", 4) != 0 || strcmp(name + 20, ".log") != 0)
                return -1;
        memcpy(hex, name + 4, 16);
        hex[16] = '\0';
        if (strspn(hex, "0123456789abcdef") != 16)
                return -1;
        uint64_t v = strtoull(hex, NULL, 16);
        return v > INT64_MAX ? -1 : (int64_t) v;
}

void tk_ledger_segment_name(uint64_t index, char buf[static 32]) {
        snprintf(buf, 32, "seg-%016" PRIx64 ".log", index);
}

void tk_ledger_state_clear(struct tk_ledger_state *st) {
        json_decref(st->agg);
        *st = (struct tk_ledger_state) {};
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

/* Every segment index in dfd, sorted. */
static int list_segments(int dfd, uint64_t **ret, size_t *n_ret) {
        int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        _cleanup_closedir_ DIR *d = fdopendir(fd);
        if (!d) {
                close(fd);
                return -errno;
        }
        _cleanup_free_ uint64_t *v = NULL;
        size_t n = 0, cap = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                int64_t i = tk_ledger_segment_index(de->d_name);
                if (i < 0)
                        continue;
                if (n == cap) {
                        cap = cap ? 2 * cap : 16;
                        uint64_t *nv = realloc(v, cap * sizeof(*v));
                        if (!nv)
                                return -ENOMEM;
                        v = nv;
                }
                v[n++] = (uint64_t) i;
        }
        if (n > 1)      /* qsort's array may not be NULL, even empty */
                qsort(v, n, sizeof(*v), cmp_u64);
        *ret = TAKE_PTR(v);
        *n_ret = n;
        return 0;
}

/* Counts the records of segment index from offset on; *valid gets the end
 * of the last whole, valid record. */
static int replay_segment(int dfd, uint64_t index, uint64_t offset, json_t *agg, uint64_t *valid, uint64_t *ignored) {
        char name[32];
        tk_ledger_segment_name(index, name);
        _cleanup_close_ int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        struct stat st;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADF;
        uint64_t size = (uint64_t) st.st_size;
        *valid = offset < size ? offset : size;
        if (offset >= size) {
                return 0;
        }
        size_t len = (size_t) (size - offset);
        _cleanup_free_ uint8_t *buf = malloc(len ? len : 1);
        if (!buf)
                return -ENOMEM;
        size_t got = 0;
        while (got < len) {
                ssize_t k = pread(fd, buf + got, len - got, (off_t) (offset + got));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                if (k == 0)
                        break;
                got += (size_t) k;
        }
        size_t pos = 0;
        while (pos < got) {
                struct tk_ledger_record r;
                ssize_t k = tk_ledger_decode(buf + pos, got - pos, &r);
                if (k <= 0)
                        break;  /* a torn or corrupt tail: nothing after it is trusted */
                if (tk_ledger_agg_add(agg, &r) < 0)
                        return -ENOMEM;
                pos += (size_t) k;
        }
        *valid = offset + pos;
        *ignored += got - pos;
        return 0;
}

static int read_snapshot(int dfd, json_t **ret, struct tc_err *err) {
        _cleanup_close_ int fd = openat(dfd, TK_LEDGER_SNAPSHOT, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        json_error_t je;
        json_t *j = json_loadfd(fd, 0, &je);
        if (!j || !json_is_object(j) || json_integer_value(json_object_get(j, "version")) != TK_LEDGER_VERSION ||
            !json_is_integer(json_object_get(j, "started_ms")) || !json_is_integer(json_object_get(j, "segment")) ||
            !json_is_integer(json_object_get(j, "offset")) || !json_is_object(json_object_get(j, "keys")) ||
            !json_is_object(json_object_get(j, "hosts")) || !json_is_object(json_object_get(j, "unknown_key"))) {
                json_decref(j);
                return tc_fail(err, -EBADMSG, "%s is not a ledger snapshot of version %d%s%s; moved away, the "
                               "ledger is rebuilt from the segments left (what older ones held is lost)",
                               TK_LEDGER_SNAPSHOT, TK_LEDGER_VERSION, j ? "" : ": ", j ? "" : je.text);
        }
        *ret = j;
        return 0;
}

static int load_once(int dfd, int64_t now_ms, struct tk_ledger_state *st, struct tc_err *err) {
        _cleanup_free_ uint64_t *segs = NULL;
        size_t n = 0;
        json_t *agg = NULL;
        *st = (struct tk_ledger_state) {};

        int r = read_snapshot(dfd, &agg, err);
        if (r < 0 && r != -ENOENT)
                return r;
        st->have_snapshot = r == 0;
        r = list_segments(dfd, &segs, &n);
        if (r < 0) {
                json_decref(agg);
                return tc_fail(err, r, "cannot list the ledger directory: %s", strerror(-r));
        }
        if (!agg && n == 0)
                return tc_fail(err, -ENOENT, "no ledger here (neither %s nor a segment)", TK_LEDGER_SNAPSHOT);
        if (!agg && !(agg = tk_ledger_agg_new(now_ms)))
                return tc_fail(err, -ENOMEM, "out of memory");
        st->agg = agg;
        uint64_t from = (uint64_t) json_integer_value(json_object_get(agg, "segment"));
        uint64_t offset = (uint64_t) json_integer_value(json_object_get(agg, "offset"));
        st->last_segment = from;
        st->last_valid = offset;
        for (size_t i = 0; i < n; i++) {
                if (segs[i] < from)
                        continue;       /* counted in the snapshot; a deletion that did not finish */
                uint64_t valid = 0;
                r = replay_segment(dfd, segs[i], segs[i] == from ? offset : 0, agg, &valid, &st->ignored_bytes);
                if (r == -ENOENT) {
                        tk_ledger_state_clear(st);
                        return tc_fail(err, -ESTALE, "the ledger changed while it was read");
                }
                if (r < 0) {
                        char name[32];
                        tk_ledger_segment_name(segs[i], name);
                        tk_ledger_state_clear(st);
                        return tc_fail(err, r, "cannot read ledger segment %s: %s", name, strerror(-r));
                }
                st->n_segments++;
                st->last_segment = segs[i];
                st->last_valid = valid;
        }
        return 0;
}

int tk_ledger_load(int dfd, int64_t now_ms, struct tk_ledger_state *st, struct tc_err *err) {
        /* A running writer deletes the segments its new snapshot covers: a
         * segment gone between listing and reading means a newer snapshot
         * is there. */
        int r = -ESTALE;
        for (int i = 0; i < 3 && (r == -ESTALE); i++)
                r = load_once(dfd, now_ms, st, err);
        return r;
}

int tk_ledger_snapshot_write(int dfd, const json_t *agg, struct tc_err *err) {
        static const char tmp[] = TK_LEDGER_SNAPSHOT ".tmp";
        _cleanup_free_ char *text = json_dumps(agg, JSON_COMPACT | JSON_SORT_KEYS);
        if (!text)
                return tc_fail(err, -ENOMEM, "out of memory");
        (void) unlinkat(dfd, tmp, 0);
        _cleanup_close_ int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return tc_fail(err, -errno, "cannot create %s: %s", tmp, strerror(errno));
        size_t len = strlen(text), done = 0;
        while (done < len) {
                ssize_t k = write(fd, text + done, len - done);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        int e = errno;
                        (void) unlinkat(dfd, tmp, 0);
                        return tc_fail(err, -e, "cannot write %s: %s", tmp, strerror(e));
                }
                done += (size_t) k;
        }
        if (fsync(fd) < 0 || renameat(dfd, tmp, dfd, TK_LEDGER_SNAPSHOT) < 0) {
                int e = errno;
                (void) unlinkat(dfd, tmp, 0);
                return tc_fail(err, -e, "cannot put %s in place: %s", TK_LEDGER_SNAPSHOT, strerror(e));
        }
        /* The rename itself must survive a crash too. */
        if (fsync(dfd) < 0)
                return tc_fail(err, -errno, "cannot sync the ledger directory: %s", strerror(errno));
        return 0;
}

void tk_prune_plan_free(struct tk_prune_item *items) {
        free(items);
}

static int64_t ts_ms(const struct timespec *t) {
        return (int64_t) t->tv_sec * 1000 + t->tv_nsec / 1000000;
}

static int64_t seen_ms(const json_t *agg, const struct tk_key *k) {
        json_t *e = json_object_get(json_object_get(agg, "keys"), k->thp[TK_HASH_S256]);
        json_t *v = json_object_get(e, "seen_ms");
        return v ? json_integer_value(v) : -1;
}

/* Two keys hidden by the same rotation: rotate renames them one right after
 * the other. */
#define SAME_ROTATION_MS 1000

/* "3d 4h", "12h 5m", "90s": how long ms is, to the two largest units. */
static const char *span(int64_t ms, char buf[static 32]) {
        static const struct { const char *unit; int64_t ms; } units[] = {
                { "d", 86400000 }, { "h", 3600000 }, { "m", 60000 }, { "s", 1000 },
        };
        int64_t s = ms < 0 ? 0 : ms;
        for (size_t i = 0; i < ELEMENTSOF(units); i++)
                if (s >= units[i].ms || i + 1 == ELEMENTSOF(units)) {
                        int64_t a = s / units[i].ms, rest = i + 1 < ELEMENTSOF(units) ? (s % units[i].ms) / units[i + 1].ms : 0;
                        if (rest)
                                snprintf(buf, 32, "%" PRId64 "%s %" PRId64 "%s", a, units[i].unit, rest, units[i + 1].unit);
                        else
                                snprintf(buf, 32, "%" PRId64 "%s", a, units[i].unit);
                        break;
                }
        return buf;
}

/* A host exchange key (advertised or rotated) made before ms: its host's
 * bindings may pin a signing key advertised then. The key file's mtime is
 * when it was made: rotation renames it, which keeps the mtime. */
static const struct tk_host *host_key_before(const struct tk_hosts *hosts, int64_t ms, const struct tk_key **key) {
        for (size_t i = 0; hosts && i < hosts->n; i++) {
                const struct tk_keyset *hks = hosts->hosts[i].ks;
                for (size_t j = 0; hks && j < hks->n_keys; j++)
                        if (hks->keys[j].role == TK_ROLE_EXCHANGE && ts_ms(&hks->keys[j].id.mtime) < ms) {
                                *key = &hks->keys[j];
                                return &hosts->hosts[i];
                        }
        }
        return NULL;
}

int tk_ledger_prune_plan(const struct tk_keyset *ks, const struct tk_hosts *hosts, const json_t *agg, int64_t now_ms,
                         int64_t window_ms, struct tk_prune_item **ret, size_t *n_ret, struct tc_err *err) {
        int64_t started = json_integer_value(json_object_get(agg, "started_ms"));
        if (started > now_ms - window_ms)
        {
                char a[32], b[32], c[32];
                return tc_fail(err, -ERANGE, "the ledger started %s ago, less than the %s asked for: it cannot know "
                               "about recoveries before it existed, so it cannot tell which keys were unused that "
                               "long; wait %s more, or give a shorter --unused-for", span(now_ms - started, a),
                               span(window_ms, b), span(started - (now_ms - window_ms), c));
        }
        /* Records tetherd dropped (its queue full) named keys nobody knows:
         * any key may have been used then. */
        json_t *drop = json_object_get(agg, "last_drop_ms");
        if (json_is_integer(drop) && json_integer_value(drop) >= now_ms - window_ms) {
                char a[32], b[32], c[32];
                return tc_fail(err, -ERANGE, "tetherd dropped %" JSON_INTEGER_FORMAT " record(s) of the ledger "
                               "(its queue was full), the last %s ago, less than the %s asked for: any key may have "
                               "been used by them; wait %s more, or give a shorter --unused-for",
                               json_integer_value(json_object_get(agg, "dropped")),
                               span(now_ms - json_integer_value(drop), a), span(window_ms, b),
                               span(json_integer_value(drop) - (now_ms - window_ms) + 1, c));
        }
        struct tk_prune_item *items = calloc(ks->n_keys ? ks->n_keys : 1, sizeof(*items));
        if (!items)
                return tc_fail(err, -ENOMEM, "out of memory");
        size_t n = 0;
        /* Exchange keys first: a rotated signing key stays while an exchange
         * key of its rotation stays (clients bound to that one may pin the
         * signing key's thumbprint, and regen fetches /adv/THP). */
        for (int pass = 0; pass < 2; pass++)
                for (size_t i = 0; i < ks->n_keys; i++) {
                        const struct tk_key *k = &ks->keys[i];
                        if (!k->hidden || (pass == 0) != (k->role == TK_ROLE_EXCHANGE))
                                continue;
                        struct tk_prune_item *it = &items[n++];
                        char a[32], b[32];
                        it->key = k;
                        it->rotated_ms = ts_ms(&k->id.ctime);
                        it->seen_ms = seen_ms(agg, k);
                        if (k->role == TK_ROLE_OTHER) {
                                snprintf(it->why, sizeof(it->why), "neither signs nor derives: not a key this judges");
                                continue;
                        }
                        if (now_ms - it->rotated_ms < window_ms) {
                                snprintf(it->why, sizeof(it->why), "rotated %s ago, within the window",
                                         span(now_ms - it->rotated_ms, a));
                                continue;
                        }
                        if (it->seen_ms >= now_ms - window_ms) {
                                snprintf(it->why, sizeof(it->why), "used %s ago, within the window",
                                         span(now_ms - it->seen_ms, a));
                                continue;
                        }
                        if (k->role == TK_ROLE_SIGNING) {
                                const struct tk_prune_item *kept = NULL;
                                for (size_t j = 0; j < n && !kept; j++)
                                        if (items[j].key->role == TK_ROLE_EXCHANGE && !items[j].remove &&
                                            llabs(items[j].rotated_ms - it->rotated_ms) <= SAME_ROTATION_MS)
                                                kept = &items[j];
                                if (kept) {
                                        snprintf(it->why, sizeof(it->why),
                                                 "signs for the exchange key %s of the same rotation, which stays",
                                                 kept->key->thp[TK_HASH_S256]);
                                        continue;
                                }
                                const struct tk_key *hk = NULL;
                                const struct tk_host *h = host_key_before(hosts, it->rotated_ms, &hk);
                                if (h) {
                                        snprintf(it->why, sizeof(it->why),
                                                 "host %s's exchange key %.12s... predates its rotation: that host's "
                                                 "bindings may pin it (tether-keys host rotate %s, rebind, prune)",
                                                 h->name, hk->thp[TK_HASH_S256], h->name);
                                        continue;
                                }
                        }
                        it->remove = true;
                        if (it->seen_ms < 0)
                                snprintf(it->why, sizeof(it->why), "rotated %s ago, never used since the "
                                         "ledger started", span(now_ms - it->rotated_ms, a));
                        else
                                snprintf(it->why, sizeof(it->why), "rotated %s ago, last used %s ago",
                                         span(now_ms - it->rotated_ms, a), span(now_ms - it->seen_ms, b));
                }
        *ret = items;
        *n_ret = n;
        return 0;
}
