/* The tang pin: ECDH-ES to the server's exchange key when encrypting, and
 * McCallum-Relyea recovery (one POST, the server never sees the key) when
 * decrypting. Formats as in Clevis's clevis-encrypt-tang/clevis-decrypt-tang. */
#include "cleanup.h"
#include "ec.h"
#include "ecpoint.h"
#include "http.h"
#include "keyset.h"
#include "pin.h"
#include "tang.h"

#include <errno.h>
#include <string.h>
#include <jose/b64.h>
#include <jose/jwk.h>

json_t *tc_tang_keys_for(const json_t *payload, const char *op) {
        json_t *keys = json_object_get(payload, "keys"), *k, *out = json_array();
        size_t i;
        if (!out)
                return NULL;
        json_array_foreach(keys, i, k)
                if (jose_jwk_prm(NULL, k, true, op))
                        json_array_append(out, k);
        return out;
}

int tc_tang_verify_adv(const json_t *jws, const char *where, json_t **payload, struct tc_err *err) {
        struct tc_err why;
        int r = tk_adv_verify(jws, payload, &why);
        if (r < 0)
                return tc_fail(err, r, "advertisement from %s rejected: %s", where, why.msg);
        return 0;
}

int tc_tang_parse_adv(const char *body, size_t len, const char *where, json_t **jws, json_t **payload,
                      struct tc_err *err) {
        json_auto_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
        /* An HTML page, say: a web server, not tang, answers at that URL. */
        if (!json_is_object(j))
                return tc_fail(err, -EBADMSG,
                               "%s did not answer with an advertisement: the answer is not a JSON object (is there a "
                               "tang server at that URL? check the URL)", where);
        int r = tc_tang_verify_adv(j, where, payload, err);
        if (r < 0)
                return r;
        *jws = TAKE_PTR(j);
        return 0;
}

/* Longest error body of a server quoted in a message. */
#define SERVER_TEXT_MAX 200

/* An error body that is one short line of text (tetherd's 500 says which
 * fault it is) is worth showing: copied to buf without its line end, else
 * "". Anything else (HTML, binary, several lines) is not shown; what is
 * shown is escaped with the rest of the message by tc_fail. */
static const char *server_text(const struct tc_http_reply *reply, char *buf, size_t size) {
        size_t len = reply->body ? reply->len : 0;

        buf[0] = '\0';
        while (len > 0 && (reply->body[len - 1] == '\n' || reply->body[len - 1] == '\r'))
                len--;
        if (len == 0 || len > SERVER_TEXT_MAX || len >= size)
                return buf;
        for (size_t i = 0; i < len; i++)
                if ((unsigned char) reply->body[i] < 0x20 || reply->body[i] == 0x7f)
                        return buf;
        memcpy(buf, reply->body, len);
        buf[len] = '\0';
        return buf;
}

int tc_tang_fetch_adv(const struct tc_ctx *ctx, const char *url, const char *thp, json_t **jws, json_t **payload,
                      struct tc_err *err) {
        _cleanup_free_ char *adv_url = NULL;
        _cleanup_(tc_http_reply_clear) struct tc_http_reply reply = {};
        int r;

        if (asprintf(&adv_url, "%s/adv/%s", url, thp ? thp : "") < 0) {
                adv_url = NULL; /* undefined after a failure, and freed on return */
                return tc_fail(err, -ENOMEM, "out of memory");
        }
        r = tc_http_request(ctx, adv_url, NULL, 0, NULL, &reply, err);
        if (r < 0)
                return tc_wrap(err, r, "tang server");
        if (reply.status != 200) {
                long status = reply.status;
                char text[SERVER_TEXT_MAX + 1];
                server_text(&reply, text, sizeof(text));
                /* A 404 to /adv is no tang server there (a wrong path
                 * prefix, port or host), whatever page came with it; to
                 * /adv/THP it may also be an unknown key, which
                 * tang_encrypt tells apart. */
                if (status == 404 && !thp)
                        return tc_fail(err, -EPROTO,
                                       "%s answered HTTP 404: there is no tang server at that URL; check the URL (its "
                                       "host, port and path)", adv_url);
                /* tetherd's 403 of a revoked host's URL says why itself:
                 * what helps is who can undo it. */
                bool revoked = status == 403 && strncmp(text, "revoked:", 8) == 0;
                /* -EACCES: refused, not missing (-EPROTO), so that a report
                 * says "revoked" rather than "unreachable". */
                if (text[0] && status != 404)
                        return tc_fail(err, revoked ? -EACCES : -EPROTO, "tang server %s answered HTTP %ld: \"%s\" (%s)",
                                       adv_url, status, text,
                                       revoked ? "the server's administrator revoked this host; tether-keys host restore "
                                                 "there undoes it"
                                               : "the server's log says why");
                return status == 404 ? tc_fail(err, -EPROTO, "%s answered HTTP 404", adv_url)
                                     : tc_fail(err, -EPROTO, "tang server %s answered HTTP %ld", adv_url, status);
        }
        return tc_tang_parse_adv(reply.body, reply.len, adv_url, jws, payload, err);
}

