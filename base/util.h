/* Small helpers every layer uses: one definition each. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* CLOCK_MONOTONIC in milliseconds. */
int64_t tc_now_ms(void);

/* Wipes len bytes of p, then frees it; NULL is fine. For every buffer that
 * held a key, a share or a plaintext. */
void tc_secret_free(void *p, size_t len);

/* Whether s ends in suffix. */
bool tc_has_suffix(const char *s, const char *suffix);
