/* The McCallum-Relyea server operation: Y = sX. */
#pragma once

#include <stddef.h>
#include "keyset.h"

/* Parses and validates the client's JWK the way tang does (status code for
 * status code). Returns 0, or the HTTP status to answer with. On success
 * out holds NUL-terminated sorted compact JSON. */
int rec_check_request(const char *body, size_t len, json_t **req);
int rec_exchange(const struct tk_ecmr_key *key, const json_t *req, char *out, size_t outlen, size_t *written);