int tc_tang_has_key(const struct tc_ctx *ctx, const char *url, const char *thp, struct tc_err *err) {
        _cleanup_free_ char *adv_url = NULL;
        _cleanup_(tc_http_reply_clear) struct tc_http_reply reply = {};
        json_auto_t *jws = NULL, *payload = NULL;

        if (asprintf(&adv_url, "%s/adv/%s", url, thp) < 0) {
                adv_url = NULL; /* undefined after a failure, and freed on return */
                return tc_fail(err, -ENOMEM, "out of memory");
        }
        int r = tc_http_request(ctx, adv_url, NULL, 0, NULL, &reply, err);
        if (r < 0)
                return tc_wrap(err, r, "tang server");
        /* Only /adv/THP's own 404 says "no such key": the server answered,
         * so it is no network trouble. */
        if (reply.status == 404)
                return 0;
        if (reply.status != 200)
                return tc_fail(err, -EPROTO, "tang server %s answered HTTP %ld", adv_url, (long) reply.status);
        /* A 200 that is no advertisement is not a tang server's "I have it". */
        r = tc_tang_parse_adv(reply.body, reply.len, adv_url, &jws, &payload, err);
        return r < 0 ? r : 1;
}

/* A key of keys whose thumbprint, by any hash Clevis ever used (it writes
 * S256, old bindings carry S1), is thp. Only the hash whose digests encode
 * to thp's length is tried: the others cannot match. */
static json_t *find_by_thumbprint(const json_t *keys, const char *thp) {
        json_t *k;
        size_t i;
        for (size_t h = 0; h < TK_HASH_COUNT; h++) {
                size_t dlen = jose_jwk_thp_buf(NULL, NULL, tk_hash_names[h], NULL, 0);
                if (dlen == SIZE_MAX || jose_b64_enc_buf(NULL, dlen, NULL, 0) != strlen(thp))
                        continue;
                json_array_foreach(keys, i, k) {
                        _cleanup_free_ char *t = tk_thumbprint(k, tk_hash_names[h]);
                        if (t && strcmp(t, thp) == 0)
                                return k;
                }
        }
        return NULL;
}

struct tang_config {
        const char *url;
        const char *thp;
        const json_t *adv_object;
        const char *adv_file;
};

static int parse_config(const json_t *cfg, struct tang_config *c, struct tc_err *err) {
        json_t *adv = json_object_get(cfg, "adv"), *thp = json_object_get(cfg, "thp");
        memset(c, 0, sizeof(*c));
        int r = tc_pin_config_check("tang", cfg, err);
        if (r < 0)
                return r;
        c->url = json_string_value(json_object_get(cfg, "url"));
        if (!c->url || !*c->url)
                return tc_fail(err, -EINVAL, "tang configuration has no \"url\"");
        if (thp && (!json_is_string(thp) || !*json_string_value(thp)))
                return tc_fail(err, -EINVAL, "tang configuration: \"thp\" must be a non-empty string");
        c->thp = json_string_value(thp);
        if (json_is_object(adv))
                c->adv_object = adv;
        else if (json_is_string(adv))
                c->adv_file = json_string_value(adv);
        else if (adv)
                return tc_fail(err, -EINVAL, "tang configuration: \"adv\" must be a file name or a JWS object");
        return 0;
}

