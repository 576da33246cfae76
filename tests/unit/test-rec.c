/* server/rec.c: Y = sX, checked against OpenSSL, a fixed answer and the
 * McCallum-Relyea round trip a client performs. */
#include "check.h"
#include "testutil.h"
#include "kat.h"
#include "rec.h"
#include "routes.h"
#include "served.h"

#include <jose/jwk.h>
#include <openssl/objects.h>

static EC_GROUP *p521;
static BN_CTX *ctx;
static char *dir;
static json_t *exc, *p256_exc;
static struct tk_keyset *ks;
/* The exchange state ks loaded for exc and p256_exc. */
static const struct tk_ecmr_key *exc_key, *p256_key;

static const struct tu_key key_files[] = {
        { "exc.jwk", TU_ECMR, &exc },
        { "p256.jwk", TU_ECMR_P256, &p256_exc },
};

static const struct tk_ecmr_key *ecmr_of(const char *file) {
        const struct tk_key *k = tu_find_key(ks, file);
        return k ? k->ecmr : NULL;
}

/* What tang answers for Y, written out here. */
static char *expected_answer(const EC_GROUP *g, const char *crv, const EC_POINT *y) {
        _cleanup_free_ char *xs = NULL, *ys = NULL;
        char *out = NULL;
        if (tu_point_b64(g, y, &xs, &ys) &&
            asprintf(&out, "{\"alg\":\"ECMR\",\"crv\":\"%s\",\"key_ops\":[\"deriveKey\"],\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
                     crv, xs, ys) < 0)
                out = NULL;
        return out;
}

/* Runs rec_check_request + rec_exchange on body; returns the status /rec
 * answers a failure with (0 = answered into out). */
static int exchange(const struct tk_ecmr_key *key, const char *body, char *out, size_t outlen, size_t *written) {
        json_auto_t *req = NULL;
        int r = rec_check_request(body, strlen(body), &req);
        if (r == 0)
                r = rec_exchange(key, req, out, outlen, written);
        return r < 0 ? rec_status(r) : 0;
}

static char *body_for(const EC_GROUP *g, const char *crv, const EC_POINT *x) {
        json_auto_t *j = tu_point_jwk(g, crv, x);
        return j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
}

TEST(answer_is_d_times_x_computed_by_openssl) {
_cleanup_(BN_clear_freep) BIGNUM *d = tu_jwk_d(exc);   /* from the key file, decoded here */
        REQUIRE(d);

        for (int i = 0; i < 8; i++) {
                _cleanup_(EC_POINT_clear_freep) EC_POINT *x = tu_random_point(p521, NULL), *y = EC_POINT_new(p521);
                _cleanup_free_ char *body = body_for(p521, "P-521", x);
                char out[512];
                size_t written = 0;

                if (CHECK(x && y && body) && CHECK(EC_POINT_mul(p521, y, NULL, x, d, ctx))) {
                        _cleanup_free_ char *want = expected_answer(p521, "P-521", y);
                        memset(out, 'Z', sizeof(out));
                        if (CHECK_INT(exchange(exc_key, body, out, sizeof(out), &written), 0)) {
                                CHECK_STR(out, want);
                                CHECK_INT(written, strlen(want));
                        }
                }
        }
}

