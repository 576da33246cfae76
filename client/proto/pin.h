/* The pin interface: one file per pin (pin-tang.c, pin-sss.c, pin-null.c,
 * pin-external.c), dispatched by name from tether.c. */
#pragma once

#include <stdbool.h>
#include <jansson.h>

#include "ctx.h"
#include "err.h"
#include "jwe.h"

struct tc_pin {
        const char *name;
        int (*encrypt)(const struct tc_ctx *ctx, const json_t *cfg, const uint8_t *pt, size_t pt_len, char **jwe,
                       struct tc_err *err);
        int (*decrypt)(const struct tc_ctx *ctx, const struct tc_jwe *jwe, uint8_t **pt, size_t *pt_len,
                       struct tc_err *err);
};

extern const struct tc_pin tc_pin_tang;
extern const struct tc_pin tc_pin_sss;
extern const struct tc_pin tc_pin_null;

const struct tc_pin *tc_pin_find(const char *name);

/* Encrypts with a configuration already parsed: what sss uses for its
 * children (which it decrypts with tc_decrypt_node). */
int tc_encrypt_json(const struct tc_ctx *ctx, const char *pin, const json_t *cfg, const uint8_t *pt, size_t pt_len,
                    char **jwe, struct tc_err *err);

/* A JWE and, for sss, its children to any depth: each header decoded once,
 * the whole tree bounded (TC_SSS_MAX_DEPTH, TC_SSS_MAX_LEAVES) before any
 * pin is asked. */
struct tc_jwe_node {
        const char *compact;       /* borrowed from the caller or the parent's header */
        size_t len;
        char *pin;                 /* header.clevis.pin, or NULL */
        bool external;             /* handed as text to clevis-decrypt-PIN */
        struct tc_jwe jwe;         /* parsed, for the built-in pins */
        int r;                     /* < 0: this JWE is malformed, err says how;
                                    * as an sss child it fails alone */
        struct tc_err err;
};

/* Fails (for the whole tree) when it is too deep or has too many leaves, or
 * when the top JWE is malformed; a malformed child is kept with its error. */
int tc_jwe_tree_parse(const char *compact, size_t len, struct tc_jwe_node *root, struct tc_err *err);
void tc_jwe_tree_clear(struct tc_jwe_node *root);
int tc_decrypt_node(const struct tc_ctx *ctx, const struct tc_jwe_node *node, uint8_t **pt, size_t *pt_len,
                    struct tc_err *err);

/* Refuses a key a built-in pin does not know (and, for sss, in any child
 * of a built-in pin, to any depth): a misspelled "thp" must not bind with
 * no thumbprint check. Other pins' configurations are theirs to check. */
int tc_pin_config_check(const char *pin, const json_t *cfg, struct tc_err *err);

/* The pin named in a compact JWE's protected header (caller frees), or
 * NULL; what tc_decrypt dispatches on. */
char *tc_peek_pin(const char *compact, size_t len);

/* Clevis's external pins: clevis-encrypt-PIN CFG [-y] / clevis-decrypt-PIN
 * from ctx->pin_path (TETHER_PIN_PATH) and /usr/local/bin, /usr/bin, /bin (never PATH),
 * plaintext or JWE on stdin, with a cleaned environment, within
 * ctx->attempts x ctx->timeout_ms and until ctx is cancelled. -ENOENT when
 * not installed. */
int tc_external_encrypt(const struct tc_ctx *ctx, const char *pin, const json_t *cfg, const uint8_t *pt,
                        size_t pt_len, char **jwe, struct tc_err *err);
int tc_external_decrypt(const struct tc_ctx *ctx, const char *pin, const char *compact, size_t len, uint8_t **pt,
                        size_t *pt_len, struct tc_err *err);