static int load_adv_file(const char *path, json_t **jws, struct tc_err *err) {
        json_error_t jerr;
        json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
        if (!j)
                return tc_fail(err, errno == ENOENT ? -ENOENT : -EINVAL, "advertisement file %s: %s", path, jerr.text);
        if (!json_is_object(j)) {
                json_decref(j);
                return tc_fail(err, -EINVAL, "advertisement file %s is not a JWS object", path);
        }
        *jws = j;
        return 0;
}

/* "A, B": the S256 thumbprints of keys, for a message; "" if none. */
static void list_thumbprints(const json_t *keys, char *buf, size_t size) {
        json_t *k;
        size_t i, used = 0;
        buf[0] = '\0';
        json_array_foreach(keys, i, k) {
                _cleanup_free_ char *thp = tk_thumbprint(k, "S256");
                int n = thp ? snprintf(buf + used, size - used, "%s%s", used ? ", " : "", thp) : 0;
                if (n < 0 || (size_t) n >= size - used)
                        break;
                used += (size_t) n;
        }
}

/* A thp the server answers /adv/THP for but does not advertise: tang (and
 * tetherd) serve that for rotated keys too, signed by the current keys.
 * Clevis refuses such a thp, and so does tether; the message says why and
 * what to give instead. */
static int thp_not_advertised(const struct tang_config *c, const json_t *verify, struct tc_err *err) {
        char current[512];
        list_thumbprints(verify, current, sizeof(current));
        return tc_fail(err, -EPERM,
                       "signing key %s is no longer advertised by %s (the server still serves /adv/%s: the key was "
                       "rotated away); a rotated key is not trusted, as in Clevis: give a current signing key's "
                       "thumbprint as \"thp\" (the server advertises %s; check with tether-keys show or tang-show-keys "
                       "on the server)",
                       c->thp, c->url, c->thp, current[0] ? current : "none");
}

/* Trust on first use, as Clevis: a given advertisement is trusted as is; a
 * thp must name one of its signing keys; otherwise -y or the user decides. */
static int check_trust(const struct tc_ctx *ctx, const struct tang_config *c, bool adv_given, const json_t *verify,
                       struct tc_err *err) {
        if (c->thp) {
                if (find_by_thumbprint(verify, c->thp))
                        return 0;
                if (!adv_given)
                        return thp_not_advertised(c, verify, err);
                return tc_fail(err, -EPERM, "trusted key %s did not sign the advertisement of %s", c->thp, c->url);
        }
        if (adv_given || ctx->trust_all)
                return 0;

        size_t n = json_array_size(verify);
        _cleanup_free_ char **thps = calloc(n, sizeof(char *));
        if (!thps)
                return tc_fail(err, -ENOMEM, "out of memory");
        int r = 0;
        for (size_t i = 0; i < n && r == 0; i++)
                if (!(thps[i] = tk_thumbprint(json_array_get(verify, i), "S256")))
                        r = tc_fail(err, -ENOMEM, "out of memory");
        if (r == 0 && !ctx->trust)
                r = tc_fail(err, -EPERM,
                            "the signing keys of %s are not trusted: give \"thp\" in the configuration "
                            "(tether-keys show on the server) or -y to trust them without asking", c->url);
        if (r == 0) {
                r = ctx->trust(ctx->trust_data, c->url, (const char *const *) thps, n);
                if (r == 0)
                        r = tc_fail(err, -EPERM, "the signing keys of %s were not trusted", c->url);
                else if (r < 0)
                        r = tc_fail(err, r,
                                    "cannot ask whether to trust the signing keys of %s (no terminal): give \"thp\" "
                                    "in the configuration or -y", c->url);
                else
                        r = 0;
        }
        for (size_t i = 0; i < n; i++)
                free(thps[i]);
        return r;
}

/* /adv/THP was refused (err says how): /adv, asked too, tells a key the
 * server does not have from a URL with no tang server. */
