/* The McCallum-Relyea server operation: Y = sX. */
#pragma once

#include <stddef.h>
#include "keyset.h"

/* Parses the body of a /rec request and checks the client's JWK the way tang
 * does: returns 0 with the JWK in *req, or a negative errno: -EPERM when the
 * key does not permit deriveKey, -EINVAL when it is not JSON or not an EC key
 * for ECMR (rec_status() gives tang's status code for each). */
int rec_check_request(const char *body, size_t len, json_t **req);
/* Y = sX for the point X of req (validated here: on key's curve, and any
 * "d" the private key of X, as tang checks). Returns 0 with the answer, the
 * JWK of Y as NUL-terminated compact JSON, in out (*written bytes), or a
 * negative errno: -EINVAL when the point is not one of key's curve,
 * -ENOBUFS when out is too small. */
int rec_exchange(const struct tk_ecmr_key *key, const json_t *req, char *out, size_t outlen, size_t *written);
/* The status tang answers /rec with after one of the above returned r (status
 * code for status code): 200 for 0, 403, 400, else 500. */
int rec_status(int r);
