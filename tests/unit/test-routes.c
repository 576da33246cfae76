/* server/routes.c: Tang's HTTP API as a function of (method, target, body),
 * against the tables of docs/nbde-facts.md section 2. */
#include "check.h"
#include "testutil.h"
#include "routes.h"
#include "served.h"
#include "hosts.h"

#include <openssl/objects.h>

/* ---- route_match ---- */

struct match_case {
        const char *method, *target;
        enum route_kind kind;
        const char *arg;   /* expected thp/kid, NULL: none */
};

static const char *kind_name(enum route_kind k) {
        switch (k) {
        case ROUTE_NOT_FOUND: return "NOT_FOUND";
        case ROUTE_METHOD_NOT_ALLOWED: return "METHOD_NOT_ALLOWED";
        case ROUTE_URI_TOO_LONG: return "URI_TOO_LONG";
        case ROUTE_ADV: return "ADV";
        case ROUTE_REC: return "REC";
        case ROUTE_HEALTH: return "HEALTH";
        case ROUTE_HOST_ADV: return "HOST_ADV";
        case ROUTE_HOST_REC: return "HOST_REC";
        }
        return "?";
}

static void check_matches(const char *prefix, const struct match_case *c, size_t n) {
        for (size_t i = 0; i < n; i++) {
                struct route rt;
                memset(&rt, 0x5a, sizeof(rt));
                route_match(prefix, c[i].method, c[i].target, &rt);
                if (!CHECK_INT(rt.kind, c[i].kind)) {
                        fprintf(stderr, "  prefix %s: %s %s -> %s, expected %s\n", prefix ? prefix : "(none)",
                                c[i].method, c[i].target, kind_name(rt.kind), kind_name(c[i].kind));
                        continue;
                }
                if (c[i].kind != ROUTE_ADV && c[i].kind != ROUTE_REC && c[i].kind != ROUTE_HOST_ADV &&
                    c[i].kind != ROUTE_HOST_REC)
                        continue;
                size_t want = c[i].arg ? strlen(c[i].arg) : 0;
                if (!CHECK_INT(rt.arg_len, want)) {
                        fprintf(stderr, "  %s %s: wrong argument length\n", c[i].method, c[i].target);
                        continue;
                }
                if (want) {
                        /* The argument points into the target itself. */
                        CHECK(rt.arg >= c[i].target && rt.arg + rt.arg_len <= c[i].target + strlen(c[i].target));
                        CHECK(strncmp(rt.arg, c[i].arg, want) == 0);
                }
        }
}

