/* The usage ledger: what tetherd's /rec did, kept on disk so that
 * `tether-keys usage` can tell which keys are still used and `tether-keys
 * prune` which rotated keys may go. This file is the format; server/ledger.c
 * is the writer (a thread of tetherd), programs/tether-keys the reader.
 * Nothing here prints or exits.
 *
 * A ledger directory holds:
 *
 *   seg-NNNNNNNNNNNNNNNN.log   segments, NNNN the 16-hex-digit index, from 0
 *                              up; records are only ever appended to the
 *                              highest one, which is closed at
 *                              TK_LEDGER_SEGMENT_MAX bytes and the next begun
 *   snapshot.json              the aggregate of every record up to a point
 *                              (segment index, byte offset), replaced
 *                              atomically (temporary file, fsync, rename,
 *                              fsync of the directory)
 *
 * A segment is a sequence of records, each
 *
 *   u32 LE  length of the payload (1..TK_LEDGER_PAYLOAD_MAX)
 *   u32 LE  CRC-32 (zlib's, IEEE 802.3) of the payload
 *   payload:
 *     u8      version (1)
 *     i64 LE  time, milliseconds since the epoch (when the answer was sent)
 *     u8 n + n bytes   outcome, one of server/routes.h's rec_outcome names
 *                      ("recovered", "held", ...)
 *     u8 n + n bytes   key: S256 thumbprint of the key the kid matched;
 *                      empty when it matched none ("unknown_key")
 *     u8 n + n bytes   host: the per-host route's host name; empty on the
 *                      shared routes
 *     u8 n + n bytes   the client's address as text (inet_ntop), may be empty
 *
 *   Every field's bytes are printable ASCII other than space (0x21..0x7e):
 *   a record holding any other byte is corrupt, whatever its CRC.
 *
 * The writer appends and fsyncs about once a second: a crash loses the last
 * second or two and can leave a torn or garbled tail on the highest segment.
 * A reader stops at the first record whose length is out of bounds, goes
 * past the end of the file or whose CRC does not match, and ignores the rest
 * of that segment; the writer truncates the segment there before it
 * appends again. Segments before the one the snapshot points into are
 * deleted once the snapshot is on disk, so replay at start-up reads one
 * snapshot and at most a few segments.
 *
 * snapshot.json: {"version":1, "started_ms": when this ledger was created
 * (it knows nothing from before), "segment": N, "offset": bytes of segment N
 * already counted, "records": total, "unknown_key": {outcome: count},
 * "keys": {thp: AGG}, "hosts": {host: AGG}}, with AGG = {"recoveries": n,
 * "first_ms", "last_ms": first and last recovery (absent: none),
 * "addresses": [the last TK_LEDGER_ADDRESSES distinct client addresses of
 * recoveries, most recent first], "refused": {outcome: count}, "pending":
 * held requests since the last allowed one (hosts only)}, and once tetherd
 * had to drop records (its queue full) "dropped": how many and
 * "last_drop_ms": when last. A recovery is the outcome "recovered" or
 * "allowed". */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "cleanup.h"
#include "err.h"

#define TK_LEDGER_VERSION 1
#define TK_LEDGER_HEADER 8
#define TK_LEDGER_PAYLOAD_MAX 1024
#define TK_LEDGER_SEGMENT_MAX (16u * 1024 * 1024)
#define TK_LEDGER_ADDRESSES 4
#define TK_LEDGER_SNAPSHOT "snapshot.json"

/* One record, decoded: the strings point into the buffer decoded from. */
struct tk_ledger_record {
        int64_t time_ms;
        const char *outcome, *key, *host, *address;
        uint8_t outcome_len, key_len, host_len, address_len;
};

/* Encodes r (strings NUL-terminated, NULL as empty; each cut to 255 bytes)
 * into buf: returns the bytes written (header included), or -ENOBUFS when
 * size is too small. */
ssize_t tk_ledger_encode(const char *outcome, const char *key, const char *host, const char *address,
                         int64_t time_ms, uint8_t *buf, size_t size);

/* Decodes the record at the start of buf: returns its length (header
 * included), 0 when buf ends before the record does (a torn tail), or
 * -EBADMSG when the record is corrupt (bad length, CRC, version, fields, a
 * byte outside 0x21..0x7e in a field).
 * r's strings point into buf and are not NUL-terminated: use the _len. */
ssize_t tk_ledger_decode(const uint8_t *buf, size_t len, struct tk_ledger_record *r);

