/* keys/adv.c: the advertisement JWS, checked with libjose as clevis does. */
#include "check.h"
#include "testutil.h"
#include "keyset.h"

#include <jose/b64.h>
#include <jose/jwk.h>

static char *dir;
/* Two advertised signing keys, one advertised exchange key, a hidden pair. */
static json_t *sig1, *sig2, *exc, *old_sig, *old_exc;
static struct tk_keyset *ks;

static const struct tu_key key_files[] = {
        { "sig1.jwk", TU_ES512, &sig1 },
        { "sig2.jwk", TU_ES512, &sig2 },
        { "exc.jwk", TU_ECMR, &exc },
        { ".old-sig.jwk", TU_ES512, &old_sig },
        { ".old-exc.jwk", TU_ECMR, &old_exc },
};

static json_t *decode_b64_json(const json_t *s) {
        const char *text = json_string_value(s);
        if (!text)
                return NULL;
        size_t len = strlen(text);
        _cleanup_free_ uint8_t *buf = malloc(len);
        size_t n = buf ? tu_unb64(text, buf, len) : SIZE_MAX;
        return n == SIZE_MAX ? NULL : json_loadb((const char *) buf, n, 0, NULL);
}

static json_t *payload_of(const json_t *jws) {
        return decode_b64_json(json_object_get(jws, "payload"));
}

/* The signatures of a JWS in either serialization. */
static json_t *signatures_of(const json_t *jws) {
        json_t *sigs = json_object_get(jws, "signatures");
        if (sigs)
                return json_incref(sigs);
        return json_pack("[{s:O,s:O}]", "protected", json_object_get(jws, "protected"), "signature",
                         json_object_get(jws, "signature"));
}

static bool payload_has_key(const json_t *keys, const json_t *jwk) {
        _cleanup_free_ char *want = tu_thumbprint(jwk, "S256");
        bool found = false;
        size_t i;
        json_t *k;

        json_array_foreach(keys, i, k) {
                _cleanup_free_ char *t = tu_thumbprint(k, "S256");
                if (t && want && strcmp(t, want) == 0)
                        found = true;
        }
        return found;
}

TEST(default_adv_is_signed_by_every_advertised_signing_key) {
        json_auto_t *jws = tk_adv_sign(ks, NULL);
        struct tc_err e = {};

        REQUIRE(jws);
        /* Two signatures: general serialization. */
        json_t *sigs = json_object_get(jws, "signatures");
        if (CHECK(json_is_array(sigs)))
                CHECK_INT(json_array_size(sigs), 2);
        CHECK(json_object_get(jws, "signature") == NULL);
        CHECK(json_is_string(json_object_get(jws, "payload")));

        CHECK(tu_jws_verifies_with(jws, sig1));
        CHECK(tu_jws_verifies_with(jws, sig2));
        CHECK(!tu_jws_verifies_with(jws, old_sig));
        CHECK(!tu_jws_verifies_with(jws, exc));

        json_auto_t *keys = NULL;
        if (!CHECK_INT(tk_adv_verify(jws, &keys, &e), 0))
                fprintf(stderr, "  %s\n", e.msg);
        CHECK(keys != NULL);
}

TEST(adv_protected_header_is_es512_jwk_set) {
        json_auto_t *jws = tk_adv_sign(ks, NULL);
        REQUIRE(jws);
        json_auto_t *sigs = signatures_of(jws);
        size_t i;
        json_t *s;

        CHECK_INT(json_array_size(sigs), 2);
        json_array_foreach(sigs, i, s) {
                json_auto_t *hdr = decode_b64_json(json_object_get(s, "protected"));
                if (CHECK(hdr != NULL)) {
                        CHECK_STR(json_string_value(json_object_get(hdr, "alg")), "ES512");
                        CHECK_STR(json_string_value(json_object_get(hdr, "cty")), "jwk-set+json");
                }
                /* ES512: r || s, 66 bytes each, base64url of 132 bytes. */
                CHECK_INT(strlen(json_string_value(json_object_get(s, "signature")) ?: ""), 176);
        }
}

TEST(adv_payload_holds_only_public_advertised_keys) {
        json_auto_t *jws = tk_adv_sign(ks, NULL);
        REQUIRE(jws);
        json_auto_t *payload = payload_of(jws);
        json_t *keys = json_object_get(payload, "keys");
        static const char *const v[] = { "verify" }, *const dk[] = { "deriveKey" };
        size_t i;
        json_t *k;

        REQUIRE(json_is_object(payload) && json_is_array(keys));
        CHECK_INT(json_object_size(payload), 1);
        CHECK_INT(json_array_size(keys), 3);
        CHECK(payload_has_key(keys, sig1));
        CHECK(payload_has_key(keys, sig2));
        CHECK(payload_has_key(keys, exc));
        CHECK(!payload_has_key(keys, old_sig));
        CHECK(!payload_has_key(keys, old_exc));
        json_array_foreach(keys, i, k) {
                CHECK(json_object_get(k, "d") == NULL);
                const char *alg = json_string_value(json_object_get(k, "alg"));
                if (!CHECK(alg != NULL))
                        continue;
                if (strcmp(alg, "ES512") == 0)
                        CHECK(tu_ops_are(json_object_get(k, "key_ops"), v, 1));
                else if (CHECK_STR(alg, "ECMR"))
                        CHECK(tu_ops_are(json_object_get(k, "key_ops"), dk, 1));
        }
}

