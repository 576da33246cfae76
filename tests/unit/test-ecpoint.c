/* keys/ecpoint.c: the one gate every point from outside passes. */
#include "check.h"
#include "testutil.h"
#include "ecpoint.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/objects.h>

static EC_GROUP *p521, *p256;
static BN_CTX *ctx;

/* A P-521 point from an OpenSSL-generated key, with its coordinates. */
struct pt {
        BIGNUM *x, *y;
        char *xs, *ys;   /* fixed-width base64url */
};

static void pt_clear(struct pt *p) {
        BN_free(p->x);
        BN_free(p->y);
        free(p->xs);
        free(p->ys);
}

static bool pt_from_evp(struct pt *p) {
        EVP_PKEY *pk = EVP_EC_gen("P-521");
        bool ok = pk && EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_X, &p->x) &&
                  EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_Y, &p->y);
        EVP_PKEY_free(pk);
        if (!ok)
                return false;
        p->xs = tu_bn_b64(p->x, 66);
        p->ys = tu_bn_b64(p->y, 66);
        return p->xs && p->ys;
}

static int decode(const EC_GROUP *g, const char *x, const char *y, EC_POINT **ret) {
        return ecpoint_decode(g, x, x ? strlen(x) : 0, y, y ? strlen(y) : 0, ctx, ret);
}

/* Decodes (x, y) and expects a rejection that leaves *ret alone. */
static bool rejects(const EC_GROUP *g, const char *x, const char *y) {
        EC_POINT *p = NULL;
        int r = decode(g, x, y, &p);
        bool ok = r == -EINVAL && p == NULL;
        EC_POINT_free(p);
        return ok;
}

static BIGNUM *field_prime(const EC_GROUP *g) {
        BIGNUM *p = BN_new();
        EC_GROUP_get_curve(g, p, NULL, NULL, ctx);
        return p;
}

TEST(curve_names_map_to_openssl_nids) {
        CHECK_INT(ecpoint_curve_nid("P-256"), NID_X9_62_prime256v1);
        CHECK_INT(ecpoint_curve_nid("P-384"), NID_secp384r1);
        CHECK_INT(ecpoint_curve_nid("P-521"), NID_secp521r1);
        CHECK_INT(ecpoint_curve_nid("P-512"), NID_undef);
        CHECK_INT(ecpoint_curve_nid("p-521"), NID_undef);
        CHECK_INT(ecpoint_curve_nid("secp521r1"), NID_undef);
        CHECK_INT(ecpoint_curve_nid("secp256k1"), NID_undef);
        CHECK_INT(ecpoint_curve_nid(""), NID_undef);
        CHECK_INT(ecpoint_curve_nid(NULL), NID_undef);
        /* The name comes back as a static string: the client keeps it past the JWK. */
        char crv[] = "P-384";
        const struct ecpoint_curve *c = ecpoint_curve(crv);
        if (CHECK(c != NULL)) {
                CHECK(c->crv != crv);
                CHECK_STR(c->crv, "P-384");
                CHECK_INT(c->nid, NID_secp384r1);
        }
        CHECK(ecpoint_curve("P-512") == NULL);
        CHECK(ecpoint_curve(NULL) == NULL);
}

TEST(coordinate_width_per_curve) {
        EC_GROUP *p384 = EC_GROUP_new_by_curve_name(NID_secp384r1);
        CHECK_INT(ecpoint_coord_len(p521), 66);
        CHECK_INT(ecpoint_coord_len(p384), 48);
        CHECK_INT(ecpoint_coord_len(p256), 32);
        EC_GROUP_free(p384);
}

TEST(decode_accepts_valid_p521_point) {
        struct pt k = { 0 };
        EC_POINT *p = NULL;
        BIGNUM *x = BN_new(), *y = BN_new();

        if (CHECK(pt_from_evp(&k)) && CHECK_INT(strlen(k.xs), 88) &&
            CHECK_INT(decode(p521, k.xs, k.ys, &p), 0) && CHECK(p != NULL)) {
                CHECK(EC_POINT_get_affine_coordinates(p521, p, x, y, ctx));
                CHECK_INT(BN_cmp(x, k.x), 0);
                CHECK_INT(BN_cmp(y, k.y), 0);
        }
        EC_POINT_free(p);
        BN_free(x);
        BN_free(y);
        pt_clear(&k);
}

