/* Compact JWEs as Clevis writes them: A256GCM content encryption with the
 * protected header (base64url text exactly as received) as AAD, and an
 * empty encrypted_key (alg "dir" or "ECDH-ES"). Parsing is bounded and
 * separate from decryption. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "err.h"
#include "util.h"

#define TC_JWE_MAX (16 * 1024 * 1024)        /* whole compact JWE */
#define TC_JWE_HEADER_MAX (4 * 1024 * 1024)  /* protected header text; sss nests children here */
#define TC_JWE_HEADER_DEPTH 64               /* JSON nesting within one header */
/* sss trees across levels (each child is a JWE of its own, in its parent's
 * header): a tree nested deeper, or with more leaf pins in all, is refused
 * whole before any pin is asked, and never written. */
#define TC_SSS_MAX_DEPTH 16
#define TC_SSS_MAX_LEAVES 256
#define TC_CEK_LEN 32

struct tc_jwe_node;

struct tc_jwe {
        char *protected_b64;       /* AAD */
        json_t *header;            /* decoded protected header, an object */
        uint8_t iv[12];
        uint8_t *ciphertext;
        size_t ciphertext_len;
        uint8_t tag[16];
        /* An sss JWE's children, parsed with it by tc_jwe_tree_parse()
         * (owned by the tree, not freed by tc_jwe_clear). */
        struct tc_jwe_node *children;
        size_t n_children;
};

int tc_jwe_parse(const char *compact, size_t len, struct tc_jwe *jwe, struct tc_err *err);
/* The protected header alone (an object), as external pins need it: the
 * first part of compact, bounded in size and JSON depth. */
int tc_jwe_header_decode(const char *compact, size_t len, json_t **header, struct tc_err *err);
/* tc_jwe_parse() with the header tc_jwe_header_decode() returned, which it
 * takes over (also on failure): a header is decoded once. */
int tc_jwe_parse_decoded(const char *compact, size_t len, json_t *header, struct tc_jwe *jwe, struct tc_err *err);
void tc_jwe_clear(struct tc_jwe *jwe);
/* The pin name: header.clevis.pin, or NULL. */
const char *tc_jwe_pin(const struct tc_jwe *jwe);

/* Encrypts with header (serialized sorted and compact, as jose does) into a
 * compact JWE, NUL-terminated. */
int tc_jwe_encrypt(const json_t *header, const uint8_t cek[TC_CEK_LEN], const uint8_t *pt, size_t pt_len,
                   char **compact, struct tc_err *err);
/* Decrypts; the plaintext is wiped and freed with tc_secret_free(). */
int tc_jwe_decrypt(const struct tc_jwe *jwe, const uint8_t cek[TC_CEK_LEN], uint8_t **pt, size_t *pt_len,
                   struct tc_err *err);

/* ECDH-ES in direct key agreement mode: the Concat KDF of RFC 7518 4.6
 * over the shared x coordinate z, for enc "A256GCM", with apu/apv from the
 * header when present. */
int tc_jwe_ecdh_es_cek(const json_t *header, const uint8_t *z, size_t z_len, uint8_t cek[TC_CEK_LEN],
                       struct tc_err *err);

/* The content key of a "dir" JWK {"kty":"oct","k":...}: exactly 32 bytes. */
int tc_jwe_oct_cek(const json_t *jwk, uint8_t cek[TC_CEK_LEN], struct tc_err *err);