TEST(match_without_prefix) {
        static const struct match_case cases[] = {
                { "GET", "/adv", ROUTE_ADV, NULL },
                { "GET", "/adv/", ROUTE_ADV, NULL },
                { "GET", "//adv", ROUTE_ADV, NULL },
                { "GET", "//adv//", ROUTE_ADV, NULL },
                { "GET", "/adv/THP", ROUTE_ADV, "THP" },
                { "GET", "//adv//THP", ROUTE_ADV, "THP" },
                { "GET", "/adv/aZ09_-", ROUTE_ADV, "aZ09_-" },
                { "POST", "/rec/KID", ROUTE_REC, "KID" },
                { "POST", "///rec///KID", ROUTE_REC, "KID" },
                { "GET", "/health", ROUTE_HEALTH, NULL },
                { "GET", "/health/", ROUTE_HEALTH, NULL },
                /* Other methods on a matching path: 405. */
                { "POST", "/adv", ROUTE_METHOD_NOT_ALLOWED, NULL },
                { "PUT", "/adv/", ROUTE_METHOD_NOT_ALLOWED, NULL },
                { "HEAD", "/adv", ROUTE_METHOD_NOT_ALLOWED, NULL },
                { "DELETE", "/adv/THP", ROUTE_METHOD_NOT_ALLOWED, NULL },
                { "GET", "/rec/KID", ROUTE_METHOD_NOT_ALLOWED, NULL },
                { "PUT", "/rec/KID", ROUTE_METHOD_NOT_ALLOWED, NULL },
                { "POST", "/health", ROUTE_METHOD_NOT_ALLOWED, NULL },
                { "get", "/adv", ROUTE_METHOD_NOT_ALLOWED, NULL },
                /* Anything else: 404, whatever the method. */
                { "GET", "/", ROUTE_NOT_FOUND, NULL },
                { "GET", "", ROUTE_NOT_FOUND, NULL },
                { "GET", "adv", ROUTE_NOT_FOUND, NULL },
                { "POST", "/rec", ROUTE_NOT_FOUND, NULL },
                { "POST", "/rec/", ROUTE_NOT_FOUND, NULL },
                { "POST", "//rec//", ROUTE_NOT_FOUND, NULL },
                { "GET", "/rec", ROUTE_NOT_FOUND, NULL },
                { "GET", "/advx", ROUTE_NOT_FOUND, NULL },
                { "GET", "/ADV", ROUTE_NOT_FOUND, NULL },
                { "GET", "/adv?x=1", ROUTE_NOT_FOUND, NULL },
                { "GET", "/adv/?x=1", ROUTE_NOT_FOUND, NULL },
                { "GET", "/adv/THP?x=1", ROUTE_NOT_FOUND, NULL },
                { "POST", "/rec/KID?x=1", ROUTE_NOT_FOUND, NULL },
                { "GET", "/adv/THP/", ROUTE_NOT_FOUND, NULL },
                { "GET", "/adv/THP/more", ROUTE_NOT_FOUND, NULL },
                { "POST", "/rec/KID/", ROUTE_NOT_FOUND, NULL },
                { "GET", "/adv/a.b", ROUTE_NOT_FOUND, NULL },
                { "GET", "/adv/a%2Db", ROUTE_NOT_FOUND, NULL },
                { "GET", "/adv/a+b", ROUTE_NOT_FOUND, NULL },
                { "GET", "/adv%2F", ROUTE_NOT_FOUND, NULL },
                { "GET", "/adv#frag", ROUTE_NOT_FOUND, NULL },
                { "GET", "/foo/adv", ROUTE_NOT_FOUND, NULL },
                { "GET", "/healthz", ROUTE_NOT_FOUND, NULL },
                { "GET", "/health/x", ROUTE_NOT_FOUND, NULL },
                { "GET", "http://host/adv", ROUTE_NOT_FOUND, NULL },
                { "DELETE", "/nothing", ROUTE_NOT_FOUND, NULL },
        };
        check_matches(NULL, cases, ELEMENTS(cases));
        /* An empty prefix is no prefix. */
        check_matches("", cases, ELEMENTS(cases));
}

TEST(match_with_endpoint_prefix) {
        static const struct match_case cases[] = {
                { "GET", "/tang/adv", ROUTE_ADV, NULL },
                { "GET", "/tang/adv/", ROUTE_ADV, NULL },
                { "GET", "/tang//adv//", ROUTE_ADV, NULL },
                { "GET", "/tang/adv/THP", ROUTE_ADV, "THP" },
                { "POST", "/tang/rec/KID", ROUTE_REC, "KID" },
                { "POST", "/tang/adv", ROUTE_METHOD_NOT_ALLOWED, NULL },
                { "GET", "/tang/rec/KID", ROUTE_METHOD_NOT_ALLOWED, NULL },
                /* Without the prefix, nothing matches. */
                { "GET", "/adv", ROUTE_NOT_FOUND, NULL },
                { "GET", "/adv/THP", ROUTE_NOT_FOUND, NULL },
                { "POST", "/rec/KID", ROUTE_NOT_FOUND, NULL },
                { "GET", "/tang", ROUTE_NOT_FOUND, NULL },
                { "GET", "/tang/", ROUTE_NOT_FOUND, NULL },
                { "GET", "/tangadv", ROUTE_NOT_FOUND, NULL },
                { "GET", "/tangx/adv", ROUTE_NOT_FOUND, NULL },
                { "GET", "/other/adv", ROUTE_NOT_FOUND, NULL },
                { "GET", "/adv/tang", ROUTE_NOT_FOUND, NULL },
                { "GET", "/tang/adv?x=1", ROUTE_NOT_FOUND, NULL },
                { "POST", "/tang/rec", ROUTE_NOT_FOUND, NULL },
        };
        check_matches("tang", cases, ELEMENTS(cases));
}

struct host_case {
        const char *method, *target;
        enum route_kind kind;
        const char *arg, *host;
};

static void check_host_matches(const char *prefix, const struct host_case *c, size_t n) {
        for (size_t i = 0; i < n; i++) {
                struct match_case m = { c[i].method, c[i].target, c[i].kind, c[i].arg };
                struct route rt;
                check_matches(prefix, &m, 1);
                route_match(prefix, c[i].method, c[i].target, &rt);
                if (c[i].kind != ROUTE_HOST_ADV && c[i].kind != ROUTE_HOST_REC)
                        continue;
                /* The name points into the target itself. */
                if (!CHECK_INT(rt.host_len, strlen(c[i].host)) || !CHECK(strncmp(rt.host, c[i].host, rt.host_len) == 0))
                        fprintf(stderr, "  %s %s: wrong host\n", c[i].method, c[i].target);
        }
}

