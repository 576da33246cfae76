#include "jwe.h"
#include "cleanup.h"
#include "util.h"

#include <errno.h>
#include <string.h>
#include <jose/b64.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

void tc_jwe_clear(struct tc_jwe *jwe) {
        free(jwe->protected_b64);
        json_decref(jwe->header);
        free(jwe->ciphertext);
        memset(jwe, 0, sizeof(*jwe));
}

/* Decodes base64url text that must hold exactly want bytes into out (of at
 * least want bytes); anything else is -EINVAL. b64_alloc takes any length. */
static int b64_exact(const char *s, size_t len, uint8_t *out, size_t want) {
        size_t n = jose_b64_dec_buf(s, len, NULL, 0);
        if (n != want || jose_b64_dec_buf(s, len, out, want) != want)
                return -EINVAL;
        return 0;
}

/* Decodes base64url text of any length into a fresh buffer (caller frees). */
static int b64_alloc(const char *s, size_t len, uint8_t **out, size_t *out_len) {
        size_t n = jose_b64_dec_buf(s, len, NULL, 0);
        if (n == SIZE_MAX)
                return -EINVAL;
        uint8_t *buf = malloc(n ? n : 1);
        if (!buf)
                return -ENOMEM;
        if (jose_b64_dec_buf(s, len, buf, n) != n) {
                free(buf);
                return -EINVAL;
        }
        *out = buf;
        *out_len = n;
        return 0;
}

static bool json_depth_ok(const json_t *j, unsigned depth) {
        if (depth > TC_JWE_HEADER_DEPTH)
                return false;
        if (json_is_object(j)) {
                const char *k;
                json_t *v;
                json_object_foreach((json_t *) j, k, v)
                        if (!json_depth_ok(v, depth + 1))
                                return false;
        } else if (json_is_array(j)) {
                size_t i;
                json_t *v;
                json_array_foreach(j, i, v)
                        if (!json_depth_ok(v, depth + 1))
                                return false;
        }
        return true;
}

static size_t trimmed_len(const char *compact, size_t len) {
        while (len > 0 && (compact[len - 1] == '\n' || compact[len - 1] == '\r' || compact[len - 1] == ' '))
                len--;
        return len;
}

static int header_decode(const char *b64, size_t len, json_t **header, struct tc_err *err) {
        _cleanup_free_ uint8_t *hdr = NULL;
        size_t hdr_len = 0;

        *header = NULL;
        if (len > TC_JWE_HEADER_MAX)
                return tc_fail(err, -EMSGSIZE, "JWE header is larger than %d bytes", TC_JWE_HEADER_MAX);
        if (b64_alloc(b64, len, &hdr, &hdr_len) < 0)
                return tc_fail(err, -EINVAL, "JWE protected header is not base64url");
        json_t *h = json_loadb((const char *) hdr, hdr_len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(h) || !json_depth_ok(h, 0)) {
                json_decref(h);
                return tc_fail(err, -EINVAL, "JWE protected header is not a JSON object");
        }
        *header = h;
        return 0;
}

int tc_jwe_header_decode(const char *compact, size_t len, json_t **header, struct tc_err *err) {
        len = trimmed_len(compact, len);
        const char *dot = memchr(compact, '.', len);
        *header = NULL;
        if (!dot)
                return tc_fail(err, -EINVAL, "input is not a compact JWE (five base64url parts separated by dots)");
        return header_decode(compact, (size_t) (dot - compact), header, err);
}