TEST(decode_rejects_point_off_curve) {
        struct pt k = { 0 };
        BIGNUM *y1 = BN_new();

        REQUIRE(pt_from_evp(&k));
        BN_add(y1, k.y, BN_value_one());
        char *ys = tu_bn_b64(y1, 66);
        CHECK(rejects(p521, k.xs, ys));
        /* Swapped coordinates are (almost surely) off the curve too. */
        CHECK(rejects(p521, k.ys, k.xs));
        free(ys);
        BN_free(y1);
        pt_clear(&k);
}

TEST(decode_rejects_point_at_infinity) {
        uint8_t zero[66] = { 0 };
        char *z = tu_b64(zero, sizeof(zero));
        CHECK_INT(strlen(z), 88);
        CHECK(rejects(p521, z, z));
        free(z);
}

TEST(decode_rejects_coordinates_not_below_p) {
        struct pt k = { 0 };
        BIGNUM *p = field_prime(p521), *big = BN_new();
        uint8_t ff[66];

        REQUIRE(pt_from_evp(&k));
        char *ps = tu_bn_b64(p, 66);
        CHECK(rejects(p521, ps, k.ys));
        CHECK(rejects(p521, k.xs, ps));
        CHECK(rejects(p521, ps, ps));

        /* x + p and y + p still fit in 66 bytes and are congruent to a
         * point on the curve: only the range check can refuse them. */
        BN_add(big, k.x, p);
        CHECK_INT(BN_num_bytes(big), 66);
        char *xp = tu_bn_b64(big, 66);
        CHECK(rejects(p521, xp, k.ys));
        BN_add(big, k.y, p);
        char *yp = tu_bn_b64(big, 66);
        CHECK(rejects(p521, k.xs, yp));

        memset(ff, 0xff, sizeof(ff));
        char *fs = tu_b64(ff, sizeof(ff));
        CHECK(rejects(p521, fs, k.ys));
        CHECK(rejects(p521, k.xs, fs));

        free(ps);
        free(xp);
        free(yp);
        free(fs);
        BN_free(p);
        BN_free(big);
        pt_clear(&k);
}

TEST(decode_rejects_67_byte_coordinate) {
        struct pt k = { 0 };
        uint8_t buf[67];

        REQUIRE(pt_from_evp(&k));
        /* The same number with one more leading zero byte: numerically a
         * valid coordinate, but wider than the curve allows. */
        buf[0] = 0;
        BN_bn2binpad(k.x, buf + 1, 66);
        char *x67 = tu_b64(buf, sizeof(buf));
        CHECK_INT(strlen(x67), 90);
        CHECK(rejects(p521, x67, k.ys));
        BN_bn2binpad(k.y, buf + 1, 66);
        char *y67 = tu_b64(buf, sizeof(buf));
        CHECK(rejects(p521, k.xs, y67));
        free(x67);
        free(y67);
        pt_clear(&k);
}

TEST(decode_rejects_wrong_length_base64url) {
        struct pt k = { 0 };
        char buf[1100];

        REQUIRE(pt_from_evp(&k));
        /* 89 characters: a length no base64url text can have. */
        snprintf(buf, sizeof(buf), "%sA", k.xs);
        CHECK(rejects(p521, buf, k.ys));
        snprintf(buf, sizeof(buf), "%sA", k.ys);
        CHECK(rejects(p521, k.xs, buf));
        /* 92 and 1000 characters of zeros: value 0..., far too wide. */
        memset(buf, 'A', 92);
        buf[92] = '\0';
        CHECK(rejects(p521, buf, k.ys));
        memset(buf, 'A', 1000);
        buf[1000] = '\0';
        CHECK(rejects(p521, k.xs, buf));
        /* A length argument shorter than the text: the tail is not read. */
        EC_POINT *p = NULL;
        CHECK_INT(ecpoint_decode(p521, k.xs, 87, k.ys, 88, ctx, &p), -EINVAL);
        CHECK(p == NULL);
        EC_POINT_free(p);
        pt_clear(&k);
}

