/* tetherd's usage ledger writer: every /rec answer goes into a bounded
 * in-memory queue (ledger_observe, on the connection's thread: a copy under
 * a short lock, no I/O, never waits for the disk), and a thread of its own
 * appends the queued records to the ledger directory (format:
 * keys/ledger.h), fsyncs about once a second and writes a snapshot about
 * once a minute. A full queue drops records and counts them (logged at
 * most once a second). */
#pragma once

#include "cleanup.h"

#include "err.h"
#include "observe.h"

struct ledger;

/* Opens (creates with mode 0700 when missing) the ledger directory dir,
 * which must not lie inside keydir (the key directory holds only keys:
 * tetherd and tang read every *.jwk of it, and copying or migrating it
 * must not copy the ledger), replays it and starts the writer thread.
 * A torn tail of the last segment is cut off before anything is appended. */
int ledger_open(const char *dir, const char *keydir, struct ledger **ret, struct tc_err *err);

/* The request observer (request_observer_fn) with a struct ledger *. */
void ledger_observe(void *userdata, const struct request_record *r);

/* Writes what is queued, fsyncs, writes the snapshot, stops the thread and
 * frees l. NULL is fine. */
void ledger_close(struct ledger *l);
TC_DEFINE_CLEANUP(struct ledger *, ledger_close)