int tc_jwe_parse_decoded(const char *compact, size_t len, json_t *header, struct tc_jwe *ret, struct tc_err *err) {
        _cleanup_(tc_jwe_clear) struct tc_jwe jwe = { .header = header };
        const char *part[5];
        size_t plen[5];
        size_t n = 0;
        int r;

        memset(ret, 0, sizeof(*ret));
        len = trimmed_len(compact, len);
        if (len > TC_JWE_MAX)
                return tc_fail(err, -EMSGSIZE, "JWE is larger than %d MiB, the most a JWE may be", TC_JWE_MAX >> 20);
        const char *p = compact, *end = compact + len;
        while (n < 5) {
                const char *dot = memchr(p, '.', (size_t) (end - p));
                part[n] = p;
                plen[n] = (size_t) ((dot ? dot : end) - p);
                n++;
                if (!dot)
                        break;
                p = dot + 1;
        }
        if (n != 5 || memchr(part[4], '.', plen[4]))
                return tc_fail(err, -EINVAL, "input is not a compact JWE (five base64url parts separated by dots)");
        if (plen[0] > TC_JWE_HEADER_MAX)
                return tc_fail(err, -EMSGSIZE, "JWE header is larger than %d bytes", TC_JWE_HEADER_MAX);
        if (plen[1] != 0)
                return tc_fail(err, -EINVAL, "JWE has an encrypted key; Clevis JWEs never do");
        if (!jwe.header && (r = header_decode(part[0], plen[0], &jwe.header, err)) < 0)
                return r;
        jwe.protected_b64 = strndup(part[0], plen[0]);
        if (!jwe.protected_b64)
                return tc_fail(err, -ENOMEM, "out of memory");
        if (b64_exact(part[2], plen[2], jwe.iv, sizeof(jwe.iv)) < 0 ||
            b64_exact(part[4], plen[4], jwe.tag, sizeof(jwe.tag)) < 0 ||
            b64_alloc(part[3], plen[3], &jwe.ciphertext, &jwe.ciphertext_len) < 0)
                return tc_fail(err, -EINVAL, "JWE IV, ciphertext or tag is malformed (A256GCM expects a 96-bit IV and a 128-bit tag)");
        /* enc points into the header, which lives until after the message is made. */
        const char *enc = json_string_value(json_object_get(jwe.header, "enc"));
        if (!enc || strcmp(enc, "A256GCM") != 0)
                return tc_fail(err, -EOPNOTSUPP, "JWE content encryption \"%s\" is not supported (Clevis uses A256GCM)",
                               enc ? enc : "(none)");
        *ret = TAKE_STRUCT(jwe);
        return 0;
}

int tc_jwe_parse(const char *compact, size_t len, struct tc_jwe *jwe, struct tc_err *err) {
        return tc_jwe_parse_decoded(compact, len, NULL, jwe, err);
}

const char *tc_jwe_pin(const struct tc_jwe *jwe) {
        return json_string_value(json_object_get(json_object_get(jwe->header, "clevis"), "pin"));
}

static char *b64_enc(const uint8_t *buf, size_t len) {
        size_t n = jose_b64_enc_buf(buf, len, NULL, 0);
        char *s = n == SIZE_MAX ? NULL : malloc(n + 1);
        if (!s)
                return NULL;
        jose_b64_enc_buf(buf, len, s, n);
        s[n] = '\0';
        return s;
}

int tc_jwe_encrypt(const json_t *header, const uint8_t cek[TC_CEK_LEN], const uint8_t *pt, size_t pt_len,
                   char **compact, struct tc_err *err) {
        _cleanup_free_ char *hdr = json_dumps(header, JSON_SORT_KEYS | JSON_COMPACT);
        _cleanup_free_ char *prot = NULL, *iv_b64 = NULL, *ct_b64 = NULL, *tag_b64 = NULL;
        _cleanup_free_ uint8_t *ct = NULL;
        _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
        uint8_t iv[12], tag[16];
        int outl = 0, finl = 0;

        if (pt_len > TC_JWE_MAX / 2)
                return tc_fail(err, -EMSGSIZE, "plaintext is larger than %d MiB, the most tether encrypts", TC_JWE_MAX >> 21);
        if (!hdr || !c || !(prot = b64_enc((const uint8_t *) hdr, strlen(hdr))) || !(ct = malloc(pt_len + 1)))
                return tc_fail(err, -ENOMEM, "out of memory");
        if (RAND_bytes(iv, sizeof(iv)) != 1)
                return tc_fail(err, -EIO, "no randomness for the IV");
        if (EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, cek, iv) != 1 ||
            EVP_EncryptUpdate(c, NULL, &outl, (const uint8_t *) prot, (int) strlen(prot)) != 1 ||
            EVP_EncryptUpdate(c, ct, &outl, pt, (int) pt_len) != 1 || EVP_EncryptFinal_ex(c, ct + outl, &finl) != 1 ||
            EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, sizeof(tag), tag) != 1)
                return tc_fail(err, -EIO, "AES-GCM encryption failed");
        if (!(iv_b64 = b64_enc(iv, sizeof(iv))) || !(ct_b64 = b64_enc(ct, (size_t) (outl + finl))) ||
            !(tag_b64 = b64_enc(tag, sizeof(tag))))
                return tc_fail(err, -ENOMEM, "out of memory");
        if (asprintf(compact, "%s..%s.%s.%s", prot, iv_b64, ct_b64, tag_b64) < 0)
                return tc_fail(err, -ENOMEM, "out of memory");
        return 0;
}