TEST(decode_rejects_invalid_base64url_characters) {
        struct pt k = { 0 };
        const char bad[] = { '+', '/', '=', '.', ' ', '\n', '\x80' };
        char buf[100];

        REQUIRE(pt_from_evp(&k));
        for (size_t i = 0; i < sizeof(bad); i++) {
                strcpy(buf, k.xs);
                buf[10] = bad[i];
                if (!CHECK(rejects(p521, buf, k.ys)))
                        fprintf(stderr, "  accepted x with character 0x%02x\n", (unsigned char) bad[i]);
                strcpy(buf, k.ys);
                buf[87] = bad[i];
                if (!CHECK(rejects(p521, k.xs, buf)))
                        fprintf(stderr, "  accepted y with character 0x%02x\n", (unsigned char) bad[i]);
        }
        /* An embedded NUL inside the given length. */
        EC_POINT *p = NULL;
        strcpy(buf, k.xs);
        buf[40] = '\0';
        CHECK_INT(ecpoint_decode(p521, buf, 88, k.ys, 88, ctx, &p), -EINVAL);
        CHECK(p == NULL);
        EC_POINT_free(p);
        pt_clear(&k);
}

TEST(decode_rejects_padded_base64) {
        /* P-256 coordinates are 32 bytes: 43 characters, 44 with "=". */
        EC_POINT *q = tu_random_point(p256, NULL);
        char *x = NULL, *y = NULL, buf[64];

        REQUIRE(q && tu_point_b64(p256, q, &x, &y));
        CHECK_INT(strlen(x), 43);
        EC_POINT *p = NULL;
        CHECK_INT(decode(p256, x, y, &p), 0);
        EC_POINT_free(p);
        snprintf(buf, sizeof(buf), "%s=", x);
        CHECK(rejects(p256, buf, y));
        snprintf(buf, sizeof(buf), "%s=", y);
        CHECK(rejects(p256, x, buf));
        free(x);
        free(y);
        EC_POINT_free(q);
}

TEST(decode_rejects_missing_coordinates) {
        struct pt k = { 0 };
        REQUIRE(pt_from_evp(&k));
        CHECK(rejects(p521, NULL, k.ys));
        CHECK(rejects(p521, k.xs, NULL));
        CHECK(rejects(p521, NULL, NULL));
        CHECK(rejects(p521, "", k.ys));
        CHECK(rejects(p521, k.xs, ""));
        pt_clear(&k);
}

TEST(decode_rejects_point_of_another_curve) {
        EC_POINT *q = tu_random_point(p256, NULL);
        char *x = NULL, *y = NULL;
        struct pt k = { 0 };

        REQUIRE(q && tu_point_b64(p256, q, &x, &y) && pt_from_evp(&k));
        /* A P-256 point read as P-521 coordinates is not on P-521. */
        CHECK(rejects(p521, x, y));
        /* A P-521 point is too wide for P-256. */
        CHECK(rejects(p256, k.xs, k.ys));
        free(x);
        free(y);
        EC_POINT_free(q);
        pt_clear(&k);
}

/* Walks kG, (k+1)G, ... until the chosen coordinate is below 2^512, i.e.
 * its 66-byte form starts with two zero bytes (about 512 steps). */
static EC_POINT *point_with_small_coordinate(bool want_x) {
        EC_POINT *p = tu_random_point(p521, NULL);
        const EC_POINT *g = EC_GROUP_get0_generator(p521);
        BIGNUM *x = BN_new(), *y = BN_new();

        for (int i = 0; p && i < 200000; i++) {
                if (!EC_POINT_get_affine_coordinates(p521, p, x, y, ctx))
                        break;
                if (BN_num_bits(want_x ? x : y) <= 512) {
                        BN_free(x);
                        BN_free(y);
                        return p;
                }
                EC_POINT_add(p521, p, p, g, ctx);
        }
        EC_POINT_free(p);
        BN_free(x);
        BN_free(y);
        return NULL;
}

