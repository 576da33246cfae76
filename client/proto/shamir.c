#include "shamir.h"
#include "cleanup.h"

#include <errno.h>
#include <string.h>

void tc_shamir_clear(struct tc_shamir *s) {
        BN_free(s->p);
        for (size_t i = 0; s->coeff && i < s->t; i++)
                BN_clear_free(s->coeff[i]);
        free(s->coeff);
        memset(s, 0, sizeof(*s));
}

int tc_shamir_generate(struct tc_shamir *s, size_t t, struct tc_err *err) {
        memset(s, 0, sizeof(*s));
        s->p = BN_new();
        s->coeff = calloc(t, sizeof(BIGNUM *));
        s->t = t;
        if (!s->p || !s->coeff)
                goto oom;
        if (BN_generate_prime_ex(s->p, TC_SSS_KEY_BYTES * 8, 1, NULL, NULL, NULL) != 1) {
                tc_shamir_clear(s);
                return tc_fail(err, -EIO, "cannot generate a prime for sss");
        }
        s->p_len = (size_t) BN_num_bytes(s->p);
        for (size_t i = 0; i < t; i++) {
                s->coeff[i] = BN_secure_new();
                if (!s->coeff[i])
                        goto oom;
                if (BN_priv_rand_range(s->coeff[i], s->p) != 1) {
                        tc_shamir_clear(s);
                        return tc_fail(err, -EIO, "no randomness for sss");
                }
        }
        return 0;
oom:
        tc_shamir_clear(s);
        return tc_fail(err, -ENOMEM, "out of memory");
}

int tc_shamir_share(const struct tc_shamir *s, uint8_t *out, struct tc_err *err) {
        _cleanup_(BN_CTX_freep) BN_CTX *ctx = BN_CTX_new();
        _cleanup_(BN_clear_freep) BIGNUM *x = BN_new(), *y = BN_secure_new(), *xp = BN_new(), *term = BN_secure_new();
        if (!ctx || !x || !y || !xp || !term)
                return tc_fail(err, -ENOMEM, "out of memory");
        do {
                if (BN_rand_range(x, s->p) != 1)
                        return tc_fail(err, -EIO, "no randomness for sss");
        } while (BN_is_zero(x));
        /* y = sum coeff[i] x^i mod p */
        BN_zero(y);
        BN_one(xp);
        for (size_t i = 0; i < s->t; i++) {
                if (BN_mod_mul(term, s->coeff[i], xp, s->p, ctx) != 1 || BN_mod_add(y, y, term, s->p, ctx) != 1 ||
                    BN_mod_mul(xp, xp, x, s->p, ctx) != 1)
                        return tc_fail(err, -EIO, "sss arithmetic failed");
        }
        if (BN_bn2binpad(x, out, (int) s->p_len) < 0 || BN_bn2binpad(y, out + s->p_len, (int) s->p_len) < 0)
                return tc_fail(err, -EIO, "sss arithmetic failed");
        return 0;
}

int tc_shamir_secret(const struct tc_shamir *s, uint8_t out[TC_SSS_KEY_BYTES], struct tc_err *err) {
        if (BN_bn2binpad(s->coeff[0], out, TC_SSS_KEY_BYTES) != TC_SSS_KEY_BYTES)
                return tc_fail(err, -EIO, "sss secret does not fit in %d bytes", TC_SSS_KEY_BYTES);
        return 0;
}

int tc_shamir_recover(const BIGNUM *p, const uint8_t *const *shares, size_t t, uint8_t out[TC_SSS_KEY_BYTES],
                      struct tc_err *err) {
        size_t len = (size_t) BN_num_bytes(p);
        _cleanup_(BN_CTX_freep) BN_CTX *ctx = BN_CTX_new();
        _cleanup_(BN_clear_freep) BIGNUM *acc = BN_secure_new(), *num = BN_new(), *den = BN_new(), *tmp = BN_secure_new(),
                                         *xi = BN_new(), *xj = BN_new(), *yi = BN_secure_new();
        if (!ctx || !acc || !num || !den || !tmp || !xi || !xj || !yi)
                return tc_fail(err, -ENOMEM, "out of memory");
        BN_zero(acc);
        for (size_t i = 0; i < t; i++) {
                /* acc += y_i * prod_{j != i} x_j / (x_j - x_i) */
                if (!BN_bin2bn(shares[i], (int) len, xi) || !BN_bin2bn(shares[i] + len, (int) len, yi))
                        return tc_fail(err, -ENOMEM, "out of memory");
                BN_one(num);
                BN_one(den);
                for (size_t j = 0; j < t; j++) {
                        if (j == i)
                                continue;
                        if (!BN_bin2bn(shares[j], (int) len, xj) || BN_mod_mul(num, num, xj, p, ctx) != 1 ||
                            BN_mod_sub(tmp, xj, xi, p, ctx) != 1 || BN_mod_mul(den, den, tmp, p, ctx) != 1)
                                return tc_fail(err, -EIO, "sss arithmetic failed");
                }
                if (BN_is_zero(den) || !BN_mod_inverse(den, den, p, ctx))
                        return tc_fail(err, -EINVAL, "sss shares are not distinct");
                if (BN_mod_mul(tmp, num, den, p, ctx) != 1 || BN_mod_mul(tmp, tmp, yi, p, ctx) != 1 ||
                    BN_mod_add(acc, acc, tmp, p, ctx) != 1)
                        return tc_fail(err, -EIO, "sss arithmetic failed");
        }
        if (BN_bn2binpad(acc, out, TC_SSS_KEY_BYTES) != TC_SSS_KEY_BYTES)
                return tc_fail(err, -EINVAL, "sss secret does not fit in %d bytes", TC_SSS_KEY_BYTES);
        return 0;
}