TEST(match_host_routes) {
        static const struct host_case cases[] = {
                { "GET", "/h/web01/adv", ROUTE_HOST_ADV, NULL, "web01" },
                { "GET", "/h/web01/adv/", ROUTE_HOST_ADV, NULL, "web01" },
                { "GET", "//h//web01//adv//", ROUTE_HOST_ADV, NULL, "web01" },
                { "GET", "/h/web01/adv/THP", ROUTE_HOST_ADV, "THP", "web01" },
                { "POST", "/h/web01/rec/KID", ROUTE_HOST_REC, "KID", "web01" },
                { "POST", "///h///a.b_c-9///rec///KID", ROUTE_HOST_REC, "KID", "a.b_c-9" },
                { "POST", "/h/0/rec/KID", ROUTE_HOST_REC, "KID", "0" },
                { "POST", "/h/web01/adv", ROUTE_METHOD_NOT_ALLOWED, NULL, NULL },
                { "GET", "/h/web01/rec/KID", ROUTE_METHOD_NOT_ALLOWED, NULL, NULL },
                /* Names outside [a-z0-9][a-z0-9._-]{0,62}, or with "..": no route. */
                { "GET", "/h/../adv", ROUTE_NOT_FOUND, NULL, NULL },
                { "GET", "/h/a..b/adv", ROUTE_NOT_FOUND, NULL, NULL },
                { "GET", "/h/.web/adv", ROUTE_NOT_FOUND, NULL, NULL },
                { "GET", "/h/-web/adv", ROUTE_NOT_FOUND, NULL, NULL },
                { "GET", "/h/Web01/adv", ROUTE_NOT_FOUND, NULL, NULL },
                { "GET", "/h/web%2F01/adv", ROUTE_NOT_FOUND, NULL, NULL },
                { "GET", "/h/0123456789012345678901234567890123456789012345678901234567890123/adv", ROUTE_NOT_FOUND,
                  NULL, NULL },
                { "GET", "/h/web01", ROUTE_NOT_FOUND, NULL, NULL },
                { "GET", "/h/web01/", ROUTE_NOT_FOUND, NULL, NULL },
                { "GET", "/h//adv", ROUTE_NOT_FOUND, NULL, NULL },
                { "GET", "/h/adv", ROUTE_NOT_FOUND, NULL, NULL },
                { "POST", "/h/web01/rec", ROUTE_NOT_FOUND, NULL, NULL },
                { "POST", "/h/web01/rec/KID/x", ROUTE_NOT_FOUND, NULL, NULL },
                { "GET", "/h/web01/adv?x=1", ROUTE_NOT_FOUND, NULL, NULL },
                { "GET", "/h/web01/health", ROUTE_NOT_FOUND, NULL, NULL },
                { "GET", "/hx/web01/adv", ROUTE_NOT_FOUND, NULL, NULL },
                { "GET", "/web01/adv", ROUTE_NOT_FOUND, NULL, NULL },
                /* The shared routes are still what they were. */
                { "GET", "/health", ROUTE_HEALTH, NULL, NULL },
                { "GET", "/adv", ROUTE_ADV, NULL, NULL },
        };
        check_host_matches(NULL, cases, ELEMENTS(cases));
        static const struct host_case prefixed[] = {
                { "GET", "/tang/h/web01/adv", ROUTE_HOST_ADV, NULL, "web01" },
                { "POST", "//tang//h//web01//rec//KID", ROUTE_HOST_REC, "KID", "web01" },
                { "GET", "/h/web01/adv", ROUTE_NOT_FOUND, NULL, NULL },
        };
        check_host_matches("tang", prefixed, ELEMENTS(prefixed));
}

TEST(host_names) {
        static const char *const good[] = { "a", "0", "web01", "web-01.example_x", "a.b.c",
                "012345678901234567890123456789012345678901234567890123456789012" };
        static const char *const bad[] = { "", ".", "..", ".a", "-a", "_a", "a..b", "A", "a/b", "a b", "a\n",
                "0123456789012345678901234567890123456789012345678901234567890123", "\xc3\xa9" };
        for (size_t i = 0; i < ELEMENTS(good); i++)
                if (!CHECK(tk_host_name_valid(good[i])))
                        fprintf(stderr, "  '%s' refused\n", good[i]);
        for (size_t i = 0; i < ELEMENTS(bad); i++)
                if (!CHECK(!tk_host_name_valid(bad[i])))
                        fprintf(stderr, "  '%s' accepted\n", bad[i]);
}