TEST(answer_for_a_known_key_and_point) {
        _cleanup_(tu_tmpdir_freep) char *kdir = tu_mkdtemp();
        _cleanup_(tk_keyset_freep) struct tk_keyset *kks = NULL;
        char out[512];
        size_t written = 0;
        static const char want[] =
                "{\"alg\":\"ECMR\",\"crv\":\"P-521\",\"key_ops\":[\"deriveKey\"],\"kty\":\"EC\","
                "\"x\":\"" KAT_REC_ANSWER_X "\",\"y\":\"" KAT_REC_ANSWER_Y "\"}";
        static const char body[] =
                "{\"alg\":\"ECMR\",\"crv\":\"P-521\",\"key_ops\":[\"deriveKey\"],\"kty\":\"EC\","
                "\"x\":\"" KAT_REC_X "\",\"y\":\"" KAT_REC_Y "\"}\n";

        REQUIRE(kdir);
        /* A signing key too, or the server answers nothing (500). */
        json_auto_t *sig = tu_gen("{\"alg\":\"ES512\"}");
        if (CHECK(tu_write_str(kdir, "kat.jwk", KAT_JWK) == 0) && CHECK(tu_write_json(kdir, "sig.jwk", sig) == 0) &&
            CHECK_INT(tk_keyset_load(kdir, NULL, NULL, &kks), 0) && CHECK_INT(kks->n_keys, 2) &&
            CHECK_STR(kks->keys[0].file, "kat.jwk") && CHECK(kks->keys[0].ecmr != NULL) &&
            CHECK_INT(exchange(kks->keys[0].ecmr, body, out, sizeof(out), &written), 0)) {
                CHECK_STR(out, want);
                CHECK_INT(written, strlen(want));
        }

        /* The same through the route, by the key's S1 kid as old clevis
         * bindings carry it. */
        struct served *s = NULL;
        if (kks && CHECK_INT(served_build(kks, &s), 0)) {
                kks = NULL;   /* owned by s now */
                struct route rt;
                struct reply r;
                route_match(NULL, "POST", "/rec/" KAT_S1, &rt);
                route_serve(s, &rt, body, strlen(body), &r);
                if (CHECK_INT(r.status, 200)) {
                        CHECK_STR(r.content_type, "application/jwk+json");
                        CHECK(r.len == strlen(want) && memcmp(r.body, want, r.len) == 0);
                }
        }
        served_unref(s);
}

TEST(answer_is_sorted_compact_json) {
        _cleanup_(EC_POINT_clear_freep) EC_POINT *x = tu_random_point(p521, NULL);
        _cleanup_free_ char *body = body_for(p521, "P-521", x);
        char out[512];
        size_t written = 0;

        if (CHECK_INT(exchange(exc_key, body, out, sizeof(out), &written), 0)) {
                json_auto_t *j = json_loadb(out, written, 0, NULL);
                _cleanup_free_ char *again = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
                CHECK_STR(out, again);
                CHECK(strchr(out, ' ') == NULL && strchr(out, '\n') == NULL);
                CHECK_INT(json_object_size(j), 6);
                CHECK_INT(strlen(json_string_value(json_object_get(j, "x")) ?: ""), 88);
                CHECK_INT(strlen(json_string_value(json_object_get(j, "y")) ?: ""), 88);
        }
}

static void check_width(const char *b64, size_t zeros) {
        uint8_t buf[80];
        CHECK_INT(strlen(b64), 88);
        size_t n = tu_unb64(b64, buf, sizeof(buf));
        if (CHECK_INT(n, 66))
                for (size_t i = 0; i < zeros; i++)
                        CHECK_INT(buf[i], 0);
}

/* Finds X with sX's chosen coordinate below 2^512 by walking X += G,
 * Y += S (s(X + G) = sX + sG), then checks the answer keeps 66 bytes. */
TEST(answer_keeps_leading_zero_bytes) {
        _cleanup_(BN_clear_freep) BIGNUM *d = tu_jwk_d(exc), *yx = BN_new(), *yy = BN_new();
        _cleanup_(EC_POINT_clear_freep) EC_POINT *S = tu_jwk_point(p521, exc);
        const EC_POINT *G = EC_GROUP_get0_generator(p521);
        REQUIRE(d && S);

        for (int which = 0; which < 2; which++) {
                _cleanup_(EC_POINT_clear_freep) EC_POINT *X = tu_random_point(p521, NULL), *Y = EC_POINT_new(p521);
                bool found = false;
                EC_POINT_mul(p521, Y, NULL, X, d, ctx);
                for (int i = 0; i < 100000 && !found; i++) {
                        EC_POINT_get_affine_coordinates(p521, Y, yx, yy, ctx);
                        if (BN_num_bits(which == 0 ? yx : yy) <= 512)
                                found = true;
                        else {
                                EC_POINT_add(p521, X, X, G, ctx);
                                EC_POINT_add(p521, Y, Y, S, ctx);
                        }
                }
                if (CHECK(found)) {
                        _cleanup_free_ char *body = body_for(p521, "P-521", X);
                        _cleanup_free_ char *want = expected_answer(p521, "P-521", Y);
                        char out[512];
                        size_t written = 0;
                        if (CHECK_INT(exchange(exc_key, body, out, sizeof(out), &written), 0)) {
                                CHECK_STR(out, want);
                                json_auto_t *j = json_loads(out, 0, NULL);
                                const char *c = json_string_value(json_object_get(j, which == 0 ? "x" : "y"));
                                check_width(c ?: "", 2);
                        }
                }
        }
}