int tc_jwe_decrypt(const struct tc_jwe *jwe, const uint8_t cek[TC_CEK_LEN], uint8_t **pt, size_t *pt_len,
                   struct tc_err *err) {
        _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
        size_t size = jwe->ciphertext_len + 1;
        uint8_t *out = malloc(size);
        TC_CLEANUP_SECRET(out, size);
        int outl = 0, finl = 0;

        if (!c || !out)
                return tc_fail(err, -ENOMEM, "out of memory");
        if (EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, cek, jwe->iv) != 1 ||
            EVP_DecryptUpdate(c, NULL, &outl, (const uint8_t *) jwe->protected_b64, (int) strlen(jwe->protected_b64)) != 1 ||
            EVP_DecryptUpdate(c, out, &outl, jwe->ciphertext, (int) jwe->ciphertext_len) != 1 ||
            EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, sizeof(jwe->tag), (void *) jwe->tag) != 1 ||
            EVP_DecryptFinal_ex(c, out + outl, &finl) != 1)
                return tc_fail(err, -EBADMSG, "JWE authentication failed: wrong key, or the JWE was corrupted");
        *pt = TAKE_PTR(out);
        *pt_len = (size_t) (outl + finl);
        return 0;
}

static void put_be32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t) (v >> 24);
        p[1] = (uint8_t) (v >> 16);
        p[2] = (uint8_t) (v >> 8);
        p[3] = (uint8_t) v;
}

/* Hashes a length-prefixed field of the Concat KDF's OtherInfo. */
static int digest_field(EVP_MD_CTX *c, const uint8_t *data, size_t len) {
        uint8_t be[4];
        put_be32(be, (uint32_t) len);
        return EVP_DigestUpdate(c, be, 4) == 1 && (len == 0 || EVP_DigestUpdate(c, data, len) == 1) ? 0 : -EIO;
}

static int header_party_info(const json_t *header, const char *name, uint8_t **out, size_t *len) {
        const char *s = json_string_value(json_object_get(header, name));
        *out = NULL;
        *len = 0;
        if (!s)
                return 0;
        return b64_alloc(s, strlen(s), out, len);
}

int tc_jwe_ecdh_es_cek(const json_t *header, const uint8_t *z, size_t z_len, uint8_t cek[TC_CEK_LEN],
                       struct tc_err *err) {
        static const char alg_id[] = "A256GCM";
        _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *c = EVP_MD_CTX_new();
        _cleanup_free_ uint8_t *apu = NULL, *apv = NULL;
        size_t apu_len, apv_len;
        uint8_t counter[4], keydatalen[4];
        unsigned int dlen = 0;

        if (!c)
                return tc_fail(err, -ENOMEM, "out of memory");
        if (header_party_info(header, "apu", &apu, &apu_len) < 0 || header_party_info(header, "apv", &apv, &apv_len) < 0)
                return tc_fail(err, -EINVAL, "JWE apu/apv header is not base64url");
        put_be32(counter, 1);
        put_be32(keydatalen, TC_CEK_LEN * 8);
        /* One round of SHA-256 yields the 256-bit key. */
        if (EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1 || EVP_DigestUpdate(c, counter, 4) != 1 ||
            EVP_DigestUpdate(c, z, z_len) != 1 || digest_field(c, (const uint8_t *) alg_id, strlen(alg_id)) < 0 ||
            digest_field(c, apu, apu_len) < 0 || digest_field(c, apv, apv_len) < 0 ||
            EVP_DigestUpdate(c, keydatalen, 4) != 1 || EVP_DigestFinal_ex(c, cek, &dlen) != 1 || dlen != TC_CEK_LEN)
                return tc_fail(err, -EIO, "key derivation failed");
        return 0;
}

int tc_jwe_oct_cek(const json_t *jwk, uint8_t cek[TC_CEK_LEN], struct tc_err *err) {
        const char *kty = json_string_value(json_object_get(jwk, "kty"));
        const char *k = json_string_value(json_object_get(jwk, "k"));
        if (!kty || strcmp(kty, "oct") != 0 || !k)
                return tc_fail(err, -EINVAL, "content key is not a symmetric JWK");
        if (b64_exact(k, strlen(k), cek, TC_CEK_LEN) < 0)
                return tc_fail(err, -EINVAL, "content key is not a 256-bit key");
        return 0;
}
