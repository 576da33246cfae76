/* The elliptic-curve steps of the tang pin, on OpenSSL: ephemeral keys,
 * point addition and subtraction (McCallum-Relyea), JWK <-> point. Every
 * point read from a JWK is validated (ecpoint_decode) before use. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>
#include <openssl/ec.h>

#include "err.h"

struct tc_ec {
        EC_GROUP *group;
        const char *crv;   /* static string */
        BN_CTX *bn;
};

int tc_ec_init(struct tc_ec *ec, const char *crv, struct tc_err *err);
void tc_ec_clear(struct tc_ec *ec);

/* Reads {"kty":"EC","crv":ec->crv,"x":..,"y":..}; what names the key in errors. */
int tc_ec_point_from_jwk(const struct tc_ec *ec, const json_t *jwk, const char *what, EC_POINT **ret,
                         struct tc_err *err);
/* {"crv","kty","x","y"} with fixed-width coordinates. */
json_t *tc_ec_point_to_jwk(const struct tc_ec *ec, const EC_POINT *p);

/* A fresh private scalar in [1, n-1] and its public point. */
int tc_ec_generate(const struct tc_ec *ec, BIGNUM **priv, EC_POINT **pub, struct tc_err *err);
/* r = k * p (p already validated). */
int tc_ec_mul(const struct tc_ec *ec, const BIGNUM *k, const EC_POINT *p, EC_POINT **ret, struct tc_err *err);
/* r = a + b, or a - b when subtract. */
int tc_ec_add(const struct tc_ec *ec, const EC_POINT *a, const EC_POINT *b, bool subtract, EC_POINT **ret,
              struct tc_err *err);
/* The x coordinate of p, fixed width, into a buffer of ECPOINT_MAX_COORD bytes; returns its length. */
int tc_ec_x_bytes(const struct tc_ec *ec, const EC_POINT *p, uint8_t *out, struct tc_err *err);
