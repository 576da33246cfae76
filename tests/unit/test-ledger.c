/* keys/ledger.c: the record codec, its CRC, torn and corrupt tails, the
 * aggregate and the replay of a ledger directory. */
#include "check.h"
#include "testutil.h"
#include "ledger.h"

#include <fcntl.h>
#include <zlib.h>

static ssize_t enc(const char *outcome, const char *key, const char *host, const char *addr, int64_t t,
                   uint8_t *buf, size_t size) {
        return tk_ledger_encode(outcome, key, host, addr, t, buf, size);
}

TEST(ledger_record_round_trip) {
        uint8_t buf[2048];
        ssize_t n = enc("recovered", "thp-123", "web1", "192.0.2.7", 1796320479807LL, buf, sizeof(buf));
        REQUIRE(n > TK_LEDGER_HEADER);
        /* Length and CRC as documented: u32 LE each, zlib's CRC-32 of the payload. */
        uint32_t len = buf[0] | buf[1] << 8 | buf[2] << 16 | (uint32_t) buf[3] << 24;
        uint32_t crc = buf[4] | buf[5] << 8 | buf[6] << 16 | (uint32_t) buf[7] << 24;
        CHECK_INT(len, n - TK_LEDGER_HEADER);
        CHECK_INT(crc, crc32(0, buf + TK_LEDGER_HEADER, len));
        struct tk_ledger_record r;
        CHECK_INT(tk_ledger_decode(buf, (size_t) n, &r), n);
        CHECK_INT(r.time_ms, 1796320479807LL);
        CHECK(r.outcome_len == 9 && memcmp(r.outcome, "recovered", 9) == 0);
        CHECK(r.key_len == 7 && memcmp(r.key, "thp-123", 7) == 0);
        CHECK(r.host_len == 4 && memcmp(r.host, "web1", 4) == 0);
        CHECK(r.address_len == 9 && memcmp(r.address, "192.0.2.7", 9) == 0);
        /* NULL fields are empty. */
        n = enc("unknown_key", NULL, NULL, NULL, 1, buf, sizeof(buf));
        CHECK_INT(tk_ledger_decode(buf, (size_t) n, &r), n);
        CHECK(r.key_len == 0 && r.host_len == 0 && r.address_len == 0);
        /* Too small a buffer is refused, not overrun. */
        CHECK_INT(enc("recovered", "k", NULL, NULL, 1, buf, 100), -ENOBUFS);
}

TEST(ledger_torn_and_corrupt_records) {
        uint8_t buf[2048];
        struct tk_ledger_record r;
        ssize_t n = enc("recovered", "thp", "", "::1", 42, buf, sizeof(buf));
        REQUIRE(n > 0);
        /* Every proper prefix is a torn tail: "not yet", never a record. */
        for (ssize_t cut = 0; cut < n; cut++)
                CHECK_INT(tk_ledger_decode(buf, (size_t) cut, &r), 0);
        /* Any one flipped bit of the payload or the CRC is caught. */
        for (ssize_t i = 4; i < n; i++)
                for (int bit = 0; bit < 8; bit++) {
                        buf[i] ^= (uint8_t) (1 << bit);
                        if (!CHECK_INT(tk_ledger_decode(buf, (size_t) n, &r), -EBADMSG))
                                fprintf(stderr, "  byte %zd bit %d\n", i, bit);
                        buf[i] ^= (uint8_t) (1 << bit);
                }
        /* A length out of bounds is corrupt at once, without waiting for
         * bytes that would never come. */
        uint8_t big[8] = { 0xff, 0xff, 0, 0, 0, 0, 0, 0 }, zero[8] = {};
        CHECK_INT(tk_ledger_decode(big, sizeof(big), &r), -EBADMSG);
        CHECK_INT(tk_ledger_decode(zero, sizeof(zero), &r), -EBADMSG);
        /* A field length running past the payload (CRC made to match). */
        n = enc("recovered", "thp", "", "", 42, buf, sizeof(buf));
        buf[TK_LEDGER_HEADER + 9] = 200;
        uint32_t crc = (uint32_t) crc32(0, buf + TK_LEDGER_HEADER, (uInt) (n - TK_LEDGER_HEADER));
        for (int i = 0; i < 4; i++)
                buf[4 + i] = (uint8_t) (crc >> (8 * i));
        CHECK_INT(tk_ledger_decode(buf, (size_t) n, &r), -EBADMSG);
}

