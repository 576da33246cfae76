/* tetherd's Prometheus metrics: counters fed by the request observer (C11
 * atomics, no lock on the request path) and the text exposition format
 * (0.0.4) built at scrape time from them, the key store's counters and the
 * key set being served. No I/O: metrics_http.c serves the text. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include "cleanup.h"
#include "keystore.h"
#include "observe.h"

/* Recoveries are counted per key for this many distinct keys at most (S256
 * thumbprints of the server's own keys, never request input): past it, a
 * key's recoveries count under their outcome only. */
#define METRICS_MAX_KEYS 1024

/* The latency histograms' upper bounds in seconds, from 0.5 ms to 5 s. */
#define METRICS_BUCKETS 13

struct metrics;

/* version: what tether_build_info names. Records the start time. */
int metrics_new(const char *version, struct metrics **ret);
void metrics_free(struct metrics *m);
TC_DEFINE_CLEANUP(struct metrics *, metrics_free)

/* A request_observer_fn (userdata: the struct metrics): counts one request. */
void metrics_observe(void *userdata, const struct request_record *r);

/* The exposition text of every metric now, NUL-terminated, into *ret (the
 * caller frees it) and its length into *len; ks may be NULL (no key or
 * reload metrics). Returns 0 or -ENOMEM. */
int metrics_format(struct metrics *m, struct keystore *ks, char **ret, size_t *len);