static int explain_unknown_thp(const struct tc_ctx *ctx, const struct tang_config *c, struct tc_err *err) {
        json_auto_t *jws = NULL, *payload = NULL, *verify = NULL;
        struct tc_err probe = {}, first = *err;
        char current[512];
        int r = tc_tang_fetch_adv(ctx, c->url, NULL, &jws, &payload, &probe);
        if (r == -EPROTO || r == -EBADMSG) {
                /* Not a tang server (there): its words say that. */
                *err = probe;
                return r;
        }
        if (r < 0 || !(verify = tc_tang_keys_for(payload, "verify")))
                return tc_fail(err, -EPROTO, "%s (no signing key with that thumbprint, or no tang server at that URL)",
                               first.msg);
        list_thumbprints(verify, current, sizeof(current));
        return tc_fail(err, -EPROTO,
                       "tang server %s refused signing key %s: %s, while its /adv answers (its signing keys: %s); "
                       "check the thumbprint with tether-keys show or tang-show-keys on the server",
                       c->url, c->thp, first.msg, current[0] ? current : "none");
}

static int tang_encrypt(const struct tc_ctx *ctx, const json_t *cfg, const uint8_t *pt, size_t pt_len, char **jwe,
                        struct tc_err *err) {
        struct tang_config c;
        json_auto_t *jws = NULL, *payload = NULL, *verify = NULL, *derive = NULL, *header = NULL;
        _cleanup_(BN_clear_freep) BIGNUM *eph = NULL;
        _cleanup_(EC_POINT_clear_freep) EC_POINT *epk = NULL, *srv = NULL, *shared = NULL;
        _cleanup_free_ char *kid = NULL;
        _cleanup_(tc_ec_clear) struct tc_ec ec = {};
        uint8_t z[ECPOINT_MAX_COORD], cek[TC_CEK_LEN];
        TC_CLEANUP_ERASE(z);
        TC_CLEANUP_ERASE(cek);
        int r;

        r = parse_config(cfg, &c, err);
        if (r < 0)
                return r;
        if (c.adv_object || c.adv_file) {
                if (c.adv_object)
                        jws = json_incref((json_t *) c.adv_object);
                else if ((r = load_adv_file(c.adv_file, &jws, err)) < 0)
                        return r;
                r = tc_tang_verify_adv(jws, c.adv_file ? c.adv_file : "the configuration", &payload, err);
        } else {
                r = tc_tang_fetch_adv(ctx, c.url, c.thp, &jws, &payload, err);
                if (r == -EPROTO && c.thp)
                        r = explain_unknown_thp(ctx, &c, err);
        }
        if (r < 0)
                return r;

        verify = tc_tang_keys_for(payload, "verify");
        derive = tc_tang_keys_for(payload, "deriveKey");
        if (!verify || !derive)
                return tc_fail(err, -ENOMEM, "out of memory");
        r = check_trust(ctx, &c, c.adv_object || c.adv_file, verify, err);
        if (r < 0)
                return r;
        json_t *exc = json_array_get(derive, 0);
        if (!exc)
                return tc_fail(err, -EINVAL, "advertisement of %s has no exchange key", c.url);

        r = tc_ec_init(&ec, json_string_value(json_object_get(exc, "crv")), err);
        if (r < 0)
                return tc_wrap(err, r, "exchange key of %s", c.url);
        if ((r = tc_ec_point_from_jwk(&ec, exc, "the server's exchange key", &srv, err)) < 0 ||
            (r = tc_ec_generate(&ec, &eph, &epk, err)) < 0 || (r = tc_ec_mul(&ec, eph, srv, &shared, err)) < 0)
                return r;
        r = tc_ec_x_bytes(&ec, shared, z, err);
        if (r < 0)
                return r;
        size_t z_len = (size_t) r;
        kid = tk_thumbprint(exc, "S256");
        json_t *epk_jwk = tc_ec_point_to_jwk(&ec, epk);
        header = json_pack("{s:s,s:s,s:o*,s:s?,s:{s:s,s:{s:s,s:O}}}", "alg", "ECDH-ES", "enc", "A256GCM", "epk",
                           epk_jwk, "kid", kid, "clevis", "pin", "tang", "tang", "url", c.url, "adv", payload);
        if (!kid || !epk_jwk || !header)
                return tc_fail(err, -ENOMEM, "out of memory");
        r = tc_jwe_ecdh_es_cek(header, z, z_len, cek, err);
        return r < 0 ? r : tc_jwe_encrypt(header, cek, pt, pt_len, jwe, err);
}

