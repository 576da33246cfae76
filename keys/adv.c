/* Tang advertisements: a JWS over the public advertised keys. */
#include "keyset.h"
#include "cleanup.h"

#include <errno.h>
#include <string.h>
#include <jose/b64.h>
#include <jose/jwk.h>
#include <jose/jws.h>

static json_t *public_copy(const json_t *jwk) {
        json_t *pub = json_deep_copy(jwk);
        /* jose_jwk_pub drops private members and private key_ops ("sign"). */
        if (!pub || !jose_jwk_pub(NULL, pub)) {
                json_decref(pub);
                return NULL;
        }
        return pub;
}

/* The advertised keys of ks with role (signing or exchange, or both when
 * role is TK_ROLE_OTHER) go to pub_keys, its signing keys to signers. */
static int add_advertised(const struct tk_keyset *ks, enum tk_role role, json_t *pub_keys, json_t *signers) {
        for (size_t i = 0; i < ks->n_keys; i++) {
                const struct tk_key *k = &ks->keys[i];
                if (k->hidden || (k->role != TK_ROLE_SIGNING && k->role != TK_ROLE_EXCHANGE))
                        continue;
                if (role != TK_ROLE_OTHER && k->role != role)
                        continue;
                if (json_array_append_new(pub_keys, public_copy(k->jwk)) < 0)
                        return -ENOMEM;
                if (k->role == TK_ROLE_SIGNING && json_array_append(signers, k->jwk) < 0)
                        return -ENOMEM;
        }
        return 0;
}

json_t *tk_adv_sign(const struct tk_keyset *ks, const json_t *extra_signer) {
        return tk_adv_sign_keys(ks, NULL, extra_signer);
}

json_t *tk_adv_sign_keys(const struct tk_keyset *ks, const struct tk_keyset *exchange, const json_t *extra_signer) {
        json_auto_t *pub_keys = json_array();
        json_auto_t *signers = json_array();

        if (!pub_keys || !signers)
                return NULL;
        /* Tang's order: the directory's keys sorted by file name. With a
         * separate exchange set, the signing keys come first. */
        if (add_advertised(ks, exchange ? TK_ROLE_SIGNING : TK_ROLE_OTHER, pub_keys, signers) < 0)
                return NULL;
        if (exchange && add_advertised(exchange, TK_ROLE_EXCHANGE, pub_keys, signers) < 0)
                return NULL;
        if (extra_signer && json_array_append(signers, (json_t *) extra_signer) < 0)
                return NULL;
        if (json_array_size(signers) == 0)
                return NULL;

        json_auto_t *payload = json_pack("{s:O}", "keys", pub_keys);
        _cleanup_free_ char *text = payload ? json_dumps(payload, JSON_COMPACT) : NULL;
        if (!text)
                return NULL;
        json_auto_t *jws = json_pack("{s:o}", "payload", jose_b64_enc(text, strlen(text)));
        json_auto_t *tmpl = json_pack("{s:{s:s}}", "protected", "cty", "jwk-set+json");
        if (!jws || !tmpl || !jose_jws_sig(NULL, jws, tmpl, signers))
                return NULL;
        return json_incref(jws);
}

int tk_adv_verify(const json_t *jws, json_t **ret, struct tc_err *err) {
        json_t *enc = json_object_get(jws, "payload");
        json_auto_t *payload = NULL;
        json_auto_t *verifiers = json_array();
        json_t *keys, *k;
        size_t i;

        if (!verifiers)
                return tc_fail(err, -ENOMEM, "out of memory");
        if (!json_is_object(jws) || !json_is_string(enc))
                return tc_fail(err, -EBADMSG, "advertisement is not a JWS object with a payload");
        payload = jose_b64_dec_load(enc);
        keys = json_object_get(payload, "keys");
        if (!json_is_array(keys))
                return tc_fail(err, -EBADMSG, "advertisement payload holds no key set");
        json_array_foreach(keys, i, k) {
                if (!json_is_object(k))
                        return tc_fail(err, -EBADMSG, "advertisement key %zu is not a JWK", i);
                if (jose_jwk_prm(NULL, k, true, "verify") && json_array_append(verifiers, k) < 0)
                        return tc_fail(err, -ENOMEM, "out of memory");
        }
        if (json_array_size(verifiers) == 0)
                return tc_fail(err, -EBADMSG, "advertisement has no signing key");
        if (!jose_jws_ver(NULL, jws, NULL, verifiers, true))
                return tc_fail(err, -EBADMSG, "advertisement signature does not verify with every advertised signing key");
        *ret = TAKE_PTR(payload);
        return 0;
}
