#include "ecpoint.h"
#include "cleanup.h"

#include <errno.h>
#include <string.h>
#include <jose/b64.h>
#include <openssl/objects.h>

static const struct ecpoint_curve curves[] = {
        { "P-256", NID_X9_62_prime256v1 },
        { "P-384", NID_secp384r1 },
        { "P-521", NID_secp521r1 },
};

const struct ecpoint_curve *ecpoint_curve(const char *crv) {
        for (size_t i = 0; crv && i < ELEMENTSOF(curves); i++)
                if (strcmp(crv, curves[i].crv) == 0)
                        return &curves[i];
        return NULL;
}

int ecpoint_curve_nid(const char *crv) {
        const struct ecpoint_curve *c = ecpoint_curve(crv);
        return c ? c->nid : NID_undef;
}

size_t ecpoint_coord_len(const EC_GROUP *group) {
        return (EC_GROUP_get_degree(group) + 7) / 8;
}

static BIGNUM *decode_coordinate(const char *b64, size_t len, size_t coord_len) {
        uint8_t buf[ECPOINT_MAX_COORD];

        /* Reject before decoding anything longer than a coordinate can be. */
        if (len == 0 || len > ECPOINT_MAX_B64)
                return NULL;
        size_t n = jose_b64_dec_buf(b64, len, NULL, 0);
        if (n == SIZE_MAX || n == 0 || n > coord_len)
                return NULL;
        if (jose_b64_dec_buf(b64, len, buf, sizeof(buf)) != n)
                return NULL;
        return BN_bin2bn(buf, (int) n, NULL);
}

int ecpoint_decode(const EC_GROUP *group, const char *x_b64, size_t x_len,
                   const char *y_b64, size_t y_len, BN_CTX *ctx, EC_POINT **ret) {
        _cleanup_(BN_clear_freep) BIGNUM *x = NULL, *y = NULL, *p = NULL;
        _cleanup_(EC_POINT_clear_freep) EC_POINT *point = NULL;
        size_t coord_len = ecpoint_coord_len(group);

        x = decode_coordinate(x_b64, x_len, coord_len);
        y = decode_coordinate(y_b64, y_len, coord_len);
        if (!x || !y)
                return -EINVAL;

        p = BN_new();
        if (!p || !EC_GROUP_get_curve(group, p, NULL, NULL, ctx))
                return -ENOMEM;
        if (BN_cmp(x, p) >= 0 || BN_cmp(y, p) >= 0)
                return -EINVAL;

        point = EC_POINT_new(group);
        if (!point)
                return -ENOMEM;
        /* Fails for points off the curve; infinity has no affine form. */
        if (!EC_POINT_set_affine_coordinates(group, point, x, y, ctx))
                return -EINVAL;
        if (EC_POINT_is_at_infinity(group, point) || EC_POINT_is_on_curve(group, point, ctx) != 1)
                return -EINVAL;

        *ret = TAKE_PTR(point);
        return 0;
}

int ecpoint_encode(const EC_GROUP *group, const EC_POINT *point, BN_CTX *ctx,
                   char *x_b64, char *y_b64) {
        _cleanup_(BN_clear_freep) BIGNUM *x = BN_new(), *y = BN_new();
        uint8_t buf[ECPOINT_MAX_COORD];
        size_t coord_len = ecpoint_coord_len(group);

        if (!x || !y || coord_len > sizeof(buf))
                return -ENOMEM;
        if (!EC_POINT_get_affine_coordinates(group, point, x, y, ctx))
                return -EINVAL;

        if (BN_bn2binpad(x, buf, (int) coord_len) < 0)
                return -EINVAL;
        size_t n = jose_b64_enc_buf(buf, coord_len, x_b64, ECPOINT_MAX_B64);
        if (n == SIZE_MAX)
                return -EINVAL;
        x_b64[n] = '\0';

        if (BN_bn2binpad(y, buf, (int) coord_len) < 0)
                return -EINVAL;
        n = jose_b64_enc_buf(buf, coord_len, y_b64, ECPOINT_MAX_B64);
        if (n == SIZE_MAX)
                return -EINVAL;
        y_b64[n] = '\0';
        return 0;
}