/* POST X to url/rec/kid; returns the server's Y, validated. */
static int recover(const struct tc_ctx *ctx, const struct tc_ec *ec, const char *url, const char *kid,
                   const EC_POINT *x, EC_POINT **y, struct tc_err *err) {
        _cleanup_free_ char *rec_url = NULL, *body = NULL;
        _cleanup_(tc_http_reply_clear) struct tc_http_reply reply = {};
        json_auto_t *req = tc_ec_point_to_jwk(ec, x);
        int r;

        if (!req || json_object_set_new(req, "alg", json_string("ECMR")) < 0 ||
            json_object_set_new(req, "key_ops", json_pack("[s]", "deriveKey")) < 0 ||
            !(body = json_dumps(req, JSON_SORT_KEYS | JSON_COMPACT)) || asprintf(&rec_url, "%s/rec/%s", url, kid) < 0) {
                rec_url = NULL; /* undefined after a failed asprintf, and freed on return */
                return tc_fail(err, -ENOMEM, "out of memory");
        }
        r = tc_http_request(ctx, rec_url, body, strlen(body), "application/jwk+json", &reply, err);
        if (r < 0)
                return tc_wrap(err, r, "tang server");
        if (reply.status != 200) {
                long status = reply.status;
                /* tetherd's 503 for a key file it has but cannot read (its
                 * owner or mode): the binding is fine, the server is not. */
                bool unreadable = status == 503 && reply.body &&
                                  memmem(reply.body, reply.len, "cannot read its key file", 24);
                /* tetherd's 403s of a per-host URL: told apart by their first
                 * word only, so no text of the server's reaches the user. */
                bool revoked = status == 403 && reply.body && reply.len >= 8 && memcmp(reply.body, "revoked:", 8) == 0;
                bool held = status == 403 && reply.body && reply.len >= 5 && memcmp(reply.body, "held:", 5) == 0;
                /* -ENOKEY for 404: the binding is dead, and regen says so. */
                return tc_fail(err, status == 404 ? -ENOKEY : -EPROTO,
                               "tang server %s answered HTTP %ld to the recovery request%s", url, status,
                               status == 404 ? " (the server no longer has that key: bind again with the passphrase, then unbind this binding)"
                               : unreadable ? " (the server has the key but cannot read it: its administrator must give the key file to the server's user; do not rebind)"
                               : revoked    ? " (the server's administrator revoked this host: it unlocks only with another binding or the passphrase)"
                               : held       ? " (this host is held: the server's administrator must allow the recovery, tether-keys host allow, then try again)"
                                            : "");
        }
        json_auto_t *rep = json_loadb(reply.body, reply.len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(rep))
                return tc_fail(err, -EBADMSG, "tang server %s answered the recovery request with something that is not a JWK", url);
        return tc_ec_point_from_jwk(ec, rep, "the tang server's answer", y, err) < 0
                       ? tc_wrap(err, -EBADMSG, "tang server %s", url)
                       : 0;
}

/* Whether the server's answer Y to X came from the key S it was asked for.
 * One answer proves nothing without the private key, but two do: asked for
 * X + G, the key s answers sX + sG = Y + S. Returns 1 (it did), 0 (another
 * key answered) or < 0 (no second answer to compare with). */