TEST(match_refuses_overlong_targets) {
        char target[TANG_MAX_URI + 2];
        struct route rt;

        /* Exactly the limit still matches. */
        strcpy(target, "/adv/");
        memset(target + 5, 'A', TANG_MAX_URI - 5);
        target[TANG_MAX_URI] = '\0';
        route_match(NULL, "GET", target, &rt);
        CHECK_INT(rt.kind, ROUTE_ADV);
        CHECK_INT(rt.arg_len, TANG_MAX_URI - 5);

        strcat(target, "A");
        route_match(NULL, "GET", target, &rt);
        CHECK_INT(rt.kind, ROUTE_URI_TOO_LONG);
        route_match(NULL, "POST", target, &rt);
        CHECK_INT(rt.kind, ROUTE_URI_TOO_LONG);
        CHECK_INT(TANG_MAX_URI, 4096);
        CHECK_INT(TANG_MAX_BODY, 65536);
}

/* ---- route_serve against a real key directory ---- */

static char *dir;
static json_t *sig, *exc, *old_sig, *old_exc;
static const struct tu_key key_files[] = {
        { "sig.jwk", TU_ES512, &sig },
        { "exc.jwk", TU_ECMR, &exc },
        { ".old-sig.jwk", TU_ES512, &old_sig },
        { ".old-exc.jwk", TU_ECMR, &old_exc },
};
static struct served *srv;
static EC_GROUP *p521, *p256;
static char *good_body;   /* a valid P-521 client point */

static int serve(const struct served *s, const char *method, const char *target, const char *body,
                 struct reply *reply) {
        struct route rt;
        route_match(NULL, method, target, &rt);
        memset(reply, 0, sizeof(*reply));
        reply->status = -1;
        route_serve(s, &rt, body, body ? strlen(body) : 0, reply);
        return reply->status;
}

static int status_of(const struct served *s, const char *method, const char *target, const char *body) {
        struct reply reply;
        int st = serve(s, method, target, body, &reply);
        if (st == 500 && strncmp(target, "/adv", 4) == 0) {
                /* /adv's 500 says which fault in one line (see adv_body_of). */
                CHECK_STR(reply.content_type, "text/plain");
                CHECK(reply.len > 1 && reply.body[reply.len - 1] == '\n' &&
                      !memchr(reply.body, '\n', reply.len - 1));
        } else if (st != 200) {
                /* Other errors carry no body, as tang's. */
                CHECK(reply.content_type == NULL);
                CHECK_INT(reply.len, 0);
        }
        return st;
}

/* The body of /adv's 500. */
static const char *adv_body_of(const struct served *s) {
        static char body[sizeof(((struct reply *) NULL)->buf) + 1];
        struct reply reply;

        body[0] = '\0';
        if (CHECK_INT(serve(s, "GET", "/adv", NULL, &reply), 500) && CHECK(reply.body && reply.len < sizeof(body))) {
                memcpy(body, reply.body, reply.len);
                body[reply.len] = '\0';
        }
        return body;
}

/* /health: the status, and the body that says why (text/plain, one line),
 * which a load balancer logs. */
static const char *health_of(const struct served *s, int want_status) {
        static char body[sizeof(((struct reply *) NULL)->buf) + 1];
        struct reply reply;

        CHECK_INT(serve(s, "GET", "/health", NULL, &reply), want_status);
        CHECK_STR(reply.content_type, "text/plain");
        body[0] = '\0';
        if (CHECK(reply.body && reply.len < sizeof(body))) {
                memcpy(body, reply.body, reply.len);
                body[reply.len] = '\0';
        }
        return body;
}

static char *path_for(const char *route, const char *arg) {
        char *p = NULL;
        if (asprintf(&p, "/%s/%s", route, arg) < 0)
                abort();
        return p;
}

static json_t *reply_json(const struct reply *r) {
        return r->body ? json_loadb(r->body, r->len, 0, NULL) : NULL;
}

static size_t n_signatures(const json_t *jws) {
        json_t *sigs = json_object_get(jws, "signatures");
        if (sigs)
                return json_array_size(sigs);
        return json_object_get(jws, "signature") ? 1 : 0;
}

static const char *const hashes[] = { "S1", "S224", "S256", "S384", "S512" };

