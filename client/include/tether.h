/* The client library: Clevis-compatible encryption and decryption with the
 * tang, sss and null pins (and Clevis's external pin programs). No printing,
 * no exit(): every function returns 0 or a negative errno with a message in
 * err. The CLI, the LUKS commands, the token plugin and the password agent
 * are shells over this. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "ctx.h"
#include "err.h"
#include "util.h"

/* Encrypts pt with pin and its JSON config into a compact JWE
 * (NUL-terminated, caller frees). */
int tc_encrypt(const struct tc_ctx *ctx, const char *pin, const char *config, const uint8_t *pt, size_t pt_len,
               char **jwe, struct tc_err *err);

/* Decrypts a compact JWE. The plaintext is released with tc_secret_free().
 * Bounded in time as a whole: by ctx->deadline_ms if set, else from now by
 * tc_ctx_limit_ms(); past it, -ETIMEDOUT with a message saying so. */
int tc_decrypt(const struct tc_ctx *ctx, const char *jwe, size_t jwe_len, uint8_t **pt, size_t *pt_len,
               struct tc_err *err);

/* The pin configuration a JWE was made with (Clevis luks list's view, but
 * nothing dropped); *pin gets the top pin's name (caller frees). with_thp
 * adds each tang server's signing thumbprints. NULL if malformed. */
json_t *tc_jwe_config(const char *compact, bool with_thp, char **pin);
