/* JWE parsing in both serialisations the client reads: compact (tether
 * decrypt, sss children: tc_peek_pin, tc_jwe_parse, tc_jwe_config) and
 * flattened JSON (the "jwe" object of a LUKS2 clevis token, turned compact
 * by tc_luks_token_jwe). Then what decryption does with a parsed JWE short
 * of the network: the ECDH-ES key derivation over its apu/apv, AES-GCM with
 * its header as AAD, and the null pin end to end.
 *
 * Input: a compact JWE, or a flattened JSON JWE when it starts with '{'. */
#include "fuzz.h"

#include "jwe.h"
#include "luks.h"
#include "tether.h"
#include "pin.h"

#include <string.h>
#include <openssl/crypto.h>

static struct tc_ctx ctx;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        (void) argc, (void) argv;
        tc_ctx_init(&ctx);
        return 0;
}

/* Flattened JSON as it sits in a LUKS2 token; NULL if not convertible. */
static char *flattened_to_compact(const uint8_t *data, size_t size) {
        char *json = fuzz_cstring(data, size), *token = NULL, *compact = NULL;
        struct tc_err err;

        FUZZ_ASSERT(asprintf(&token, "{\"type\":\"clevis\",\"keyslots\":[],\"jwe\":%s}", json) > 0);
        if (tc_luks_token_jwe(token, &compact, &err) < 0)
                compact = NULL;
        free(token);
        free(json);
        return compact;
}

/* Parsed means: the header is an object, the AAD is the first part as given. */
static void check_parsed(const struct tc_jwe *jwe, const char *compact, size_t len) {
        const char *dot = memchr(compact, '.', len);
        FUZZ_ASSERT(dot);
        size_t first = (size_t) (dot - compact);
        FUZZ_ASSERT(json_is_object(jwe->header));
        FUZZ_ASSERT(strlen(jwe->protected_b64) == first);
        FUZZ_ASSERT(memcmp(jwe->protected_b64, compact, first) == 0);
        FUZZ_ASSERT(strcmp(json_string_value(json_object_get(jwe->header, "enc")), "A256GCM") == 0);
}

/* The pin tc_decrypt dispatches on is the pin of the parsed header. */
static void check_dispatch(const struct tc_jwe *jwe, const char *compact, size_t len) {
        char *peeked = tc_peek_pin(compact, len);
        const char *pin = tc_jwe_pin(jwe);
        FUZZ_ASSERT(!peeked == !pin);
        FUZZ_ASSERT(!pin || strcmp(peeked, pin) == 0);
        free(peeked);
}

/* A null-pin JWE that decrypts re-encrypts under its own header and key to
 * one that decrypts to the same plaintext. */
static void check_null_round_trip(const struct tc_jwe *jwe, const uint8_t *pt, size_t pt_len) {
        const json_t *jwk = json_object_get(json_object_get(json_object_get(jwe->header, "clevis"), "null"), "jwk");
        uint8_t cek[TC_CEK_LEN], *again = NULL;
        size_t again_len = 0;
        char *compact = NULL;
        struct tc_jwe copy;
        struct tc_err err;

        FUZZ_ASSERT(tc_jwe_oct_cek(jwk, cek, &err) == 0);
        FUZZ_ASSERT(tc_jwe_encrypt(jwe->header, cek, pt, pt_len, &compact, &err) == 0);
        FUZZ_ASSERT(tc_jwe_parse(compact, strlen(compact), &copy, &err) == 0);
        FUZZ_ASSERT(tc_pin_null.decrypt(&ctx, &copy, &again, &again_len, &err) == 0);
        FUZZ_ASSERT(again_len == pt_len && memcmp(again, pt, pt_len) == 0);
        tc_secret_free(again, again_len);
        tc_jwe_clear(&copy);
        free(compact);
        OPENSSL_cleanse(cek, sizeof(cek));
}

static void decrypt_offline(const struct tc_jwe *jwe) {
        static const uint8_t z[66] = { 1 };
        uint8_t cek[TC_CEK_LEN], *pt = NULL;
        size_t pt_len = 0;
        struct tc_err err;
        const char *pin = tc_jwe_pin(jwe);

        if (tc_jwe_ecdh_es_cek(jwe->header, z, sizeof(z), cek, &err) == 0 &&
            tc_jwe_decrypt(jwe, cek, &pt, &pt_len, &err) == 0)
                tc_secret_free(pt, pt_len);
        if (pin && strcmp(pin, "null") == 0 && tc_pin_null.decrypt(&ctx, jwe, &pt, &pt_len, &err) == 0) {
                check_null_round_trip(jwe, pt, pt_len);
                tc_secret_free(pt, pt_len);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *compact;
        size_t len;
        struct tc_jwe jwe;
        struct tc_err err;

        if (size > 0 && data[0] == '{') {
                if (!(compact = flattened_to_compact(data, size)))
                        return 0;
                len = strlen(compact);
        } else {
                compact = fuzz_copy(data, size);
                len = size;
        }
        if (tc_jwe_parse(compact, len, &jwe, &err) == 0) {
                check_parsed(&jwe, compact, len);
                check_dispatch(&jwe, compact, len);
                char *text = fuzz_cstring((const uint8_t *) compact, len);
                char *pin = NULL;
                json_t *cfg = tc_jwe_config(text, size % 2 == 1, &pin);
                FUZZ_ASSERT(!cfg || pin);
                json_decref(cfg);
                free(pin);
                free(text);
                decrypt_offline(&jwe);
                tc_jwe_clear(&jwe);
        }
        free(compact);
        return 0;
}