/* The client side of McCallum-Relyea: provisioning K = cS, recovery
 * X = C + eG, K = Y - eS. */
TEST(mcallum_relyea_round_trip_recovers_the_key) {
        _cleanup_(EC_POINT_clear_freep) EC_POINT *S = tu_jwk_point(p521, exc);
        _cleanup_(BN_clear_freep) BIGNUM *c = NULL, *e = NULL;
        _cleanup_(EC_POINT_clear_freep) EC_POINT *C = tu_random_point(p521, &c), *E = tu_random_point(p521, &e);
        _cleanup_(EC_POINT_clear_freep) EC_POINT *K = EC_POINT_new(p521), *X = EC_POINT_new(p521), *eS = EC_POINT_new(p521);
        REQUIRE(S && C && E && K && X && eS);

        EC_POINT_mul(p521, K, NULL, S, c, ctx);      /* K = cS */
        EC_POINT_add(p521, X, C, E, ctx);            /* X = C + eG */
        _cleanup_free_ char *body = body_for(p521, "P-521", X);
        char out[512];
        size_t written = 0;
        if (CHECK_INT(exchange(exc_key, body, out, sizeof(out), &written), 0)) {
                json_auto_t *j = json_loads(out, 0, NULL);
                _cleanup_(EC_POINT_clear_freep) EC_POINT *Y = j ? tu_jwk_point(p521, j) : NULL;
                if (CHECK(Y != NULL)) {
                        EC_POINT_mul(p521, eS, NULL, S, e, ctx);
                        EC_POINT_invert(p521, eS, ctx);
                        EC_POINT_add(p521, Y, Y, eS, ctx);   /* Y - eS */
                        CHECK_INT(EC_POINT_cmp(p521, Y, K, ctx), 0);
                }
        }
}

TEST(answer_matches_libjose_exchange) {
        _cleanup_(EC_POINT_clear_freep) EC_POINT *x = tu_random_point(p521, NULL);
        json_auto_t *req = tu_point_jwk(p521, "P-521", x);
        _cleanup_free_ char *body = json_dumps(req, JSON_COMPACT);
        char out[512];
        size_t written = 0;

        /* What tang computes: jose_jwk_exc(server key, client key). */
        json_auto_t *theirs = jose_jwk_exc(NULL, exc, req);
        if (CHECK(theirs != NULL) && CHECK_INT(exchange(exc_key, body, out, sizeof(out), &written), 0)) {
                json_auto_t *ours = json_loads(out, 0, NULL);
                _cleanup_(EC_POINT_clear_freep) EC_POINT *a = tu_jwk_point(p521, ours), *b = tu_jwk_point(p521, theirs);
                CHECK(a && b && EC_POINT_cmp(p521, a, b, ctx) == 0);
        }
}

TEST(p256_key_answers_with_32_byte_coordinates) {
        _cleanup_(EC_GROUP_freep) EC_GROUP *g = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
        _cleanup_(BN_clear_freep) BIGNUM *d = tu_jwk_d(p256_exc);
        _cleanup_(EC_POINT_clear_freep) EC_POINT *x = tu_random_point(g, NULL), *y = EC_POINT_new(g);
        _cleanup_free_ char *body = body_for(g, "P-256", x);
        char out[512];
        size_t written = 0;

        EC_POINT_mul(g, y, NULL, x, d, ctx);
        _cleanup_free_ char *want = expected_answer(g, "P-256", y);
        if (CHECK_INT(exchange(p256_key, body, out, sizeof(out), &written), 0))
                CHECK_STR(out, want);
        free(body);

        /* A P-521 point is not for this key. */
        _cleanup_(EC_POINT_clear_freep) EC_POINT *big = tu_random_point(p521, NULL);
        body = body_for(p521, "P-521", big);
        CHECK_INT(exchange(p256_key, body, out, sizeof(out), &written), 400);
}