TEST(serve_default_adv) {
        struct reply r;

        CHECK_INT(serve(srv, "GET", "/adv", NULL, &r), 200);
        CHECK_STR(r.content_type, "application/jose+json");
        json_t *jws = reply_json(&r);
        if (CHECK(jws != NULL)) {
                CHECK(tu_jws_verifies_with(jws, sig));
                CHECK(!tu_jws_verifies_with(jws, old_sig));
                CHECK_INT(n_signatures(jws), 1);
        }
        json_decref(jws);
        CHECK_INT(status_of(srv, "GET", "/adv/", NULL), 200);
        CHECK_INT(status_of(srv, "GET", "//adv//", NULL), 200);
}

TEST(serve_adv_by_thumbprint) {
        struct reply def, r;

        REQUIRE(serve(srv, "GET", "/adv", NULL, &def) == 200);
        for (size_t h = 0; h < ELEMENTS(hashes); h++) {
                /* The advertised signing key: the default advertisement. */
                char *t = tu_thumbprint(sig, hashes[h]), *p = path_for("adv", t);
                if (CHECK_INT(serve(srv, "GET", p, NULL, &r), 200))
                        CHECK(r.len == def.len && memcmp(r.body, def.body, r.len) == 0);
                free(t);
                free(p);

                /* A hidden signing key: also signed by it. */
                t = tu_thumbprint(old_sig, hashes[h]);
                p = path_for("adv", t);
                if (!CHECK_INT(serve(srv, "GET", p, NULL, &r), 200))
                        fprintf(stderr, "  GET %s (%s of the hidden signing key)\n", p, hashes[h]);
                else {
                        CHECK_STR(r.content_type, "application/jose+json");
                        json_t *jws = reply_json(&r);
                        CHECK(jws && tu_jws_verifies_with(jws, old_sig));
                        CHECK(jws && tu_jws_verifies_with(jws, sig));
                        CHECK_INT(n_signatures(jws), 2);
                        /* The payload still advertises only the current keys. */
                        json_t *def_jws = json_loadb(def.body, def.len, 0, NULL);
                        CHECK(json_equal(json_object_get(jws, "payload"), json_object_get(def_jws, "payload")));
                        json_decref(def_jws);
                        json_decref(jws);
                }
                free(t);
                free(p);

                /* Exchange keys, advertised or hidden, do not sign: 404. */
                t = tu_thumbprint(exc, hashes[h]);
                p = path_for("adv", t);
                CHECK_INT(status_of(srv, "GET", p, NULL), 404);
                free(t);
                free(p);
                t = tu_thumbprint(old_exc, hashes[h]);
                p = path_for("adv", t);
                CHECK_INT(status_of(srv, "GET", p, NULL), 404);
                free(t);
                free(p);
        }
}

TEST(serve_adv_unknown_thumbprint_is_404) {
        char *t = tu_thumbprint(old_sig, "S256"), buf[200];

        CHECK_INT(status_of(srv, "GET", "/adv/unknown", NULL), 404);
        CHECK_INT(status_of(srv, "GET", "/adv/A", NULL), 404);
        /* Truncated or extended thumbprints are not prefixes of a match. */
        snprintf(buf, sizeof(buf), "/adv/%.*s", (int) strlen(t) - 1, t);
        CHECK_INT(status_of(srv, "GET", buf, NULL), 404);
        snprintf(buf, sizeof(buf), "/adv/%sA", t);
        CHECK_INT(status_of(srv, "GET", buf, NULL), 404);
        free(t);
}

TEST(serve_rec_with_exchange_kid_by_every_hash) {
        struct reply r;
        for (size_t h = 0; h < ELEMENTS(hashes); h++) {
                const json_t *keys[] = { exc, old_exc };
                for (size_t k = 0; k < 2; k++) {
                        char *t = tu_thumbprint(keys[k], hashes[h]), *p = path_for("rec", t);
                        if (!CHECK_INT(serve(srv, "POST", p, good_body, &r), 200))
                                fprintf(stderr, "  POST %s (%s, %s key)\n", p, hashes[h], k ? "hidden" : "advertised");
                        else
                                CHECK_STR(r.content_type, "application/jwk+json");
                        free(t);
                        free(p);
                }
        }
}

TEST(serve_rec_with_signing_kid_is_403) {
        for (size_t h = 0; h < ELEMENTS(hashes); h++) {
                const json_t *keys[] = { sig, old_sig };
                for (size_t k = 0; k < 2; k++) {
                        char *t = tu_thumbprint(keys[k], hashes[h]), *p = path_for("rec", t);
                        CHECK_INT(status_of(srv, "POST", p, good_body), 403);
                        free(t);
                        free(p);
                }
        }
}

