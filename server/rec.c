#include "rec.h"
#include "cleanup.h"
#include "ecpoint.h"

#include <errno.h>
#include <string.h>
#include <jose/b64.h>
#include <jose/jwk.h>

int rec_check_request(const char *body, size_t len, json_t **ret) {
        const char *kty = NULL, *alg = NULL;

        json_auto_t *req = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
        if (!req)
                return -EINVAL;
        if (!jose_jwk_prm(NULL, req, false, "deriveKey"))
                return -EPERM;
        if (json_unpack(req, "{s:s,s?s}", "kty", &kty, "alg", &alg) < 0)
                return -EINVAL;
        if (strcmp(kty, "EC") != 0)
                return -EINVAL;
        if (alg && strcmp(alg, "ECMR") != 0)
                return -EINVAL;
        *ret = json_incref(req);
        return 0;
}

/* Tang imports the whole client JWK, so a "d" that is not the private key
 * of (x, y) gets 400 there; no real client sends one. */
static bool private_part_consistent(const struct tk_ecmr_key *key, const json_t *req, const EC_POINT *point,
                                    BN_CTX *ctx) {
        json_t *d = json_object_get(req, "d");
        uint8_t buf[ECPOINT_MAX_COORD];
        TC_CLEANUP_ERASE(buf);
        if (!d)
                return true;
        const char *s = json_string_value(d);
        size_t n = s ? jose_b64_dec_buf(s, strlen(s), NULL, 0) : SIZE_MAX;
        if (n == 0 || n > key->coord_len || jose_b64_dec_buf(s, strlen(s), buf, sizeof(buf)) != n)
                return false;
        _cleanup_(BN_clear_freep) BIGNUM *k = BN_bin2bn(buf, (int) n, NULL);
        _cleanup_(EC_POINT_clear_freep) EC_POINT *check = EC_POINT_new(key->group);
        return k && check && !BN_is_zero(k) && BN_cmp(k, EC_GROUP_get0_order(key->group)) < 0 &&
               EC_POINT_mul(key->group, check, k, NULL, NULL, ctx) && EC_POINT_cmp(key->group, check, point, ctx) == 0;
}

int rec_exchange(const struct tk_ecmr_key *key, const json_t *req, char *out, size_t outlen, size_t *written) {
        const char *crv = NULL, *x = NULL, *y = NULL;
        size_t x_len = 0, y_len = 0;
        char xs[ECPOINT_MAX_B64 + 1], ys[ECPOINT_MAX_B64 + 1];
        _cleanup_(BN_CTX_freep) BN_CTX *ctx = BN_CTX_new();
        _cleanup_(EC_POINT_clear_freep) EC_POINT *point = NULL, *result = NULL;

        if (!ctx)
                return -ENOMEM;
        if (json_unpack((json_t *) req, "{s:s,s:s%,s:s%}", "crv", &crv, "x", &x, &x_len, "y", &y, &y_len) < 0)
                return -EINVAL;
        /* A point of another curve is never multiplied by this key. */
        if (strcmp(crv, key->crv) != 0)
                return -EINVAL;
        if (ecpoint_decode(key->group, x, x_len, y, y_len, ctx, &point) < 0)
                return -EINVAL;
        if (!private_part_consistent(key, req, point, ctx))
                return -EINVAL;

        result = EC_POINT_new(key->group);
        if (!result)
                return -ENOMEM;
        if (!EC_POINT_mul(key->group, result, NULL, point, key->d, ctx))
                return -EIO;
        /* Whatever keeps our own answer from being encoded is no fault of
         * the request: not -EINVAL, which would answer 400. */
        if (ecpoint_encode(key->group, result, ctx, xs, ys) < 0)
                return -EIO;

        int n = snprintf(out, outlen,
                         "{\"alg\":\"ECMR\",\"crv\":\"%s\",\"key_ops\":[\"deriveKey\"],\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
                         key->crv, xs, ys);
        if (n < 0 || (size_t) n >= outlen)
                return -ENOBUFS;
        *written = (size_t) n;
        return 0;
}

int rec_status(int r) {
        switch (r) {
        case 0:
                return 200;
        case -EPERM:
                return 403;
        case -EINVAL:
                return 400;
        default:
                return 500;
        }
}
