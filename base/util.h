/* Small helpers every layer uses: one definition each. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* CLOCK_MONOTONIC in milliseconds. */
int64_t tc_now_ms(void);
/* Wall clock, for records people read; never for timeouts. */
int64_t tc_realtime_ms(void);

/* Wipes len bytes of p, then frees it; NULL is fine. For every buffer that
 * held a key, a share or a plaintext. */
void tc_secret_free(void *p, size_t len);
/* Doubles a secret buffer of *cap bytes holding len (4096 to start) without
 * realloc(), wiping the old one; -EMSGSIZE beyond max bytes. */
int tc_secret_grow(uint8_t **buf, size_t len, size_t *cap, size_t max);

/* Whether s ends in suffix. */
bool tc_has_suffix(const char *s, const char *suffix);