static int answered_with_key(const struct tc_ctx *ctx, const struct tc_ec *ec, const char *url, const char *kid,
                             const EC_POINT *x, const EC_POINT *y, const EC_POINT *s) {
        _cleanup_(EC_POINT_clear_freep) EC_POINT *x2 = NULL, *y2 = NULL, *diff = NULL;
        struct tc_err ignored;
        int r;

        if ((r = tc_ec_add(ec, x, EC_GROUP_get0_generator(ec->group), false, &x2, &ignored)) < 0 ||
            (r = recover(ctx, ec, url, kid, x2, &y2, &ignored)) < 0 ||
            (r = tc_ec_add(ec, y2, y, true, &diff, &ignored)) < 0)
                return r;
        return EC_POINT_cmp(ec->group, diff, s, ec->bn) == 0;
}

static int tang_decrypt(const struct tc_ctx *ctx, const struct tc_jwe *jwe, uint8_t **pt, size_t *pt_len,
                        struct tc_err *err) {
        const json_t *h = jwe->header;
        const json_t *tang = json_object_get(json_object_get(h, "clevis"), "tang");
        const json_t *epk = json_object_get(h, "epk");
        const char *kid = json_string_value(json_object_get(h, "kid"));
        const char *url = json_string_value(json_object_get(tang, "url"));
        const char *alg = json_string_value(json_object_get(h, "alg"));
        _cleanup_(BN_clear_freep) BIGNUM *e = NULL;
        _cleanup_(EC_POINT_clear_freep) EC_POINT *c = NULL, *s = NULL, *ep = NULL, *x = NULL, *y = NULL, *t = NULL, *z = NULL;
        _cleanup_(tc_ec_clear) struct tc_ec ec = {};
        uint8_t zx[ECPOINT_MAX_COORD], cek[TC_CEK_LEN];
        TC_CLEANUP_ERASE(zx);
        TC_CLEANUP_ERASE(cek);
        int r;

        if (!alg || strcmp(alg, "ECDH-ES") != 0)
                return tc_fail(err, -EINVAL, "tang JWE: key agreement \"%s\" is not ECDH-ES", alg ? alg : "(none)");
        if (!json_is_object(epk) || !kid || !url)
                return tc_fail(err, -EINVAL, "tang JWE lacks %s", !json_is_object(epk) ? "\"epk\"" : !kid ? "\"kid\"" : "clevis.tang.url");
        json_t *srv = find_by_thumbprint(json_object_get(json_object_get(tang, "adv"), "keys"), kid);
        if (!srv)
                return tc_fail(err, -EINVAL, "tang JWE: key %s is not in its clevis.tang.adv", kid);

        r = tc_ec_init(&ec, json_string_value(json_object_get(epk, "crv")), err);
        if (r < 0)
                return tc_wrap(err, r, "tang JWE epk");
        if ((r = tc_ec_point_from_jwk(&ec, epk, "the JWE's epk", &c, err)) < 0 ||
            (r = tc_ec_point_from_jwk(&ec, srv, "the server key in the JWE", &s, err)) < 0 ||
            (r = tc_ec_generate(&ec, &e, &ep, err)) < 0 || (r = tc_ec_add(&ec, c, ep, false, &x, err)) < 0 ||
            (r = recover(ctx, &ec, url, kid, x, &y, err)) < 0 || (r = tc_ec_mul(&ec, e, s, &t, err)) < 0)
                return r;
        /* Y - eS = s(C + E) - eS = sC: the ECDH secret the encrypter computed. */
        if ((r = tc_ec_add(&ec, y, t, true, &z, err)) < 0 || (r = tc_ec_x_bytes(&ec, z, zx, err)) < 0)
                return r;
        r = tc_jwe_ecdh_es_cek(h, zx, (size_t) r, cek, err);
        if (r == 0)
                r = tc_jwe_decrypt(jwe, cek, pt, pt_len, err);
        /* Both look the same from here: a damaged JWE, and a server (or a
         * proxy in front of it) that answered with another key's point. */
        if (r == -EBADMSG && answered_with_key(ctx, &ec, url, kid, x, y, s) == 0)
                r = tc_fail(err, -EBADMSG,
                            "tang server %s answered the recovery request for key %s with another key's point "
                            "(a proxy or load balancer sending it to the wrong server?)", url, kid);
        return r;
}

const struct tc_pin tc_pin_tang = {
        .name = "tang",
        .encrypt = tang_encrypt,
        .decrypt = tang_decrypt,
};
