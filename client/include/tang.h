/* Talking to a tang server: fetching and verifying its advertisement.
 * Shared by the tang pin and tether-keys show --url. */
#pragma once

#include <jansson.h>

#include "ctx.h"
#include "err.h"

/* GET url/adv/ (or url/adv/thp) and verify that every advertised signing
 * key signed it. Returns the JWS and its verified payload ({"keys":[..]}). */
int tc_tang_fetch_adv(const struct tc_ctx *ctx, const char *url, const char *thp, json_t **jws, json_t **payload,
                      struct tc_err *err);

/* GET url/adv/thp: 1 if the server still has signing key thp (advertised
 * or rotated, i.e. hidden), 0 if it answers 404 (it no longer has it), < 0
 * with err saying why if it cannot be asked or answers something else. */
int tc_tang_has_key(const struct tc_ctx *ctx, const char *url, const char *thp, struct tc_err *err);

/* Parses the body of an /adv reply from where and verifies it (what
 * tc_tang_fetch_adv does with the server's answer). */
int tc_tang_parse_adv(const char *body, size_t len, const char *where, json_t **jws, json_t **payload,
                      struct tc_err *err);

/* Verifies a JWS advertisement already in hand (config "adv"). */
int tc_tang_verify_adv(const json_t *jws, const char *where, json_t **payload, struct tc_err *err);

/* The payload's keys that explicitly permit op ("verify", "deriveKey"). */
json_t *tc_tang_keys_for(const json_t *payload, const char *op);
