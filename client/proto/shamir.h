/* Shamir secret sharing over a prime field, as Clevis's sss pin does it:
 * a random 256-bit safe prime p, a polynomial of degree t-1 whose constant
 * term is the secret, shares x||y of |p| bytes each. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <openssl/bn.h>

#include "err.h"

#define TC_SSS_KEY_BYTES 32

struct tc_shamir {
        BIGNUM *p;
        BIGNUM **coeff;   /* coeff[0] is the secret */
        size_t t;
        size_t p_len;     /* bytes */
};

int tc_shamir_generate(struct tc_shamir *s, size_t t, struct tc_err *err);
void tc_shamir_clear(struct tc_shamir *s);
/* A share at a fresh random x: 2 * p_len bytes, x || y. */
int tc_shamir_share(const struct tc_shamir *s, uint8_t *out, struct tc_err *err);
/* The secret (constant term) as TC_SSS_KEY_BYTES bytes. */
int tc_shamir_secret(const struct tc_shamir *s, uint8_t out[TC_SSS_KEY_BYTES], struct tc_err *err);
/* Lagrange interpolation at 0 of t shares (each 2 * p_len bytes). */
int tc_shamir_recover(const BIGNUM *p, const uint8_t *const *shares, size_t t, uint8_t out[TC_SSS_KEY_BYTES],
                      struct tc_err *err);