TEST(adv_verify_returns_the_payload_key_set) {
        json_auto_t *jws = tk_adv_sign(ks, NULL);
        REQUIRE(jws);
        json_auto_t *payload = payload_of(jws);
        json_auto_t *got = NULL;
        CHECK_INT(tk_adv_verify(jws, &got, NULL), 0);
        CHECK(got && json_equal(got, payload));
}

TEST(adv_with_extra_signer_is_also_signed_by_it) {
        const struct tk_key *hidden = tu_find_key(ks, ".old-sig.jwk");
        REQUIRE(hidden && hidden->hidden);
        json_auto_t *jws = tk_adv_sign(ks, hidden->jwk);
        REQUIRE(jws);
        json_t *sigs = json_object_get(jws, "signatures");
        CHECK_INT(json_array_size(sigs), 3);
        CHECK(tu_jws_verifies_with(jws, sig1));
        CHECK(tu_jws_verifies_with(jws, sig2));
        CHECK(tu_jws_verifies_with(jws, old_sig));
        /* Same payload as the default advertisement: the hidden key signs
         * but is not advertised. */
        json_auto_t *def = tk_adv_sign(ks, NULL);
        json_auto_t *a = payload_of(jws);
        json_auto_t *b = payload_of(def);
        CHECK(a && b && json_equal(a, b));
        CHECK(!payload_has_key(json_object_get(a, "keys"), old_sig));
        json_auto_t *keys = NULL;
        CHECK_INT(tk_adv_verify(jws, &keys, NULL), 0);
        CHECK(keys != NULL);
}

TEST(adv_verify_rejects_tampering) {
        struct tc_err e = {};
        json_auto_t *jws = tk_adv_sign(ks, NULL);
        REQUIRE(jws);

        /* A payload the keys did not sign (one key dropped). */
        json_auto_t *payload = payload_of(jws);
        json_t *keys = json_object_get(payload, "keys");
        json_array_remove(keys, json_array_size(keys) - 1);
        _cleanup_free_ char *text = json_dumps(payload, JSON_COMPACT);
        _cleanup_free_ char *enc = tu_b64((const uint8_t *) text, strlen(text));
        json_auto_t *forged = json_deep_copy(jws);
        json_object_set_new(forged, "payload", json_string(enc));
        json_t *r = NULL;
        CHECK_INT(tk_adv_verify(forged, &r, &e), -EBADMSG);
        CHECK(r == NULL);
        CHECK(e.msg[0] != '\0');
        json_decref(r);

        /* One of the two advertised signing keys did not sign. */
        json_auto_t *one = json_deep_copy(jws);
        json_array_remove(json_object_get(one, "signatures"), 1);
        CHECK_INT(tk_adv_verify(one, &r, NULL), -EBADMSG);
        CHECK(r == NULL);
        json_decref(r);

        /* Not a JWS at all. */
        json_auto_t *empty = json_object();
        CHECK_INT(tk_adv_verify(empty, &r, &e), -EBADMSG);
        CHECK(r == NULL);
        json_decref(r);
}

TEST(single_signing_key_gives_flattened_jws) {
        const struct tu_key two[] = { { "sig.jwk", NULL, &sig1 }, { "exc.jwk", NULL, &exc } };
        _cleanup_(tk_keyset_freep) struct tk_keyset *one = NULL;
        char *d = tu_keydir(two, ELEMENTS(two), &one);

        REQUIRE(d);
        json_auto_t *jws = tk_adv_sign(one, NULL);
        if (CHECK(jws != NULL)) {
                CHECK(json_object_get(jws, "signatures") == NULL);
                CHECK(json_is_string(json_object_get(jws, "protected")));
                CHECK(json_is_string(json_object_get(jws, "signature")));
                CHECK(tu_jws_verifies_with(jws, sig1));
                json_auto_t *keys = NULL;
                CHECK_INT(tk_adv_verify(jws, &keys, NULL), 0);
                CHECK(keys && json_array_size(json_object_get(keys, "keys")) == 2);
        }
        tu_keydir_free(d, two, ELEMENTS(two));
}

TEST(no_advertised_signing_key_gives_no_adv) {
        /* Only an exchange key and a hidden signing key. */
        const struct tu_key two[] = { { "exc.jwk", NULL, &exc }, { ".sig.jwk", NULL, &sig1 } };
        _cleanup_(tk_keyset_freep) struct tk_keyset *none = NULL;
        char *d = tu_keydir(two, ELEMENTS(two), &none);

        REQUIRE(d);
        json_auto_t *jws = tk_adv_sign(none, NULL);
        CHECK(jws == NULL);
        json_decref(jws);
        /* With the hidden key as extra signer (/adv/{thp}). */
        jws = tk_adv_sign(none, none->keys[0].jwk);
        CHECK(jws != NULL);
        CHECK(jws && tu_jws_verifies_with(jws, sig1));
        tu_keydir_free(d, two, ELEMENTS(two));
}

SETUP {
        dir = tu_keydir(key_files, ELEMENTS(key_files), &ks);
        return dir ? 0 : -1;
}

TEARDOWN {
        tk_keyset_free(ks);
        tu_keydir_free(dir, key_files, ELEMENTS(key_files));
}
