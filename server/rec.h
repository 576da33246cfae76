/* The McCallum-Relyea server operation: Y = sX. */
#pragma once

#include <stddef.h>
#include "keyset.h"

/* Parses the body of a /rec request and checks the client's JWK the way tang
 * does (status code for status code): returns 0 with the JWK in *req, or the
 * HTTP status to answer with. */
int rec_check_request(const char *body, size_t len, json_t **req);
/* Y = sX for the point X of req (validated here: on key's curve, and any
 * "d" the private key of X, as tang checks). Returns 0 with the answer, the
 * JWK of Y as NUL-terminated compact JSON, in out (*written bytes), or the
 * HTTP status to answer with. */
int rec_exchange(const struct tk_ecmr_key *key, const json_t *req, char *out, size_t outlen, size_t *written);
