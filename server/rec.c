#include "rec.h"
#include "cleanup.h"
#include "ecpoint.h"

#include <string.h>
#include <jose/jwk.h>

int rec_check_request(const char *body, size_t len, json_t **ret) {
        const char *kty = NULL, *alg = NULL;

        json_auto_t *req = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
        if (!req)
                return 400;
        if (!jose_jwk_prm(NULL, req, false, "deriveKey"))
                return 403;
        if (json_unpack(req, "{s:s,s?s}", "kty", &kty, "alg", &alg) < 0)
                return 400;
        if (strcmp(kty, "EC") != 0)
                return 400;
        if (alg && strcmp(alg, "ECMR") != 0)
                return 400;
        *ret = json_incref(req);
        return 0;
}

int rec_exchange(const struct tk_ecmr_key *key, const json_t *req, char *out, size_t outlen, size_t *written) {
        const char *crv = NULL, *x = NULL, *y = NULL;
        size_t x_len = 0, y_len = 0;
        char xs[ECPOINT_MAX_B64 + 1], ys[ECPOINT_MAX_B64 + 1];
        _cleanup_(bn_ctx_freep) BN_CTX *ctx = BN_CTX_new();
        _cleanup_(ec_point_freep) EC_POINT *point = NULL, *result = NULL;

        if (!ctx)
                return 500;
        if (json_unpack((json_t *) req, "{s:s,s:s%,s:s%}", "crv", &crv, "x", &x, &x_len, "y", &y, &y_len) < 0)
                return 400;
        /* A point of another curve is never multiplied by this key. */
        if (strcmp(crv, key->crv) != 0)
                return 400;
        if (ecpoint_decode(key->group, x, x_len, y, y_len, ctx, &point) < 0)
                return 400;

        result = EC_POINT_new(key->group);
        if (!result || !EC_POINT_mul(key->group, result, NULL, point, key->d, ctx))
                return 500;
        if (ecpoint_encode(key->group, result, ctx, xs, ys) < 0)
                return 500;

        int n = snprintf(out, outlen,
                         "{\"alg\":\"ECMR\",\"crv\":\"%s\",\"key_ops\":[\"deriveKey\"],\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
                         key->crv, xs, ys);
        if (n < 0 || (size_t) n >= outlen)
                return 500;
        *written = (size_t) n;
        return 0;
}