/* The aggregate: the snapshot's JSON object (see above). */
json_t *tk_ledger_agg_new(int64_t started_ms);
/* Counts one record into agg. -ENOMEM only. */
int tk_ledger_agg_add(json_t *agg, const struct tk_ledger_record *r);

/* Index of a segment's file name, -1 when name is not one. */
int64_t tk_ledger_segment_index(const char *name);
void tk_ledger_segment_name(uint64_t index, char buf[static 32]);

/* What a replay found: the aggregate, the highest segment and the length
 * of its valid records (where the writer appends), records skipped
 * because they were torn or corrupt (bytes ignored), whether there was a
 * snapshot. */
struct tk_ledger_state {
        json_t *agg;
        bool have_snapshot;
        uint64_t last_segment;
        uint64_t last_valid;     /* bytes of the highest segment holding whole, valid records */
        uint64_t ignored_bytes;  /* torn or corrupt tails, over all segments */
        size_t n_segments;
};
void tk_ledger_state_clear(struct tk_ledger_state *st);

/* Reads the ledger directory dfd: snapshot.json (if any; else an empty
 * aggregate started at now_ms) plus every record after it. -ENOENT when the
 * directory holds neither a snapshot nor a segment (no ledger). err says
 * what was wrong with a snapshot that cannot be read. */
int tk_ledger_load(int dfd, int64_t now_ms, struct tk_ledger_state *st, struct tc_err *err);

/* Writes agg as snapshot.json in dfd atomically: temporary file, fsync,
 * rename, fsync of the directory. */
int tk_ledger_snapshot_write(int dfd, const json_t *agg, struct tc_err *err);

/* Whether outcome (len bytes) counts as a recovery. */
bool tk_ledger_is_recovery(const char *outcome, size_t len);

struct tk_key;
struct tk_keyset;
/* The report of `tether-keys usage`, computed from agg (the aggregate of
 * a replay) for every key of ks, every key and host of hosts (may be
 * NULL), and what the ledger saw and the directory no longer holds (state
 * "gone"): {"ledger": {"dir", "started", "started_ms", "records"},
 * "keys": [{file (relative to the key directory), thp, state (advertised,
 * rotated, gone), role, host (null for the shared keys), created,
 * rotated, recoveries, first_recovery, last_recovery, last_addresses,
 * refused, refused_total, and the times in _ms too}], "hosts": [{host,
 * state (active, revoked, held; gone: only in the ledger), allow_tokens,
 * recoveries, first_recovery, last_recovery, last_addresses, refused,
 * refused_total, pending}] sorted by name, "unknown_key": {outcome:
 * count}}. NULL: out of memory. */
struct tk_hosts;
json_t *tk_ledger_report(const struct tk_keyset *ks, const struct tk_hosts *hosts, const json_t *agg,
                         const char *ledger_dir);
/* "2026-12-03T17:54:39Z", or "-" for none (ms < 0). */
const char *tk_ledger_iso_time(int64_t ms, char buf[static 32]);

/* What prune would do with each rotated key of a key set. */
struct tk_prune_item {
        const struct tk_key *key;
        bool remove;
        int64_t rotated_ms;     /* the hidden file's ctime */
        int64_t seen_ms;        /* the last request naming the key, -1: none */
        char why[160];
};

/* Decides, for every rotated key of ks, whether it goes: an exchange key
 * when it was rotated at least window_ms before now_ms and no request named
 * it since then; a signing key the same, and when no exchange key hidden by
 * the same rotation stays, and, for the shared keys (hosts not NULL: every
 * host of the directory), no host has an exchange key made before that
 * rotation: such a host's bindings may pin the signing key (they pin the
 * shared signing key, with their own exchange key), and regen needs it to
 * vouch for the keys advertised now. Advertised keys are never in the plan. The
 * rotation time is the hidden file's ctime: the rename that hides a key
 * sets it, while the mtime stays the key's creation (a chmod or chown
 * later also moves the ctime, which only postpones pruning). -ERANGE when
 * the ledger is younger than the window (it cannot know what was used
 * before it existed), or dropped records within it. Free *ret with tk_prune_plan_free. */
int tk_ledger_prune_plan(const struct tk_keyset *ks, const struct tk_hosts *hosts, const json_t *agg, int64_t now_ms,
                         int64_t window_ms, struct tk_prune_item **ret, size_t *n_ret, struct tc_err *err);
void tk_prune_plan_free(struct tk_prune_item *items);