TEST(check_request_statuses) {
        static const struct { const char *body; int status; } cases[] = {
                { "{\"kty\":\"EC\"}", 0 },
                { "{\"kty\":\"EC\",\"alg\":\"ECMR\"}", 0 },
                { "{\"kty\":\"EC\",\"key_ops\":[\"deriveKey\"]}", 0 },
                { "{\"kty\":\"EC\"}\n", 0 },
                { "", 400 },
                { "{", 400 },
                { "[]", 400 },
                { "{}", 400 },
                { "{\"kty\":\"RSA\"}", 400 },
                { "{\"kty\":null}", 400 },
                { "{\"kty\":\"EC\",\"alg\":\"ECDH-ES\"}", 400 },
                { "{\"kty\":\"EC\",\"alg\":5}", 400 },
                { "{\"kty\":\"EC\",\"key_ops\":[\"sign\"]}", 403 },
                { "{\"kty\":\"EC\",\"use\":\"sig\"}", 403 },
                /* Tang checks deriveKey before kty. */
                { "{\"kty\":\"RSA\",\"key_ops\":[\"sign\"]}", 403 },
        };
        for (size_t i = 0; i < ELEMENTS(cases); i++) {
                json_auto_t *req = NULL;
                int r = rec_check_request(cases[i].body, strlen(cases[i].body), &req);
                int st = r < 0 ? rec_status(r) : r;
                if (!CHECK_INT(st, cases[i].status))
                        fprintf(stderr, "  body %s\n", cases[i].body);
                CHECK(st == 0 ? req != NULL : req == NULL);
        }
        /* The length bounds the body: a valid prefix of a longer buffer. */
        json_auto_t *req = NULL;
        CHECK_INT(rec_check_request("{\"kty\":\"EC\"}garbage", 12, &req), 0);
}

TEST(exchange_rejects_bad_points_and_small_buffers) {
        _cleanup_(EC_POINT_clear_freep) EC_POINT *x = tu_random_point(p521, NULL);
        json_auto_t *req = tu_point_jwk(p521, "P-521", x);
        char out[512];
        size_t written = 0;

        json_auto_t *r = json_deep_copy(req);
        json_object_del(r, "crv");
        CHECK_INT(rec_status(rec_exchange(exc_key, r, out, sizeof(out), &written)), 400);
        json_object_set_new(r, "crv", json_string("P-256"));
        CHECK_INT(rec_status(rec_exchange(exc_key, r, out, sizeof(out), &written)), 400);
        json_decref(r);

        r = json_deep_copy(req);
        json_object_set(r, "x", json_object_get(req, "y"));
        CHECK_INT(rec_status(rec_exchange(exc_key, r, out, sizeof(out), &written)), 400);
        json_object_del(r, "x");
        CHECK_INT(rec_status(rec_exchange(exc_key, r, out, sizeof(out), &written)), 400);

        /* The answer is 253 bytes; a smaller buffer is an error, not a
         * truncated answer. */
        CHECK_INT(rec_exchange(exc_key, req, out, sizeof(out), &written), 0);
        CHECK_INT(written, 253);
        CHECK_INT(rec_status(rec_exchange(exc_key, req, out, 253, &written)), 500);
        CHECK_INT(rec_exchange(exc_key, req, out, 254, &written), 0);
}

SETUP {
        p521 = EC_GROUP_new_by_curve_name(NID_secp521r1);
        ctx = BN_CTX_new();
        dir = tu_keydir(key_files, ELEMENTS(key_files), &ks);
        if (!dir)
                return -1;
        exc_key = ecmr_of("exc.jwk");
        p256_key = ecmr_of("p256.jwk");
        return p521 && ctx && exc_key && p256_key ? 0 : -1;
}

TEARDOWN {
        tk_keyset_free(ks);
        tu_keydir_free(dir, key_files, ELEMENTS(key_files));
        EC_GROUP_free(p521);
        BN_CTX_free(ctx);
}
