/* The key directory as the server sees it: loaded, published atomically, and
 * reloaded when the directory changes, before the next request is answered. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdint.h>
#include "cleanup.h"
#include "served.h"

struct keystore;

typedef void (*keystore_log_fn)(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

int keystore_open(const char *dir, bool keygen, keystore_log_fn log, struct keystore **ret);
void keystore_close(struct keystore *ks);
TC_DEFINE_CLEANUP(struct keystore *, keystore_close)

/* The current key set, with a reference the caller drops with served_unref.
 * Applies pending directory changes first, so a change made before this call
 * is always visible. Never NULL. */
struct served *keystore_acquire(struct keystore *ks);

/* The key set being served now, with a reference, without applying pending
 * changes or creating keys: for readers that must not change what is
 * served (the metrics). Never NULL. */
struct served *keystore_current(struct keystore *ks);

/* How many times the key directory was loaded (the first load included),
 * and of them, how many failed and kept the keys loaded before. */
void keystore_reload_counts(const struct keystore *ks, uint64_t *loads, uint64_t *failures);

/* The key set being served now, with a reference, without applying pending
 * changes or creating keys: for readers that must not change what is
 * served (the metrics). Never NULL. */
struct served *keystore_current(struct keystore *ks);

/* How many times the key directory was loaded (the first load included),
 * and of them, how many failed, keeping the keys loaded before. */
void keystore_reload_counts(const struct keystore *ks, uint64_t *loads, uint64_t *failures);

/* For the main loop: readable when the directory changed. */
int keystore_watch_fd(const struct keystore *ks);
/* Applies pending changes (force: reload even without any). Never creates
 * keys: only a request (keystore_acquire) or the start does, as in tang. */
void keystore_refresh(struct keystore *ks, bool force);
/* For the main loop, before each wait: re-establishes the directory watch
 * after the directory was removed or replaced and drops the keys kept from
 * a removal once its window is over. Returns how long the loop may wait
 * (poll's timeout: -1, or milliseconds until the next look). */
int keystore_housekeep(struct keystore *ks);
