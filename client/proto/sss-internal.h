/* The sss pin's untrusted-input steps, apart from the threads and child
 * pins of sss_decrypt: reading clevis.sss out of a JWE header, and turning
 * t shares into the plaintext. Exposed so that they can be tested and
 * fuzzed without a network. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <openssl/bn.h>

#include "err.h"
#include "jwe.h"

#define TC_SSS_MAX_CHILDREN 256
/* sss worker threads running at once in the process, all nodes together. */
#define TC_SSS_MAX_THREADS 32

struct tc_sss_header {
        size_t t;              /* shares needed, 1 to n */
        size_t n;              /* children */
        const json_t *jwes;    /* the children's JWEs, borrowed from the header */
        BIGNUM *p;
        size_t p_len;          /* bytes; a share is 2 * p_len */
};

/* Validates header.clevis.sss: t, p and the jwe array. */
int tc_sss_header_parse(const json_t *header, struct tc_sss_header *h, struct tc_err *err);
void tc_sss_header_clear(struct tc_sss_header *h);

/* Interpolates the content key from h->t shares of 2 * h->p_len bytes and
 * decrypts jwe with it. */
int tc_sss_combine(const struct tc_sss_header *h, const struct tc_jwe *jwe, const uint8_t *const *shares, uint8_t **pt,
                   size_t *pt_len, struct tc_err *err);

/* sss worker threads running now (for tests). */
unsigned tc_sss_workers(void);
