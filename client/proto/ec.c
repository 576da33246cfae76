#include "ec.h"
#include "cleanup.h"
#include "ecpoint.h"

#include <errno.h>
#include <string.h>
#include <openssl/obj_mac.h>

int tc_ec_init(struct tc_ec *ec, const char *crv, struct tc_err *err) {
        const struct ecpoint_curve *curve = ecpoint_curve(crv);
        memset(ec, 0, sizeof(*ec));
        if (!curve)
                return tc_fail(err, -EOPNOTSUPP, "curve \"%s\" is not supported", crv ? crv : "(none)");
        ec->crv = curve->crv;
        ec->group = EC_GROUP_new_by_curve_name(curve->nid);
        ec->bn = BN_CTX_new();
        if (!ec->group || !ec->bn) {
                tc_ec_clear(ec);
                return tc_fail(err, -ENOMEM, "out of memory");
        }
        return 0;
}

void tc_ec_clear(struct tc_ec *ec) {
        EC_GROUP_free(ec->group);
        BN_CTX_free(ec->bn);
        memset(ec, 0, sizeof(*ec));
}

int tc_ec_point_from_jwk(const struct tc_ec *ec, const json_t *jwk, const char *what, EC_POINT **ret,
                         struct tc_err *err) {
        const char *kty = NULL, *crv = NULL, *x = NULL, *y = NULL;
        if (json_unpack((json_t *) jwk, "{s:s,s:s,s:s,s:s}", "kty", &kty, "crv", &crv, "x", &x, "y", &y) < 0 ||
            strcmp(kty, "EC") != 0)
                return tc_fail(err, -EINVAL, "%s is not an EC key", what);
        if (strcmp(crv, ec->crv) != 0)
                return tc_fail(err, -EINVAL, "%s is on curve %s, expected %s", what, crv, ec->crv);
        if (ecpoint_decode(ec->group, x, strlen(x), y, strlen(y), ec->bn, ret) < 0)
                return tc_fail(err, -EINVAL, "%s is not a valid point on %s", what, ec->crv);
        return 0;
}

json_t *tc_ec_point_to_jwk(const struct tc_ec *ec, const EC_POINT *p) {
        char x[ECPOINT_MAX_B64 + 1], y[ECPOINT_MAX_B64 + 1];
        if (ecpoint_encode(ec->group, p, ec->bn, x, y) < 0)
                return NULL;
        return json_pack("{s:s,s:s,s:s,s:s}", "crv", ec->crv, "kty", "EC", "x", x, "y", y);
}

int tc_ec_generate(const struct tc_ec *ec, BIGNUM **priv, EC_POINT **pub, struct tc_err *err) {
        _cleanup_(BN_clear_freep) BIGNUM *k = BN_secure_new();
        _cleanup_(EC_POINT_clear_freep) EC_POINT *p = EC_POINT_new(ec->group);
        if (!k || !p)
                return tc_fail(err, -ENOMEM, "out of memory");
        do {
                if (BN_priv_rand_range(k, EC_GROUP_get0_order(ec->group)) != 1)
                        return tc_fail(err, -EIO, "no randomness for an ephemeral key");
        } while (BN_is_zero(k));
        BN_set_flags(k, BN_FLG_CONSTTIME);
        if (EC_POINT_mul(ec->group, p, k, NULL, NULL, ec->bn) != 1)
                return tc_fail(err, -EIO, "ephemeral key generation failed");
        *priv = TAKE_PTR(k);
        *pub = TAKE_PTR(p);
        return 0;
}

int tc_ec_mul(const struct tc_ec *ec, const BIGNUM *k, const EC_POINT *p, EC_POINT **ret, struct tc_err *err) {
        _cleanup_(EC_POINT_clear_freep) EC_POINT *r = EC_POINT_new(ec->group);
        if (!r)
                return tc_fail(err, -ENOMEM, "out of memory");
        if (EC_POINT_mul(ec->group, r, NULL, p, k, ec->bn) != 1 || EC_POINT_is_at_infinity(ec->group, r))
                return tc_fail(err, -EIO, "elliptic-curve multiplication failed");
        *ret = TAKE_PTR(r);
        return 0;
}

int tc_ec_add(const struct tc_ec *ec, const EC_POINT *a, const EC_POINT *b, bool subtract, EC_POINT **ret,
              struct tc_err *err) {
        _cleanup_(EC_POINT_clear_freep) EC_POINT *r = EC_POINT_new(ec->group);
        _cleanup_(EC_POINT_clear_freep) EC_POINT *nb = EC_POINT_dup(b, ec->group);
        if (!r || !nb)
                return tc_fail(err, -ENOMEM, "out of memory");
        if ((subtract && EC_POINT_invert(ec->group, nb, ec->bn) != 1) ||
            EC_POINT_add(ec->group, r, a, nb, ec->bn) != 1)
                return tc_fail(err, -EIO, "elliptic-curve addition failed");
        if (EC_POINT_is_at_infinity(ec->group, r))
                return tc_fail(err, -EINVAL, "elliptic-curve addition gave the point at infinity");
        *ret = TAKE_PTR(r);
        return 0;
}

int tc_ec_x_bytes(const struct tc_ec *ec, const EC_POINT *p, uint8_t *out, struct tc_err *err) {
        _cleanup_(BN_clear_freep) BIGNUM *x = BN_secure_new();
        int len = (int) ecpoint_coord_len(ec->group);
        if (!x)
                return tc_fail(err, -ENOMEM, "out of memory");
        if (EC_POINT_get_affine_coordinates(ec->group, p, x, NULL, ec->bn) != 1 || BN_bn2binpad(x, out, len) != len)
                return tc_fail(err, -EIO, "cannot read the shared point");
        return len;
}
