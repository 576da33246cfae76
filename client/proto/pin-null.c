/* The null pin: Clevis's test pin. The content key travels in the header
 * (no protection at all), or, with {"fail":true}, is left out so that
 * decryption fails. */
#include "cleanup.h"
#include "pin.h"

#include <errno.h>
#include <jose/b64.h>
#include <openssl/rand.h>

static int null_encrypt(const struct tc_ctx *ctx, const json_t *cfg, const uint8_t *pt, size_t pt_len, char **jwe,
                        struct tc_err *err) {
        uint8_t cek[TC_CEK_LEN];
        TC_CLEANUP_ERASE(cek);
        json_t *fail = json_object_get(cfg, "fail");
        (void) ctx;

        int r = tc_pin_config_check("null", cfg, err);
        if (r < 0)
                return r;
        if (fail && !json_is_boolean(fail))
                return tc_fail(err, -EINVAL, "null configuration: \"fail\" must be true or false");
        if (RAND_bytes(cek, sizeof(cek)) != 1)
                return tc_fail(err, -EIO, "no randomness for the content key");
        json_auto_t *header = json_pack("{s:s,s:s,s:{s:s,s:{}}}", "alg", "dir", "enc", "A256GCM", "clevis", "pin",
                                        "null", "null");
        json_auto_t *jwk = json_pack("{s:s,s:o,s:[ss],s:s}", "alg", "A256GCM", "k", jose_b64_enc(cek, sizeof(cek)),
                                     "key_ops", "encrypt", "decrypt", "kty", "oct");
        if (!header || !jwk ||
            (!json_is_true(fail) && json_object_set(json_object_get(json_object_get(header, "clevis"), "null"), "jwk", jwk) < 0))
                return tc_fail(err, -ENOMEM, "out of memory");
        return tc_jwe_encrypt(header, cek, pt, pt_len, jwe, err);
}

static int null_decrypt(const struct tc_ctx *ctx, const struct tc_jwe *jwe, uint8_t **pt, size_t *pt_len,
                        struct tc_err *err) {
        uint8_t cek[TC_CEK_LEN];
        TC_CLEANUP_ERASE(cek);
        (void) ctx;
        const json_t *jwk = json_object_get(json_object_get(json_object_get(jwe->header, "clevis"), "null"), "jwk");
        if (!jwk)
                return tc_fail(err, -EACCES, "null pin: the JWE holds no key (made with {\"fail\":true})");
        int r = tc_jwe_oct_cek(jwk, cek, err);
        return r < 0 ? r : tc_jwe_decrypt(jwe, cek, pt, pt_len, err);
}

const struct tc_pin tc_pin_null = {
        .name = "null",
        .encrypt = null_encrypt,
        .decrypt = null_decrypt,
};
