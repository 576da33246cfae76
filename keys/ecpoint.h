/* EC points as they appear in JWKs: base64url coordinates of fixed width.
 * Every point that comes from outside passes through ecpoint_decode, which
 * is the one place that validates it before any secret touches it. */
#pragma once

#include <stddef.h>
#include <openssl/ec.h>

/* Longest coordinate we handle (P-521: 66 bytes) and its base64url text. */
#define ECPOINT_MAX_COORD 66
#define ECPOINT_MAX_B64 88

/* A curve we handle: its JWK name and OpenSSL's NID for it. */
struct ecpoint_curve {
        const char *crv;   /* "P-256", "P-384", "P-521": a static string */
        int nid;
};

/* The curve a JWK's crv names, or NULL (crv NULL or unsupported). */
const struct ecpoint_curve *ecpoint_curve(const char *crv);
/* Its NID, or NID_undef. */
int ecpoint_curve_nid(const char *crv);
size_t ecpoint_coord_len(const EC_GROUP *group);

/* Decodes and validates (x, y): proper base64url, no longer than the curve's
 * coordinate width, both coordinates < p, point on the curve (which also
 * excludes infinity; all supported curves have cofactor 1). Returns 0 or
 * -EINVAL. */
int ecpoint_decode(const EC_GROUP *group, const char *x_b64, size_t x_len,
                   const char *y_b64, size_t y_len, BN_CTX *ctx, EC_POINT **ret);

/* Writes x and y as fixed-width base64url, NUL-terminated, into buffers of
 * at least ECPOINT_MAX_B64 + 1 bytes. */
int ecpoint_encode(const EC_GROUP *group, const EC_POINT *p, BN_CTX *ctx,
                   char *x_b64, char *y_b64);