TEST(serve_rec_unknown_kid_is_404_after_validation) {
        CHECK_INT(status_of(srv, "POST", "/rec/unknown", good_body), 404);
        /* Tang validates the body first: {} to an unknown kid is 400. */
        CHECK_INT(status_of(srv, "POST", "/rec/unknown", "{}"), 400);
        CHECK_INT(status_of(srv, "POST", "/rec/unknown", "not json"), 400);
}

/* The exchange key's kid with a body built from good_body by one change. */
static int rec_with(const char *body) {
        char *t = tu_thumbprint(exc, "S256"), *p = path_for("rec", t);
        int st = status_of(srv, "POST", p, body);
        free(t);
        free(p);
        return st;
}

static char *variant(const char *key, json_t *value) {
        json_t *j = json_loads(good_body, 0, NULL);
        if (value)
                json_object_set_new(j, key, value);
        else
                json_object_del(j, key);
        char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(j);
        return s;
}

static void check_variant(const char *key, json_t *value, int want) {
        char *body = variant(key, value);
        if (!CHECK_INT(rec_with(body), want))
                fprintf(stderr, "  body %s\n", body);
        free(body);
}

TEST(serve_rec_status_codes) {
        static const struct { const char *body; int status; } raw[] = {
                { "", 400 },
                { "not json", 400 },
                { "{", 400 },
                { "[1]", 400 },
                { "\"EC\"", 400 },
                { "null", 400 },
                { "{}", 400 },
                { "{\"kty\":\"EC\",\"kty\":\"EC\"}", 400 },
        };
        for (size_t i = 0; i < ELEMENTS(raw); i++)
                if (!CHECK_INT(rec_with(raw[i].body), raw[i].status))
                        fprintf(stderr, "  body %s\n", raw[i].body);

        CHECK_INT(rec_with(good_body), 200);
        /* clevis sends a trailing newline. */
        char *nl = NULL;
        CHECK(asprintf(&nl, "%s\n", good_body) > 0);
        CHECK_INT(rec_with(nl), 200);
        free(nl);

        check_variant("kty", NULL, 400);
        check_variant("kty", json_string("RSA"), 400);
        check_variant("kty", json_string("oct"), 400);
        check_variant("kty", json_integer(1), 400);
        check_variant("alg", NULL, 200);
        check_variant("alg", json_string("ECDH-ES"), 400);
        check_variant("alg", json_string("ES512"), 400);
        check_variant("key_ops", NULL, 200);
        check_variant("key_ops", json_pack("[s]", "sign"), 403);
        check_variant("key_ops", json_pack("[s,s]", "sign", "verify"), 403);
        check_variant("key_ops", json_array(), 403);
        check_variant("use", json_string("sig"), 200);   /* key_ops still says deriveKey */
        /* "use" alone decides when key_ops is absent. */
        json_t *j = json_loads(good_body, 0, NULL);
        json_object_del(j, "key_ops");
        json_object_set_new(j, "use", json_string("sig"));
        char *body = json_dumps(j, JSON_COMPACT);
        CHECK_INT(rec_with(body), 403);
        free(body);
        json_decref(j);
        check_variant("crv", NULL, 400);
        check_variant("crv", json_string("P-384"), 400);
        check_variant("x", NULL, 400);
        check_variant("y", NULL, 400);
        check_variant("x", json_integer(5), 400);
        check_variant("x", json_string("!!!!"), 400);
        check_variant("x", json_string(""), 400);
}

TEST(serve_rec_rejects_foreign_and_invalid_points) {
        /* A P-256 point, labelled as such and as P-521. */
        EC_POINT *q = tu_random_point(p256, NULL);
        json_t *j = q ? tu_point_jwk(p256, "P-256", q) : NULL;
        char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
        REQUIRE(body);
        CHECK_INT(rec_with(body), 400);
        free(body);
        json_object_set_new(j, "crv", json_string("P-521"));
        body = json_dumps(j, JSON_COMPACT);
        CHECK_INT(rec_with(body), 400);
        free(body);
        json_decref(j);
        EC_POINT_free(q);

        /* Off the curve: y + 1. */
        j = json_loads(good_body, 0, NULL);
        BIGNUM *y = tu_b64_bn(json_string_value(json_object_get(j, "y")));
        BN_add_word(y, 1);
        char *ys = tu_bn_b64(y, 66);
        json_object_set_new(j, "y", json_string(ys));
        body = json_dumps(j, JSON_COMPACT);
        CHECK_INT(rec_with(body), 400);
        free(body);
        free(ys);
        BN_free(y);

        /* The point at infinity, written as (0, 0). */
        uint8_t zero[66] = { 0 };
        char *z = tu_b64(zero, sizeof(zero));
        json_object_set_new(j, "x", json_string(z));
        json_object_set_new(j, "y", json_string(z));
        body = json_dumps(j, JSON_COMPACT);
        CHECK_INT(rec_with(body), 400);
        free(body);
        free(z);
        json_decref(j);
}

