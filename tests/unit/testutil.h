/* Helpers for the unit tests. Wherever a test compares against a value, the
 * value comes from here, computed without the code under test: base64url
 * and RFC 7638 thumbprints are written out by hand, points and scalars go
 * through OpenSSL directly. libjose is used only as the peer tang uses
 * (key generation, JWS verification). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ec.h>

#include "keyset.h"

/* A fresh directory /tmp/tether-unit-XXXXXX (malloc'd path), or NULL. */
char *tu_mkdtemp(void);
/* Removes dir and everything below it. */
void tu_rmrf(const char *dir);
/* Removes and frees a tu_mkdtemp directory: for
 * _cleanup_(tu_tmpdir_freep) char *dir = tu_mkdtemp(); */
void tu_tmpdir_free(char *dir);
TC_DEFINE_CLEANUP(char *, tu_tmpdir_free)

/* Writes text (len bytes) to dir/name; returns 0 or -1. */
int tu_write(const char *dir, const char *name, const char *text, size_t len);
int tu_write_str(const char *dir, const char *name, const char *text);
int tu_write_json(const char *dir, const char *name, const json_t *json);
/* Reads dir/name as JSON, or NULL. */
json_t *tu_read_json(const char *dir, const char *name);
/* Sorted names in dir except "." and "..": a malloc'd array of n strings. */
char **tu_list(const char *dir, size_t *n);
void tu_list_free(char **names, size_t n);

/* jose_jwk_gen of the given template, e.g. {"alg":"ES512"}; NULL on failure. */
json_t *tu_gen(const char *template_json);
#define TU_ES512 "{\"alg\":\"ES512\"}"
#define TU_ECMR "{\"alg\":\"ECMR\"}"
#define TU_ECMR_P256 "{\"alg\":\"ECMR\",\"crv\":\"P-256\"}"

/* One file of a test key directory: its name and where its JWK is. With a
 * template, tu_keydir generates the key into *jwk (and tu_keydir_free frees
 * it); without one, *jwk is a key the caller has, written as it is. */
struct tu_key {
        const char *file;
        const char *template_json;
        json_t **jwk;
};

/* A fresh directory (tu_mkdtemp) holding the n keys, loaded into *ks unless
 * ks is NULL; or NULL (and *ks NULL), with nothing left behind. */
char *tu_keydir(const struct tu_key *keys, size_t n, struct tk_keyset **ks);
/* Removes and frees dir, and the keys tu_keydir generated. */
void tu_keydir_free(char *dir, const struct tu_key *keys, size_t n);
/* The key ks loaded from file, or NULL. */
const struct tk_key *tu_find_key(const struct tk_keyset *ks, const char *file);
/* Whether jws verifies with the public half of jwk (kty, crv, x, y only),
 * as clevis checks an advertisement. */
bool tu_jws_verifies_with(const json_t *jws, const json_t *jwk);

/* base64url without padding (RFC 4648 section 5), implemented here. */
char *tu_b64(const uint8_t *buf, size_t len);
/* Decodes unpadded base64url; returns the length or SIZE_MAX on error. */
size_t tu_unb64(const char *s, uint8_t *out, size_t outlen);
/* bn as exactly width big-endian bytes, base64url; NULL if it does not fit. */
char *tu_bn_b64(const BIGNUM *bn, size_t width);
/* A base64url string (of any width) as a number, or NULL. */
BIGNUM *tu_b64_bn(const char *s);

/* RFC 7638 thumbprint of an EC JWK, computed from the canonical JSON
 * {"crv":..,"kty":"EC","x":..,"y":..} with EVP; hash is S1..S512. */
char *tu_thumbprint(const json_t *jwk, const char *hash);

/* The group of a JWK's crv (P-256/P-384/P-521), or NULL. */
EC_GROUP *tu_jwk_group(const json_t *jwk);
/* The public point (x, y) of an EC JWK, decoded here, or NULL. */
EC_POINT *tu_jwk_point(const EC_GROUP *group, const json_t *jwk);
/* The private scalar d of an EC JWK, or NULL. */
BIGNUM *tu_jwk_d(const json_t *jwk);

/* Coordinates of p as fixed-width base64url (malloc'd into *x and *y). */
bool tu_point_b64(const EC_GROUP *group, const EC_POINT *p, char **x, char **y);
/* A client JWK {"alg":"ECMR","crv":crv,"key_ops":["deriveKey"],"kty":"EC",x,y}
 * for point p, as clevis sends it. */
json_t *tu_point_jwk(const EC_GROUP *group, const char *crv, const EC_POINT *p);
/* A random point kG on group (k discarded unless ret_k is given). */
EC_POINT *tu_random_point(const EC_GROUP *group, BIGNUM **ret_k);

/* Whether the JSON array ops holds exactly the given strings, in order. */
bool tu_ops_are(const json_t *ops, const char *const *want, size_t n);