static void check_fixed_width(const char *b64, const BIGNUM *want) {
        uint8_t got[80], exp[66];
        CHECK_INT(strlen(b64), 88);
        size_t n = tu_unb64(b64, got, sizeof(got));
        CHECK_INT(n, 66);
        BN_bn2binpad(want, exp, 66);
        CHECK(n == 66 && memcmp(got, exp, 66) == 0);
}

TEST(encode_pads_coordinates_to_66_bytes) {
        char xs[ECPOINT_MAX_B64 + 1], ys[ECPOINT_MAX_B64 + 1];
        BIGNUM *x = BN_new(), *y = BN_new();

        for (int which = 0; which < 2; which++) {
                EC_POINT *p = point_with_small_coordinate(which == 0);
                if (!CHECK(p != NULL))
                        continue;
                EC_POINT_get_affine_coordinates(p521, p, x, y, ctx);
                CHECK(BN_num_bits(which == 0 ? x : y) <= 512);
                memset(xs, 'Z', sizeof(xs));
                memset(ys, 'Z', sizeof(ys));
                if (CHECK_INT(ecpoint_encode(p521, p, ctx, xs, ys), 0)) {
                        check_fixed_width(xs, x);
                        check_fixed_width(ys, y);
                        /* 16 zero bits: the text starts with two 'A's (12 bits). */
                        CHECK(strncmp(which == 0 ? xs : ys, "AA", 2) == 0);
                }
                EC_POINT_free(p);
        }
        BN_free(x);
        BN_free(y);
}

TEST(encode_p256_uses_32_bytes) {
        EC_POINT *p = tu_random_point(p256, NULL);
        char xs[ECPOINT_MAX_B64 + 1], ys[ECPOINT_MAX_B64 + 1];
        char *x = NULL, *y = NULL;

        REQUIRE(p && tu_point_b64(p256, p, &x, &y));
        CHECK_INT(ecpoint_encode(p256, p, ctx, xs, ys), 0);
        CHECK_STR(xs, x);
        CHECK_STR(ys, y);
        CHECK_INT(strlen(xs), 43);
        free(x);
        free(y);
        EC_POINT_free(p);
}

TEST(decode_accepts_what_encode_wrote) {
        EC_POINT *p = point_with_small_coordinate(true), *q = NULL;
        char xs[ECPOINT_MAX_B64 + 1], ys[ECPOINT_MAX_B64 + 1];
        BIGNUM *x = BN_new(), *y = BN_new();

        REQUIRE(p && ecpoint_encode(p521, p, ctx, xs, ys) == 0);
        CHECK_INT(decode(p521, xs, ys, &q), 0);
        CHECK(q && EC_POINT_cmp(p521, p, q, ctx) == 0);
        EC_POINT_free(q);
        q = NULL;

        /* The header promises only "no longer than" the width, as libjose
         * (and so tang) reads it: the 64-byte form of x < 2^512 is the same
         * point. */
        EC_POINT_get_affine_coordinates(p521, p, x, y, ctx);
        char *x64 = tu_bn_b64(x, 64);
        CHECK_INT(strlen(x64), 86);
        CHECK_INT(decode(p521, x64, ys, &q), 0);
        CHECK(q && EC_POINT_cmp(p521, p, q, ctx) == 0);
        EC_POINT_free(q);
        free(x64);
        BN_free(x);
        BN_free(y);
        EC_POINT_free(p);
}

SETUP {
        p521 = EC_GROUP_new_by_curve_name(NID_secp521r1);
        p256 = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
        ctx = BN_CTX_new();
        if (!p521 || !p256 || !ctx)
                return -1;
        return 0;
}

TEARDOWN {
        EC_GROUP_free(p521);
        EC_GROUP_free(p256);
        BN_CTX_free(ctx);
}