TEST(serve_health_and_errors) {
        CHECK_STR(health_of(srv, 200), "ok\n");
        CHECK_INT(status_of(srv, "POST", "/adv", NULL), 405);
        CHECK_INT(status_of(srv, "GET", "/rec/x", NULL), 405);
        CHECK_INT(status_of(srv, "GET", "/", NULL), 404);
        CHECK_INT(status_of(srv, "POST", "/rec", good_body), 404);
        CHECK_INT(status_of(srv, "GET", "/adv?x=1", NULL), 404);
        char target[TANG_MAX_URI + 10];
        strcpy(target, "/adv/");
        memset(target + 5, 'A', TANG_MAX_URI);
        target[TANG_MAX_URI + 5] = '\0';
        CHECK_INT(status_of(srv, "GET", target, NULL), 414);
}

/* What serves a fresh directory of the keys (in *d: NULL on failure). */
static struct served *serve_keys(const struct tu_key *keys, size_t n, char **d) {
        struct tk_keyset *ks = NULL;
        struct served *s = NULL;

        *d = tu_keydir(keys, n, &ks);
        if (*d && served_build(ks, &s) < 0) {
                tu_keydir_free(*d, keys, n);
                *d = NULL;
        }
        return s;
}

TEST(no_signing_key_is_500) {
        /* Only an exchange key and a hidden signing key. */
        const struct tu_key two[] = { { "exc.jwk", NULL, &exc }, { ".sig.jwk", NULL, &old_sig } };
        char *d;
        struct served *s = serve_keys(two, ELEMENTS(two), &d);
        if (CHECK(s != NULL)) {
                CHECK(!s->usable);
                CHECK_INT(status_of(s, "GET", "/adv", NULL), 500);
                char *t = tu_thumbprint(old_sig, "S256"), *p = path_for("adv", t);
                CHECK_INT(status_of(s, "GET", p, NULL), 500);
                free(t);
                free(p);
                t = tu_thumbprint(exc, "S256");
                p = path_for("rec", t);
                CHECK_INT(status_of(s, "POST", p, good_body), 500);
                free(t);
                free(p);
                CHECK_STR(health_of(s, 503), "unavailable\n");
        }
        served_unref(s);
        tu_keydir_free(d, two, ELEMENTS(two));

        /* Nothing loaded at all. */
        CHECK_INT(status_of(NULL, "GET", "/adv", NULL), 500);
        CHECK_INT(status_of(NULL, "POST", "/rec/abc", good_body), 500);
        CHECK_STR(health_of(NULL, 503), "unavailable\n");
        CHECK_INT(status_of(NULL, "GET", "/nothing", NULL), 404);
}

/* Tang's 500 for /adv, with one line a client can show: which fault, not
 * the names behind it (those go to the log). */
TEST(adv_500_says_why) {
        struct tk_keyset *none = calloc(1, sizeof(*none));
        struct served *empty = NULL;
        if (!CHECK(none && served_build(none, &empty) == 0))
                return;
        CHECK_STR(adv_body_of(empty), ADV_NO_KEY_BODY "\n");
        CHECK_STR(adv_body_of(NULL), ADV_NO_KEY_BODY "\n");
        empty->no_adv = SERVED_NO_ADV_UNREADABLE;
        CHECK_STR(adv_body_of(empty), ADV_UNREADABLE_BODY "\n");
        CHECK_INT(status_of(empty, "GET", "/adv/abc", NULL), 500);
        empty->no_adv = SERVED_NO_ADV_REMOVED;
        CHECK_STR(adv_body_of(empty), ADV_REMOVED_BODY "\n");
        served_unref(empty);

        /* Keys in memory, but their directory gone: withheld. */
        struct served_health h;
        served_health_init(&h);
        srv->health = &h;
        h.adv_withheld = true;
        CHECK_STR(adv_body_of(srv), ADV_DIR_GONE_BODY "\n");
        srv->health = NULL;
        served_health_destroy(&h);
}

