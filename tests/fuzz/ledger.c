/* The usage ledger's reader: tk_ledger_decode over the bytes of one segment,
 * record after record as a replay reads them, then the same bytes as the
 * only segment of a ledger directory (in the harness's temporary directory)
 * through tk_ledger_load, as tetherd and `tether-keys usage` replay it.
 *
 * Input: one mode byte, then the content of seg-0000000000000000.log. With
 * an odd mode byte the harness first sets the CRC of every record it can
 * walk to (by the length fields) to the right one: a mutation almost never
 * keeps a CRC-32 right by itself, and without that the fields, the
 * aggregate and the replay of them would see only the seeds' records. With
 * an even one the bytes go as they are (torn and garbled records).
 *
 * Properties: a record
 * decodes to exactly its own bytes (re-encoding it gives them back), every
 * proper prefix of it is a torn tail (0, never corrupt nor another record),
 * and the replay stops where the decode loop stops, counts the same records
 * into the same aggregate and ignores exactly the rest; that aggregate
 * survives its snapshot.json (dumped and read back as
 * tk_ledger_snapshot_write and tk_ledger_load do, in memory: no fsync per
 * input). */
#include "fuzz.h"

#include "ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define NOW_MS 1700000000000

static int dfd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        (void) argc, (void) argv;
        dfd = open(fuzz_tmpdir(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        FUZZ_ASSERT(dfd >= 0);
        return 0;
}

static bool has_nul(const char *s, size_t len) {
        return memchr(s, '\0', len) != NULL;
}

/* Encoding the decoded fields again gives the record's bytes back, when
 * they can go through the encoder's C strings (no NUL inside). */
static void check_roundtrip(const uint8_t *rec, size_t len, const struct tk_ledger_record *r) {
        if (has_nul(r->outcome, r->outcome_len) || has_nul(r->key, r->key_len) || has_nul(r->host, r->host_len) ||
            has_nul(r->address, r->address_len))
                return;
        char *outcome = strndup(r->outcome, r->outcome_len), *key = strndup(r->key, r->key_len),
             *host = strndup(r->host, r->host_len), *address = strndup(r->address, r->address_len);
        uint8_t buf[TK_LEDGER_HEADER + TK_LEDGER_PAYLOAD_MAX + 64];
        FUZZ_ASSERT(outcome && key && host && address);
        ssize_t n = tk_ledger_encode(outcome, key, host, address, r->time_ms, buf, sizeof(buf));
        FUZZ_ASSERT(n == (ssize_t) len && memcmp(buf, rec, len) == 0);
        free(outcome), free(key), free(host), free(address);
}

static void check_record(const uint8_t *rec, size_t avail, ssize_t k, const struct tk_ledger_record *r) {
        size_t len = (size_t) k;
        FUZZ_ASSERT(len >= TK_LEDGER_HEADER + 1 + 8 + 4 && len <= TK_LEDGER_HEADER + TK_LEDGER_PAYLOAD_MAX);
        FUZZ_ASSERT(len <= avail);
        /* The fields lie one after the other inside the record. */
        const char *p = (const char *) rec + TK_LEDGER_HEADER + 1 + 8;
        FUZZ_ASSERT(r->outcome == p + 1);
        FUZZ_ASSERT(r->key == r->outcome + r->outcome_len + 1);
        FUZZ_ASSERT(r->host == r->key + r->key_len + 1);
        FUZZ_ASSERT(r->address == r->host + r->host_len + 1);
        FUZZ_ASSERT(r->address + r->address_len == (const char *) rec + len);
        /* Every shorter read of it is a torn tail. */
        struct tk_ledger_record t;
        FUZZ_ASSERT(tk_ledger_decode(rec, len - 1, &t) == 0);
        FUZZ_ASSERT(tk_ledger_decode(rec, TK_LEDGER_HEADER, &t) == 0);
        check_roundtrip(rec, len, r);
}

/* What the next start reads back from snapshot.json is what was written. */
static void check_snapshot(const json_t *agg) {
        char *text = json_dumps(agg, JSON_COMPACT | JSON_SORT_KEYS);
        FUZZ_ASSERT(text);
        json_error_t je;
        json_t *back = json_loads(text, 0, &je);
        if (!back)
                fprintf(stderr, "ledger: the snapshot does not load: %s\n", je.text);
        FUZZ_ASSERT(back && json_equal(back, agg));
        json_decref(back);
        free(text);
}

/* The input as the ledger's only segment: what tk_ledger_load makes of it. */
static void check_replay(const uint8_t *data, size_t size, size_t valid, json_int_t records, const json_t *agg) {
        char name[32];
        tk_ledger_segment_name(0, name);
        int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        FUZZ_ASSERT(fd >= 0);
        for (size_t done = 0; done < size;) {
                ssize_t k = write(fd, data + done, size - done);
                FUZZ_ASSERT(k > 0 || (k < 0 && errno == EINTR));
                if (k > 0)
                        done += (size_t) k;
        }
        close(fd);

        struct tk_ledger_state st;
        struct tc_err err = {};
        int r = tk_ledger_load(dfd, NOW_MS, &st, &err);
        if (r < 0)
                fprintf(stderr, "ledger: tk_ledger_load: %s\n", err.msg);
        FUZZ_ASSERT(r == 0);
        FUZZ_ASSERT(!st.have_snapshot && st.n_segments == 1 && st.last_segment == 0);
        FUZZ_ASSERT(st.last_valid == valid && st.ignored_bytes == size - valid);
        FUZZ_ASSERT(json_integer_value(json_object_get(st.agg, "records")) == records);
        FUZZ_ASSERT(json_equal(st.agg, agg));
        tk_ledger_state_clear(&st);
        FUZZ_ASSERT(unlinkat(dfd, name, 0) == 0);
}

static uint32_t get_u32(const uint8_t *p) {
        return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24;
}

static void fix_crcs(uint8_t *buf, size_t size) {
        size_t pos = 0;
        while (size - pos >= TK_LEDGER_HEADER) {
                uint32_t n = get_u32(buf + pos);
                if (n == 0 || n > TK_LEDGER_PAYLOAD_MAX || size - pos - TK_LEDGER_HEADER < n)
                        return;
                uint32_t crc = (uint32_t) crc32(crc32(0L, Z_NULL, 0), buf + pos + TK_LEDGER_HEADER, n);
                for (int i = 0; i < 4; i++)
                        buf[pos + 4 + i] = (uint8_t) (crc >> (8 * i));
                pos += TK_LEDGER_HEADER + n;
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size == 0)
                return 0;
        bool fix = data[0] & 1;
        data++, size--;
        /* Exact size: a read past the end is ASan's to report. */
        uint8_t *buf = (uint8_t *) fuzz_copy(data, size);
        if (fix)
                fix_crcs(buf, size);
        json_t *agg = tk_ledger_agg_new(NOW_MS);
        json_int_t records = 0;
        size_t pos = 0;
        bool agg_ok = true;

        FUZZ_ASSERT(agg);
        while (pos < size) {
                struct tk_ledger_record r;
                ssize_t k = tk_ledger_decode(buf + pos, size - pos, &r);
                FUZZ_ASSERT(k == 0 || k == -EBADMSG || k > 0);
                if (k <= 0)
                        break;
                check_record(buf + pos, size - pos, k, &r);
                if (tk_ledger_agg_add(agg, &r) < 0)
                        agg_ok = false;
                records++;
                pos += (size_t) k;
        }
        /* A record the aggregate cannot take makes the replay fail as a whole. */
        FUZZ_ASSERT(agg_ok);
        check_replay(buf, size, pos, records, agg);
        check_snapshot(agg);
        json_decref(agg);
        free(buf);
        return 0;
}