static void add(json_t *agg, const char *outcome, const char *key, const char *host, const char *addr, int64_t t) {
        uint8_t buf[2048];
        struct tk_ledger_record r;
        ssize_t n = enc(outcome, key, host, addr, t, buf, sizeof(buf));
        CHECK(n > 0 && tk_ledger_decode(buf, (size_t) n, &r) == n && tk_ledger_agg_add(agg, &r) == 0);
}

static json_int_t num(const json_t *agg, const char *map, const char *name, const char *field) {
        return json_integer_value(json_object_get(json_object_get(json_object_get(agg, map), name), field));
}

TEST(ledger_aggregate) {
        json_auto_t *agg = tk_ledger_agg_new(1000);
        REQUIRE(agg);
        const char *addrs[] = { "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.2" };
        for (size_t i = 0; i < ELEMENTS(addrs); i++)
                add(agg, "recovered", "K", NULL, addrs[i], 2000 + (int64_t) i);
        add(agg, "not_exchange", "K", NULL, "10.0.0.9", 1500);
        add(agg, "unknown_key", "", NULL, "10.0.0.9", 3000);
        CHECK_INT(num(agg, "keys", "K", "recoveries"), 6);
        CHECK_INT(num(agg, "keys", "K", "first_ms"), 2000);
        CHECK_INT(num(agg, "keys", "K", "last_ms"), 2005);
        CHECK_INT(num(agg, "keys", "K", "seen_ms"), 2005);
        /* The last 4 distinct addresses of recoveries, most recent first. */
        json_t *a = json_object_get(json_object_get(json_object_get(agg, "keys"), "K"), "addresses");
        REQUIRE(json_array_size(a) == TK_LEDGER_ADDRESSES);
        CHECK_STR(json_string_value(json_array_get(a, 0)), "10.0.0.2");
        CHECK_STR(json_string_value(json_array_get(a, 1)), "10.0.0.5");
        CHECK_STR(json_string_value(json_array_get(a, 3)), "10.0.0.3");
        CHECK_INT(json_integer_value(json_object_get(
                  json_object_get(json_object_get(json_object_get(agg, "keys"), "K"), "refused"), "not_exchange")), 1);
        CHECK_INT(json_integer_value(json_object_get(json_object_get(agg, "unknown_key"), "unknown_key")), 1);
        CHECK_INT(json_integer_value(json_object_get(agg, "records")), 8);
        /* Hosts: held requests pending until one is allowed. */
        add(agg, "held", "H", "web1", "10.0.0.7", 4000);
        add(agg, "held", "H", "web1", "10.0.0.7", 4001);
        CHECK_INT(num(agg, "hosts", "web1", "pending"), 2);
        CHECK_INT(num(agg, "hosts", "web1", "recoveries"), 0);
        add(agg, "allowed", "H", "web1", "10.0.0.7", 4002);
        CHECK_INT(num(agg, "hosts", "web1", "pending"), 0);
        CHECK_INT(num(agg, "hosts", "web1", "recoveries"), 1);
        CHECK_INT(num(agg, "keys", "H", "recoveries"), 1);
}

static void append_file(const char *dir, const char *name, const uint8_t *p, size_t len) {
        _cleanup_free_ char *path = NULL;
        REQUIRE(asprintf(&path, "%s/%s", dir, name) > 0);
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        REQUIRE(fd >= 0);
        CHECK(write(fd, p, len) == (ssize_t) len);
        close(fd);
}

/* A record whose CRC is right but whose fields hold bytes the writer never
 * writes (found by the ledger fuzzer: a key byte 0x92 made json_object_setn
 * refuse the key, so every replay failed with "out of memory" and tetherd
 * --ledger would not start) is corrupt: the replay stops there, as at any
 * corrupt record, and loads what came before. */