TEST(signing_key_without_exchange_key_is_unhealthy) {
        const struct tu_key two[] = { { "sig.jwk", NULL, &sig }, { ".exc.jwk", NULL, &old_exc } };
        char *d;
        struct served *s = serve_keys(two, ELEMENTS(two), &d);
        if (CHECK(s != NULL)) {
                CHECK_INT(status_of(s, "GET", "/adv", NULL), 200);
                CHECK_STR(health_of(s, 503), "unavailable\n");
                /* The hidden exchange key still answers /rec. */
                char *t = tu_thumbprint(old_exc, "S1"), *p = path_for("rec", t);
                CHECK_INT(status_of(s, "POST", p, good_body), 200);
                free(t);
                free(p);
        }
        served_unref(s);
        tu_keydir_free(d, two, ELEMENTS(two));
}

/* While /adv and /rec work, a fault behind them (the directory gone) makes
 * /health "degraded", not 503: a load balancer keeps sending clients to the
 * only server that still has their keys. The state only: the reasons name
 * the key directory and its files, which go to the log. */
TEST(health_reports_faults_it_serves_through) {
        struct served_health h;
        served_health_init(&h);
        srv->health = &h;
        CHECK_STR(health_of(srv, 200), "ok\n");

        CHECK(served_health_set(&h, SERVED_FAULT_DIRECTORY, "key directory %s is gone", "/k"));
        CHECK(!served_health_set(&h, SERVED_FAULT_DIRECTORY, "key directory %s is gone", "/k"));
        CHECK_STR(health_of(srv, 200), "degraded\n");
        CHECK(served_health_set(&h, SERVED_FAULT_KEY_FILES, "key file /k/a.jwk cannot be read"));
        CHECK_STR(health_of(srv, 200), "degraded\n");
        CHECK(served_health_set(&h, SERVED_FAULT_DIRECTORY, NULL));
        CHECK(served_health_set(&h, SERVED_FAULT_KEY_FILES, NULL));
        CHECK_STR(health_of(srv, 200), "ok\n");

        /* Where nothing can be served: unavailable, whatever the fault. */
        struct served *empty = NULL;
        struct tk_keyset *none = calloc(1, sizeof(*none));
        if (CHECK(none && served_build(none, &empty) == 0)) {
                empty->health = &h;
                CHECK(served_health_set(&h, SERVED_FAULT_KEYGEN, "creating keys in /k failed (%s)", strerror(ENOSPC)));
                CHECK_STR(health_of(empty, 503), "unavailable\n");
        }
        served_unref(empty);
        srv->health = NULL;
        served_health_destroy(&h);
}

TEST(key_both_advertised_and_hidden_serves_default_adv) {
        /* A restored backup: the same signing key under both names. */
        const struct tu_key three[] = {
                { "sig.jwk", NULL, &sig }, { ".sig.jwk", NULL, &sig }, { "exc.jwk", NULL, &exc },
        };
        char *d;
        struct served *s = serve_keys(three, ELEMENTS(three), &d);
        if (CHECK(s != NULL)) {
                struct reply def, r;
                CHECK_INT(serve(s, "GET", "/adv", NULL, &def), 200);
                for (size_t h = 0; h < ELEMENTS(hashes); h++) {
                        char *t = tu_thumbprint(sig, hashes[h]), *p = path_for("adv", t);
                        if (CHECK_INT(serve(s, "GET", p, NULL, &r), 200))
                                CHECK(r.len == def.len && memcmp(r.body, def.body, r.len) == 0);
                        free(t);
                        free(p);
                }
        }
        served_unref(s);
        tu_keydir_free(d, three, ELEMENTS(three));
}

SETUP {
        p521 = EC_GROUP_new_by_curve_name(NID_secp521r1);
        p256 = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
        EC_POINT *x = p521 ? tu_random_point(p521, NULL) : NULL;
        json_t *xj = x ? tu_point_jwk(p521, "P-521", x) : NULL;
        good_body = xj ? json_dumps(xj, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(xj);
        EC_POINT_free(x);
        if (!p256 || !good_body)
                return -1;
        srv = serve_keys(key_files, ELEMENTS(key_files), &dir);
        return srv ? 0 : -1;
}

TEARDOWN {
        served_unref(srv);
        tu_keydir_free(dir, key_files, ELEMENTS(key_files));
        free(good_body);
        EC_GROUP_free(p521);
        EC_GROUP_free(p256);
}
