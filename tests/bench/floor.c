/* floor PLAINTEXT-FILE
 *
 * The least a `tether decrypt` of a tang JWE can cost on this machine: the
 * libraries tether links (linked the same way, so their constructors run)
 * and the cryptography of one recovery, with no network, no JSON parsing and
 * no tether code: OpenSSL's random generator, SHA-256 (the Concat KDF),
 * AES-256-GCM, and the three P-521 multiplications of a McCallum-Relyea
 * exchange (the client's ephemeral key, the server's answer, the client's
 * unblinding). Then it prints PLAINTEXT-FILE, so that the bench's timer
 * (interleave.c) checks its output as it checks tether's and clevis's.
 *
 * bench-client also builds it with one HTTP client library more (libcurl,
 * neon, serf, libsoup...) to price each candidate's start-up. Bench helper
 * only. */
#define OPENSSL_SUPPRESS_DEPRECATED /* EC_KEY: the point arithmetic tether does */
#include <stdio.h>
#include <stdlib.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

static int fail(const char *what) {
        fprintf(stderr, "floor: %s failed\n", what);
        return 1;
}

static int multiplications(void) {
        EC_KEY *ephemeral = EC_KEY_new_by_curve_name(NID_secp521r1);
        if (!ephemeral || !EC_KEY_generate_key(ephemeral))
                return -1;
        const EC_GROUP *g = EC_KEY_get0_group(ephemeral);
        EC_POINT *p = EC_POINT_new(g);
        int ok = p && EC_POINT_mul(g, p, NULL, EC_KEY_get0_public_key(ephemeral), EC_KEY_get0_private_key(ephemeral),
                                   NULL) &&
                 EC_POINT_mul(g, p, NULL, p, EC_KEY_get0_private_key(ephemeral), NULL);
        EC_POINT_free(p);
        EC_KEY_free(ephemeral);
        return ok ? 0 : -1;
}

static int aes_gcm(const unsigned char key[32]) {
        unsigned char iv[12] = { 0 }, in[16] = { 0 }, out[32], tag[16];
        int n = 0, ok;
        EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
        ok = c && EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, iv) &&
             EVP_EncryptUpdate(c, out, &n, in, sizeof(in)) && EVP_EncryptFinal_ex(c, out + n, &n) &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, sizeof(tag), tag);
        EVP_CIPHER_CTX_free(c);
        return ok ? 0 : -1;
}

int main(int argc, char **argv) {
        unsigned char seed[32], key[32];
        unsigned int key_len = 0;
        if (argc != 2)
                return fail("usage: floor PLAINTEXT-FILE;");
        if (RAND_bytes(seed, sizeof(seed)) != 1)
                return fail("RAND_bytes");
        if (!EVP_Digest(seed, sizeof(seed), key, &key_len, EVP_sha256(), NULL))
                return fail("SHA-256");
        if (multiplications() < 0)
                return fail("P-521");
        if (aes_gcm(key) < 0)
                return fail("AES-256-GCM");

        FILE *f = fopen(argv[1], "re");
        if (!f)
                return fail("opening the plaintext");
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
                fwrite(buf, 1, n, stdout);
        fclose(f);
        return 0;
}