TEST(ledger_fields_beyond_printable_ascii_are_corrupt) {
        static const uint8_t bad[] = { 0x00, 0x0a, 0x1b, 0x20, 0x7f, 0x92, 0xff };
        uint8_t buf[2048];
        struct tk_ledger_record r;

        for (size_t field = 0; field < 4; field++)
                for (size_t b = 0; b < sizeof(bad); b++) {
                        char v[4][8] = { "held", "K", "web1", "::1" };
                        v[field][1] = 'x';   /* one placeholder byte, replaced below */
                        ssize_t n = enc(v[0], v[1], v[2], v[3], 42, buf, sizeof(buf));
                        REQUIRE(n > 0);
                        uint8_t *x = memchr(buf + TK_LEDGER_HEADER + 9, 'x', (size_t) n - TK_LEDGER_HEADER - 9);
                        REQUIRE(x);
                        *x = bad[b];
                        uint32_t crc = (uint32_t) crc32(0, buf + TK_LEDGER_HEADER, (uInt) (n - TK_LEDGER_HEADER));
                        for (int i = 0; i < 4; i++)
                                buf[4 + i] = (uint8_t) (crc >> (8 * i));
                        if (!CHECK_INT(tk_ledger_decode(buf, (size_t) n, &r), -EBADMSG))
                                fprintf(stderr, "  field %zu byte 0x%02x\n", field, bad[b]);
                }

        _cleanup_(tu_tmpdir_freep) char *dir = tu_mkdtemp();
        REQUIRE(dir);
        char seg0[32];
        tk_ledger_segment_name(0, seg0);
        ssize_t n = enc("recovered", "K", "web1", "192.0.2.1", 100, buf, sizeof(buf));
        append_file(dir, seg0, buf, (size_t) n);
        n = enc("recovered", "K\x92", "web1", "192.0.2.1", 101, buf, sizeof(buf));
        append_file(dir, seg0, buf, (size_t) n);
        int dfd = open(dir, O_RDONLY | O_DIRECTORY);
        REQUIRE(dfd >= 0);
        struct tk_ledger_state st;
        struct tc_err err = {};
        CHECK_INT(tk_ledger_load(dfd, 5, &st, &err), 0);
        CHECK_INT(num(st.agg, "keys", "K", "recoveries"), 1);
        CHECK_INT(st.ignored_bytes, n);
        tk_ledger_state_clear(&st);
        close(dfd);
}

TEST(ledger_replay_stops_at_a_torn_tail_and_goes_on_in_the_next_segment) {
        _cleanup_(tu_tmpdir_freep) char *dir = tu_mkdtemp();
        REQUIRE(dir);
        uint8_t buf[2048];
        char seg0[32], seg1[32];
        tk_ledger_segment_name(0, seg0);
        tk_ledger_segment_name(1, seg1);
        CHECK_STR(seg0, "seg-0000000000000000.log");
        CHECK_INT(tk_ledger_segment_index(seg1), 1);
        CHECK_INT(tk_ledger_segment_index("seg-000000000000000g.log"), -1);
        CHECK_INT(tk_ledger_segment_index("seg-0.log"), -1);
        struct tc_err err = {};
        int dfd = open(dir, O_RDONLY | O_DIRECTORY);
        REQUIRE(dfd >= 0);
        struct tk_ledger_state st;
        CHECK_INT(tk_ledger_load(dfd, 5, &st, &err), -ENOENT);

        ssize_t n = 0;
        for (int i = 0; i < 3; i++) {
                n = enc("recovered", "K", NULL, "10.0.0.1", 100 + i, buf, sizeof(buf));
                append_file(dir, seg0, buf, (size_t) n);
        }
        /* Half a record, then another record that must not be trusted. */
        append_file(dir, seg0, buf, (size_t) n / 2);
        append_file(dir, seg0, buf, (size_t) n);
        n = enc("recovered", "K", NULL, "10.0.0.1", 200, buf, sizeof(buf));
        append_file(dir, seg1, buf, (size_t) n);
        buf[n - 1] ^= 1;
        append_file(dir, seg1, buf, (size_t) n);

        CHECK_INT(tk_ledger_load(dfd, 5, &st, &err), 0);
        CHECK(!st.have_snapshot);
        CHECK_INT(num(st.agg, "keys", "K", "recoveries"), 4);
        CHECK_INT(json_integer_value(json_object_get(st.agg, "started_ms")), 5);
        CHECK_INT(st.last_segment, 1);
        CHECK_INT(st.last_valid, n);
        CHECK_INT(st.ignored_bytes, ((size_t) n / 2 + (size_t) n) + (size_t) n);

        /* A snapshot covering segment 0 and the first record of 1: replay
         * counts nothing twice. */
        CHECK(json_object_set_new(st.agg, "segment", json_integer(1)) == 0);
        CHECK(json_object_set_new(st.agg, "offset", json_integer(n)) == 0);
        CHECK_INT(tk_ledger_snapshot_write(dfd, st.agg, &err), 0);
        tk_ledger_state_clear(&st);
        CHECK_INT(tk_ledger_load(dfd, 5, &st, &err), 0);
        CHECK(st.have_snapshot);
        CHECK_INT(num(st.agg, "keys", "K", "recoveries"), 4);
        tk_ledger_state_clear(&st);

        /* A snapshot that is not one is an error that says so. */
        CHECK_INT(tu_write_str(dir, TK_LEDGER_SNAPSHOT, "{\"version\":7}"), 0);
        CHECK_INT(tk_ledger_load(dfd, 5, &st, &err), -EBADMSG);
        CHECK(strstr(err.msg, "not a ledger snapshot") != NULL);
        close(dfd);
}
