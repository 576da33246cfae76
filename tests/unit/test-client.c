/* The client library's building blocks without a network: Shamir sharing,
 * compact JWE parsing and its limits, A256GCM sealing, the null and sss
 * pins end to end, and the TETHER_TIMEOUT and TETHER_PIN_PATH settings. */
#include "check.h"

#include "boot.h"
#include "cleanup.h"
#include "ctx.h"
#include "jwe.h"
#include "luks.h"
#include "netwatch.h"
#include "pin.h"
#include "proxy.h"
#include "shamir.h"
#include "tether.h"

#include <jose/b64.h>
#include <malloc.h>
#ifdef __SANITIZE_ADDRESS__
/* libasan's; GCC ships no header declaring it. */
size_t __sanitizer_get_current_allocated_bytes(void);
#endif
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/rand.h>

static struct tc_ctx ctx;

/* ------------------------------------------------------------ shamir */

TEST(shamir_any_t_of_n_shares_recover_the_secret) {
        struct tc_shamir s;
        struct tc_err err;
        uint8_t secret[TC_SSS_KEY_BYTES], got[TC_SSS_KEY_BYTES];
        uint8_t shares[5][2 * TC_SSS_KEY_BYTES];

        REQUIRE(tc_shamir_generate(&s, 3, &err) == 0);
        CHECK_INT(s.p_len, 32);
        /* p is a safe prime: p and (p-1)/2 both prime. */
        BIGNUM *q = BN_dup(s.p);
        BN_sub_word(q, 1);
        BN_rshift1(q, q);
        CHECK(BN_check_prime(s.p, NULL, NULL) == 1);
        CHECK(BN_check_prime(q, NULL, NULL) == 1);
        BN_free(q);
        REQUIRE(tc_shamir_secret(&s, secret, &err) == 0);
        for (int i = 0; i < 5; i++)
                REQUIRE(tc_shamir_share(&s, shares[i], &err) == 0);

        /* Every 3-subset of the 5 shares. */
        int subsets = 0;
        for (int a = 0; a < 5; a++)
                for (int b = a + 1; b < 5; b++)
                        for (int c = b + 1; c < 5; c++) {
                                const uint8_t *pick[3] = { shares[a], shares[b], shares[c] };
                                CHECK(tc_shamir_recover(s.p, pick, 3, got, &err) == 0);
                                CHECK(memcmp(got, secret, sizeof(got)) == 0);
                                subsets++;
                        }
        CHECK_INT(subsets, 10);
        /* Two shares of a degree-2 polynomial say nothing about the secret. */
        const uint8_t *two[2] = { shares[0], shares[1] };
        CHECK(tc_shamir_recover(s.p, two, 2, got, &err) == 0);
        CHECK(memcmp(got, secret, sizeof(got)) != 0);
        /* The same share twice is refused, not divided by zero. */
        const uint8_t *dup[3] = { shares[0], shares[0], shares[1] };
        CHECK(tc_shamir_recover(s.p, dup, 3, got, &err) < 0);
        tc_shamir_clear(&s);
}

/* ------------------------------------------------------------ JWE */

static char *seal(const char *header_json, const char *plaintext, uint8_t cek[TC_CEK_LEN]) {
        struct tc_err err;
        char *out = NULL;
        json_t *h = json_loads(header_json, 0, NULL);
        RAND_bytes(cek, TC_CEK_LEN);
        if (!h || tc_jwe_encrypt(h, cek, (const uint8_t *) plaintext, strlen(plaintext), &out, &err) < 0)
                out = NULL;
        json_decref(h);
        return out;
}

TEST(jwe_round_trip_and_aad_is_the_header_text) {
        uint8_t cek[TC_CEK_LEN], *pt = NULL;
        size_t len = 0;
        struct tc_jwe jwe;
        struct tc_err err;
        char *c = seal("{\"enc\":\"A256GCM\",\"alg\":\"dir\"}", "secret", cek);
        REQUIRE(c);
        /* Five parts, empty encrypted key, header serialized sorted and compact. */
        CHECK(strstr(c, "..") != NULL);
        char *dot = strchr(c, '.');
        uint8_t hdr[64] = { 0 };
        CHECK_INT(jose_b64_dec_buf(c, (size_t) (dot - c), hdr, sizeof(hdr) - 1), strlen("{\"alg\":\"dir\",\"enc\":\"A256GCM\"}"));
        CHECK_STR((char *) hdr, "{\"alg\":\"dir\",\"enc\":\"A256GCM\"}");

        REQUIRE(tc_jwe_parse(c, strlen(c), &jwe, &err) == 0);
        CHECK(tc_jwe_decrypt(&jwe, cek, &pt, &len, &err) == 0);
        CHECK(len == 6 && memcmp(pt, "secret", 6) == 0);
        tc_secret_free(pt, len);
        /* Wrong key: authentication fails. */
        cek[0] ^= 1;
        CHECK_INT(tc_jwe_decrypt(&jwe, cek, &pt, &len, &err), -EBADMSG);
        tc_jwe_clear(&jwe);
        free(c);
}

TEST(jwe_tampering_fails_authentication) {
        uint8_t cek[TC_CEK_LEN], *pt = NULL;
        size_t len = 0;
        struct tc_err err;
        char *c = seal("{\"alg\":\"dir\",\"enc\":\"A256GCM\",\"x\":\"y\"}", "a longer secret message", cek);
        REQUIRE(c);
        size_t n = strlen(c);
        /* Flip one character in each of header, iv, ciphertext, tag. */
        char *dots[4];
        int k = 0;
        for (char *p = c; *p && k < 4; p++)
                if (*p == '.')
                        dots[k++] = p;
        size_t positions[] = { 2, (size_t) (dots[1] - c) + 2, (size_t) (dots[2] - c) + 2, (size_t) (dots[3] - c) + 2 };
        for (size_t i = 0; i < ELEMENTS(positions); i++) {
                char *copy = strdup(c);
                copy[positions[i]] = copy[positions[i]] == 'A' ? 'B' : 'A';
                struct tc_jwe jwe;
                int r = tc_jwe_parse(copy, n, &jwe, &err);
                if (r == 0) {
                        CHECK_INT(tc_jwe_decrypt(&jwe, cek, &pt, &len, &err), -EBADMSG);
                        tc_jwe_clear(&jwe);
                } /* else: the header no longer parses, also a refusal */
                free(copy);
        }
        free(c);
}

TEST(jwe_parse_rejects_malformed_input) {
        struct tc_jwe jwe;
        struct tc_err err;
        const char *bad[] = {
                "",
                "a.b.c.d",
                "a.b.c.d.e.f",
                "!!!..AAAAAAAAAAAAAAAA.AA.AAAAAAAAAAAAAAAAAAAAAA",
                /* header "[]" is not an object */
                "W10..AAAAAAAAAAAAAAAA.AA.AAAAAAAAAAAAAAAAAAAAAA",
                /* header {"enc":"A128GCM"} */
                "eyJlbmMiOiJBMTI4R0NNIn0..AAAAAAAAAAAAAAAA.AA.AAAAAAAAAAAAAAAAAAAAAA",
                /* a non-empty encrypted key */
                "eyJlbmMiOiJBMjU2R0NNIn0.AAAA.AAAAAAAAAAAAAAAA.AA.AAAAAAAAAAAAAAAAAAAAAA",
                /* IV of 8 bytes */
                "eyJlbmMiOiJBMjU2R0NNIn0..AAAAAAAAAAA.AA.AAAAAAAAAAAAAAAAAAAAAA",
                /* tag of 12 bytes */
                "eyJlbmMiOiJBMjU2R0NNIn0..AAAAAAAAAAAAAAAA.AA.AAAAAAAAAAAAAAAA",
        };
        for (size_t i = 0; i < ELEMENTS(bad); i++) {
                err.msg[0] = '\0';
                if (!CHECK(tc_jwe_parse(bad[i], strlen(bad[i]), &jwe, &err) < 0)) {
                        fprintf(stderr, "  accepted: %s\n", bad[i]);
                        tc_jwe_clear(&jwe);
                }
                CHECK(err.msg[0] != '\0');
        }
        /* The well-formed version of the same is accepted, with a trailing newline. */
        const char *good = "eyJlbmMiOiJBMjU2R0NNIn0..AAAAAAAAAAAAAAAA.AA.AAAAAAAAAAAAAAAAAAAAAA\n";
        CHECK(tc_jwe_parse(good, strlen(good), &jwe, &err) == 0);
        tc_jwe_clear(&jwe);
}

TEST(jwe_parse_bounds_size_and_nesting) {
        struct tc_jwe jwe;
        struct tc_err err;
        /* A header nested deeper than any sss tree. */
        size_t depth = TC_JWE_HEADER_DEPTH + 10;
        char *json = malloc(depth * 7 + 64), *p = json;
        p += sprintf(p, "{\"enc\":\"A256GCM\",\"x\":");
        for (size_t i = 0; i < depth; i++)
                p += sprintf(p, "[");
        for (size_t i = 0; i < depth; i++)
                p += sprintf(p, "]");
        sprintf(p, "}");
        size_t n = jose_b64_enc_buf(json, strlen(json), NULL, 0);
        char *c = malloc(n + 64);
        jose_b64_enc_buf(json, strlen(json), c, n);
        strcpy(c + n, "..AAAAAAAAAAAAAAAA.AA.AAAAAAAAAAAAAAAAAAAAAA");
        CHECK(tc_jwe_parse(c, strlen(c), &jwe, &err) < 0);
        free(json);
        free(c);

        /* Over the whole-size limit: refused before any decoding. */
        size_t big = TC_JWE_MAX + 10;
        char *huge = malloc(big + 1);
        memset(huge, 'A', big);
        huge[big] = '\0';
        huge[10] = huge[11] = huge[30] = huge[40] = '.';
        CHECK_INT(tc_jwe_parse(huge, big, &jwe, &err), -EMSGSIZE);
        free(huge);
}

/* ------------------------------------------------------------ pins */

static int round_trip(const char *pin, const char *cfg, const char *msg, char **jwe_out) {
        struct tc_err err = { "" };
        char *jwe = NULL;
        uint8_t *pt = NULL;
        size_t len = 0;
        int r = tc_encrypt(&ctx, pin, cfg, (const uint8_t *) msg, strlen(msg), &jwe, &err);
        if (r < 0) {
                fprintf(stderr, "  encrypt %s %s: %s\n", pin, cfg, err.msg);
                return r;
        }
        r = tc_decrypt(&ctx, jwe, strlen(jwe), &pt, &len, &err);
        if (r == 0 && (len != strlen(msg) || memcmp(pt, msg, len) != 0))
                r = -EBADMSG;
        tc_secret_free(pt, len);
        if (jwe_out)
                *jwe_out = jwe;
        else
                free(jwe);
        return r;
}

TEST(null_pin_round_trip_and_fail) {
        char *jwe = NULL;
        CHECK_INT(round_trip("null", "{}", "hello", NULL), 0);
        CHECK_INT(round_trip("null", "{\"fail\":false}", "hello", NULL), 0);
        CHECK(round_trip("null", "{\"fail\":true}", "hello", &jwe) < 0);
        free(jwe);
        CHECK(round_trip("null", "{\"fail\":3}", "hello", NULL) < 0);
}

TEST(sss_threshold_over_null_children) {
        /* Two of three children can never decrypt: t=1 works, t=2 does not. */
        const char *one = "{\"t\":1,\"pins\":{\"null\":[{\"fail\":true},{\"fail\":true},{}]}}";
        const char *two = "{\"t\":2,\"pins\":{\"null\":[{\"fail\":true},{\"fail\":true},{}]}}";
        CHECK_INT(round_trip("sss", one, "shared", NULL), 0);
        CHECK(round_trip("sss", two, "shared", NULL) < 0);
        /* Nested: an sss child that itself needs 2 of 2. */
        const char *nested = "{\"t\":2,\"pins\":{\"null\":{},\"sss\":{\"t\":2,\"pins\":{\"null\":[{},{}]}}}}";
        CHECK_INT(round_trip("sss", nested, "nested", NULL), 0);
        const char *nested_fail = "{\"t\":2,\"pins\":{\"null\":{},\"sss\":{\"t\":2,\"pins\":{\"null\":[{},{\"fail\":true}]}}}}";
        CHECK(round_trip("sss", nested_fail, "nested", NULL) < 0);
}

TEST(sss_rejects_bad_configs) {
        const char *bad[] = {
                "{\"t\":3,\"pins\":{\"null\":[{},{}]}}",
                "{\"t\":0,\"pins\":{\"null\":[{}]}}",
                "{\"t\":\"2\",\"pins\":{\"null\":[{}]}}",
                "{\"t\":1}",
                "{\"t\":1,\"pins\":{}}",
                "{\"t\":1,\"pins\":{\"null\":[1]}}",
                "{\"t\":1,\"pins\":{\"null\":\"x\"}}",
        };
        for (size_t i = 0; i < ELEMENTS(bad); i++) {
                struct tc_err err = { "" };
                char *jwe = NULL;
                CHECK(tc_encrypt(&ctx, "sss", bad[i], (const uint8_t *) "x", 1, &jwe, &err) < 0);
                CHECK(err.msg[0] != '\0');
                free(jwe);
        }
}

TEST(unknown_pin_and_bad_config_are_clear_errors) {
        struct tc_err err = { "" };
        char *jwe = NULL;
        CHECK_INT(tc_encrypt(&ctx, "nosuchpin", "{}", (const uint8_t *) "x", 1, &jwe, &err), -ENOENT);
        CHECK(strstr(err.msg, "unsupported pin") != NULL);
        CHECK(tc_encrypt(&ctx, "null", "not json", (const uint8_t *) "x", 1, &jwe, &err) < 0);
        CHECK(strstr(err.msg, "JSON") != NULL);
        CHECK(tc_encrypt(&ctx, "../evil", "{}", (const uint8_t *) "x", 1, &jwe, &err) < 0);
        CHECK(tc_encrypt(&ctx, "tang", "{}", (const uint8_t *) "x", 1, &jwe, &err) < 0);
        CHECK(strstr(err.msg, "url") != NULL);
        free(jwe);
}

/* TETHER_TIMEOUT's value, as the programs pass it in (programs/common). */
TEST(timeout_from_environment) {
        struct tc_ctx c;
        tc_ctx_init(&c);
        CHECK_INT(tc_ctx_set_timeout(&c, "2.5"), 0);
        CHECK_INT(c.timeout_ms, 2500);
        CHECK_STR(c.timeout_given, "2.5");
        tc_ctx_init(&c);
        CHECK_INT(tc_ctx_set_timeout(&c, "0.5"), 0);
        CHECK_INT(c.connect_timeout_ms, 500); /* never longer than the whole */
        const char *bad[] = { "abc", "-1", "0", "5s", "1e9" };
        for (size_t i = 0; i < ELEMENTS(bad); i++) {
                tc_ctx_init(&c);
                CHECK_INT(tc_ctx_set_timeout(&c, bad[i]), -EINVAL);
                CHECK_INT(c.timeout_ms, TC_DEFAULT_TIMEOUT_MS);
                CHECK_STR(c.timeout_given, "");
        }
        /* Unset or empty: the defaults. */
        tc_ctx_init(&c);
        CHECK_INT(tc_ctx_set_timeout(&c, NULL), 0);
        CHECK_INT(tc_ctx_set_timeout(&c, ""), 0);
        CHECK_INT(c.timeout_ms, TC_DEFAULT_TIMEOUT_MS);
        CHECK_INT(c.connect_timeout_ms, TC_DEFAULT_CONNECT_TIMEOUT_MS);
        CHECK_STR(c.timeout_given, "");
}

/* no_proxy as curl 7.88 reads it (lib/noproxy.c), IPv6 as addresses. */
TEST(no_proxy_matches_like_curl) {
        static const struct {
                const char *no_proxy, *host;
                bool match;
        } cases[] = {
                { "example.com", "example.com", true },
                { "example.com", "tang.example.com", true },        /* suffix */
                { ".example.com", "tang.example.com", true },       /* leading dot */
                { ".example.com", "example.com", true },
                { "example.com.", "example.com", true },            /* trailing dot */
                { "example.com", "example.com.", true },
                { "EXAMPLE.com", "Tang.Example.COM", true },        /* case */
                { "example.com", "badexample.com", false },         /* near misses */
                { "tang.example.com", "example.com", false },
                { "example.co", "example.com", false },
                { "*.example.com", "tang.example.com", false },     /* no globs */
                { "*", "anything", true },
                { "*", "::1", true },
                { "*,example.com", "anything", false },             /* '*' alone only */
                { " a.test , example.com ", "example.com", true },  /* blanks trimmed */
                { "a.test example.com", "example.com", true },      /* blanks separate */
                { ",,, ,example.com,,", "example.com", true },       /* empty entries */
                { ",, ,", "example.com", false },
                { "", "example.com", false },
                { ".", "example.com", false },
                { "10.1.2.3", "10.1.2.3", true },                   /* IPv4 */
                { "10.1.2.3", "10.1.2.30", false },
                { "10.0.0.0/8", "10.200.1.1", true },
                { "10.0.0.0/8", "11.0.0.1", false },
                { "192.168.1.128/25", "192.168.1.200", true },
                { "192.168.1.128/25", "192.168.1.100", false },
                { "10.1.2.3/32", "10.1.2.3", true },
                { "10.1.2.3/33", "10.1.2.3", false },               /* past the length */
                { "10.0.0.0/0", "10.1.2.3", false },                /* /0: whole address, as curl */
                { "10.0.0.0/x", "10.0.0.0", false },
                { "10.1.2.3", "example.com", false },               /* an IP entry is no name */
                { "example.com", "10.1.2.3", false },
                { "::1", "::1", true },                             /* IPv6 */
                { "[::1]", "::1", true },                           /* brackets */
                { "0:0:0:0:0:0:0:1", "::1", true },                 /* as addresses */
                { "::1/128", "::1", true },
                { "[::1]/128", "::1", true },
                { "fd00::/8", "fd12:3456::1", true },               /* CIDR */
                { "fd00::/8", "fe80::1", false },
                { "2001:db8::/33", "2001:db8:7fff::1", true },
                { "2001:db8::/33", "2001:db8:8000::1", false },
                { "::2", "::1", false },
                { "127.0.0.1", "::1", false },                      /* families apart */
                { "::ffff:127.0.0.1", "127.0.0.1", false },
        };
        for (size_t i = 0; i < ELEMENTS(cases); i++) {
                bool got = tc_no_proxy_match(cases[i].no_proxy, cases[i].host);
                if (got != cases[i].match)
                        fprintf(stderr, "no_proxy \"%s\" host \"%s\": got %d\n", cases[i].no_proxy, cases[i].host,
                                got);
                CHECK(got == cases[i].match);
        }
        CHECK(!tc_no_proxy_match(NULL, "example.com"));
}

/* Which variable a request uses, as curl's detect_proxy. */
TEST(proxy_selected_like_curl) {
        struct tc_proxy_env env = {
                .http = { "http_proxy", "http://h:1" },
                .https = { "HTTPS_PROXY", "http://s:1" },
                .all = { "all_proxy", "http://a:1" },
        };
        CHECK_STR(tc_proxy_select(&env, false, "x")->name, "http_proxy");
        CHECK_STR(tc_proxy_select(&env, true, "x")->name, "HTTPS_PROXY");
        env.https.value = NULL;
        CHECK_STR(tc_proxy_select(&env, true, "x")->name, "all_proxy");
        env.http.value = "";
        CHECK_STR(tc_proxy_select(&env, false, "x")->name, "all_proxy");
        env.no = (struct tc_env_value) { "no_proxy", "x" };
        CHECK(tc_proxy_select(&env, false, "x") == NULL);
        CHECK(tc_proxy_select(&env, false, "y") != NULL);
        env.all.value = NULL;
        CHECK(tc_proxy_select(&env, false, "y") == NULL);
}

/* Proxy URLs: http:// or none, port 1080 by default (curl's), credentials
 * decoded; other schemes refused naming the variable. */
TEST(proxy_urls_parsed_like_curl) {
        struct tc_proxy p = {};
        struct tc_err err = {};
        struct tc_env_value v = { "all_proxy", "proxy.example" };
        CHECK_INT(tc_proxy_parse(&v, &p, &err), 0);
        CHECK_STR(p.host, "proxy.example");
        CHECK_STR(p.port, "1080");
        CHECK(p.user == NULL && p.pass == NULL);
        tc_proxy_clear(&p);
        v.value = "HTTP://us%65r:p%3Ass@[fd00::1]:3128/";
        CHECK_INT(tc_proxy_parse(&v, &p, &err), 0);
        CHECK_STR(p.host, "fd00::1");
        CHECK_STR(p.port, "3128");
        CHECK_STR(p.user, "user");
        CHECK_STR(p.pass, "p:ss");
        CHECK_STR(p.var, "all_proxy");
        tc_proxy_clear(&p);
        CHECK(p.user == NULL);
        const char *socks[] = { "socks4://h:1", "socks4a://h:1", "socks5://h:1", "socks5h://h:1", "https://h:1" };
        for (size_t i = 0; i < ELEMENTS(socks); i++) {
                v.value = socks[i];
                CHECK_INT(tc_proxy_parse(&v, &p, &err), -EPROTONOSUPPORT);
                CHECK(strstr(err.msg, "all_proxy: ") == err.msg);
                CHECK(strstr(err.msg, "tether speaks to http:// proxies only") != NULL);
                CHECK(strncmp(err.msg + strlen("all_proxy: "), socks[i], strcspn(socks[i], ":") + 3) == 0);
        }
        const char *bad[] = { "http://", "http://h:", "http://h:99999", "http://h:x", "http://[::1", ":80",
                              "bob:hunter2://x@proxy.test:3128", "1http://h:1", "://h:1" };
        for (size_t i = 0; i < ELEMENTS(bad); i++) {
                v.value = bad[i];
                CHECK_INT(tc_proxy_parse(&v, &p, &err), -EINVAL);
                CHECK(strstr(err.msg, "all_proxy is not a proxy URL") != NULL);
                CHECK(strstr(err.msg, "hunter2") == NULL);
        }
        /* Credentials longer than the Proxy-Authorization buffer: said so,
         * not "out of memory" at the first request. */
        char longest[TC_PROXY_CREDENTIALS_MAX + 32];
        snprintf(longest, sizeof(longest), "http://u:%0*d@h:1", TC_PROXY_CREDENTIALS_MAX, 0);
        v.value = longest;
        CHECK_INT(tc_proxy_parse(&v, &p, &err), -E2BIG);
        CHECK(strstr(err.msg, "longer than") != NULL);
        snprintf(longest, sizeof(longest), "http://u:%0*d@h:1", TC_PROXY_CREDENTIALS_MAX - 1, 0);
        CHECK_INT(tc_proxy_parse(&v, &p, &err), 0);
        tc_proxy_clear(&p);
}

/* The proxy settings reach children (sss) as the rest of the context. */
TEST(proxy_settings_are_inherited) {
        struct tc_ctx c, child;
        tc_ctx_init(&c);
        c.proxy.no = (struct tc_env_value) { "no_proxy", "example.com" };
        tc_ctx_child(&child, &c);
        CHECK_STR(child.proxy.no.value, "example.com");
}

/* TETHER_PIN_PATH's value: absolute directories only (an empty or relative
 * entry would be the current directory); kept even when refused, so that
 * only an external pin fails on it, and inherited by children (sss). */
TEST(pin_path_is_checked_and_inherited) {
        struct tc_ctx c, child;
        struct tc_err err = { "" };
        tc_ctx_init(&c);
        CHECK(c.pin_path == NULL);
        CHECK_INT(tc_ctx_set_pin_path(&c, "/opt/pins:/usr/lib/pins", &err), 0);
        CHECK_STR(c.pin_path, "/opt/pins:/usr/lib/pins");
        tc_ctx_child(&child, &c);
        CHECK_STR(child.pin_path, "/opt/pins:/usr/lib/pins");
        const char *bad[] = { "pins", "pins:/usr/bin", "/usr/bin:", "/usr/bin::/bin", ":/usr/bin" };
        for (size_t i = 0; i < ELEMENTS(bad); i++) {
                err.msg[0] = '\0';
                CHECK_INT(tc_ctx_set_pin_path(&c, bad[i], &err), -EINVAL);
                CHECK(strstr(err.msg, "TETHER_PIN_PATH=\"") == err.msg && strstr(err.msg, "absolute directory"));
                CHECK_STR(c.pin_path, bad[i]);
        }
        /* ...and an external pin fails on it, saying so. */
        uint8_t *pt = NULL;
        size_t len = 0;
        err.msg[0] = '\0';
        CHECK_INT(tc_external_decrypt(&c, "mark", "e30..", 5, &pt, &len, &err), -EINVAL);
        CHECK(strstr(err.msg, "TETHER_PIN_PATH=\":/usr/bin\": every entry must be an absolute directory") != NULL);
        CHECK_INT(tc_ctx_set_pin_path(&c, "", &err), 0);
        CHECK(c.pin_path == NULL);
        CHECK_INT(tc_ctx_set_pin_path(&c, NULL, &err), 0);
        CHECK(c.pin_path == NULL);
}

/* The time limit's message says what TETHER_TIMEOUT was, in children too. */
TEST(timeout_given_is_named_when_the_deadline_passes) {
        struct tc_ctx c, child;
        struct tc_err err = { "sss: nothing" };
        tc_ctx_init(&c);
        CHECK_INT(tc_ctx_set_timeout(&c, "1"), 0);
        tc_ctx_child(&child, &c);
        child.started_ms = tc_now_ms() - 2000;
        child.deadline_ms = child.started_ms + 1500;
        CHECK_INT(tc_ctx_expired_error(&child, -EIO, &err), -ETIMEDOUT);
        CHECK(strstr(err.msg, "3 tries x TETHER_TIMEOUT=1 s with pauses") != NULL);
}

/* External pins' output (a secret) grows into a new buffer, the old one
 * wiped and freed: never realloc(), which may leave a copy behind. That the
 * old buffer was wiped cannot be read back without reading freed memory;
 * what is checked is that each growth moves the content to a new buffer. */
TEST(secret_grow_moves_to_a_new_buffer_and_is_bounded) {
        uint8_t *buf = NULL;
        size_t cap = 0;
        CHECK_INT(tc_secret_grow(&buf, 0, &cap, 16384), 0);
        CHECK_INT(cap, 4096);
        memset(buf, 0xa5, cap);
        for (size_t want = 8192; want <= 16384; want *= 2) {
                uint8_t *old = buf;
                size_t len = cap;
                CHECK_INT(tc_secret_grow(&buf, len, &cap, 16384), 0);
                CHECK_INT(cap, want);
                CHECK(buf != old);
                size_t same = 0;
                while (same < len && buf[same] == 0xa5)
                        same++;
                CHECK_INT(same, len);
                memset(buf, 0xa5, cap);
        }
        uint8_t *kept = buf;
        CHECK_INT(tc_secret_grow(&buf, cap, &cap, 16384), -EMSGSIZE);
        CHECK(buf == kept);
        CHECK_INT(cap, 16384);
        tc_secret_free(buf, cap);
}

/* ------------------------------------------------------------ cleanup helpers */

static int released;

static void count_release(int *p) {
        released += *p;
}
TC_DEFINE_CLEANUP(int *, count_release)

static int leave(int *a, int *b, bool early) {
        _cleanup_(count_releasep) int *x = a, *none = NULL, *y = NULL, *taken = b;
        (void) x, (void) none, (void) TAKE_PTR(taken);
        if (early)
                return 1;
        y = b;
        return 0;
}

/* What TC_DEFINE_CLEANUP generates releases what the variable holds when
 * the function returns, whichever return that is; NULL and what TAKE_PTR
 * handed on are left alone. */
TEST(generated_cleanup_runs_on_every_return_and_skips_null) {
        int a = 1, b = 10;
        released = 0;
        leave(&a, &b, true);
        CHECK_INT(released, 1);
        released = 0;
        leave(&a, &b, false);
        CHECK_INT(released, 11);
}

static void erase_on_return(uint8_t (*buf)[16], bool early) {
        TC_CLEANUP_ERASE(*buf);
        memset(*buf, 0xa5, sizeof(*buf));
        if (early)
                return;
        (*buf)[0] = 1;
}

/* Bytes allocated; a block this test frees is too large for a per-thread
 * cache. AddressSanitizer replaces malloc, and glibc's mallinfo2 does not
 * see its blocks: ask its allocator instead. */
static size_t in_use(void) {
#ifdef __SANITIZE_ADDRESS__
        return __sanitizer_get_current_allocated_bytes();
#else
        struct mallinfo2 m = mallinfo2();
        return m.uordblks + m.hblkhd;
#endif
}

static uint8_t *secret_buffer(bool take) {
        size_t len = 1 << 20;
        uint8_t *p = malloc(len);
        TC_CLEANUP_SECRET(p, len);
        if (!p)
                return NULL;
        memset(p, 0xa5, len);
        return take ? TAKE_PTR(p) : NULL;
}

/* TC_CLEANUP_ERASE wipes an array on whichever return; TC_CLEANUP_SECRET
 * frees (wiped) what its pointer holds at the return, unless TAKE_PTR
 * handed it on. */
TEST(secret_cleanup_wipes_arrays_and_frees_buffers_on_return) {
        uint8_t buf[16];
        for (int early = 0; early < 2; early++) {
                memset(buf, 0x5a, sizeof(buf));
                erase_on_return(&buf, early);
                size_t zeros = 0;
                while (zeros < sizeof(buf) && buf[zeros] == 0)
                        zeros++;
                CHECK_INT(zeros, sizeof(buf));
        }
        size_t before = in_use();
        CHECK(!secret_buffer(false));
        CHECK_INT(in_use(), before);
        uint8_t *kept = secret_buffer(true);
        CHECK(kept && in_use() >= before + (1 << 20));
        free(kept);
}

TEST(cancellation_reaches_children) {
        struct tc_ctx parent, child, grandchild;
        tc_ctx_init(&parent);
        tc_ctx_child(&child, &parent);
        tc_ctx_child(&grandchild, &child);
        CHECK(!tc_ctx_cancelled(&grandchild));
        tc_ctx_cancel(&parent);
        CHECK(tc_ctx_cancelled(&grandchild));
        CHECK(!tc_ctx_cancelled(&(struct tc_ctx) { 0 }));
}

/* A misspelled key must not be dropped in silence: {"url":...,"tph":...}
 * would bind with no thumbprint check at all. */
TEST(unknown_config_keys_are_refused_naming_the_key) {
        static const struct {
                const char *pin, *cfg, *msg;
        } cases[] = {
                { "tang", "{\"url\":\"http://127.0.0.1:1\",\"tph\":\"x\"}",
                  "tang configuration: unknown key \"tph\" (known: url, thp, adv)" },
                { "null", "{\"fial\":true}", "null configuration: unknown key \"fial\" (known: fail)" },
                { "sss", "{\"t\":1,\"pin\":{\"null\":[{}]}}", "sss configuration: unknown key \"pin\" (known: t, pins)" },
                { "sss", "{\"t\":1,\"pins\":{\"null\":[{},{\"fial\":true}]}}",
                  "null configuration at .pins.null[1]: unknown key \"fial\" (known: fail)" },
                /* Nested: found before any child is encrypted (the tang child
                 * would otherwise be asked first, and fail on the network). */
                { "sss",
                  "{\"t\":1,\"pins\":{\"tang\":[{\"url\":\"http://127.0.0.1:1\"}],"
                  "\"sss\":{\"t\":1,\"pins\":{\"tang\":[{\"url\":\"http://127.0.0.1:1\",\"tph\":\"x\"}]}}}}",
                  "tang configuration at .pins.sss.pins.tang[0]: unknown key \"tph\" (known: url, thp, adv)" },
        };
        for (size_t i = 0; i < ELEMENTS(cases); i++) {
                struct tc_err err = { "" };
                char *jwe = NULL;
                CHECK_INT(tc_encrypt(&ctx, cases[i].pin, cases[i].cfg, (const uint8_t *) "x", 1, &jwe, &err), -EINVAL);
                CHECK_STR(err.msg, cases[i].msg);
                free(jwe);
        }
        /* The known keys still pass; an external pin's keys are its own. */
        CHECK_INT(round_trip("null", "{\"fail\":false}", "ok", NULL), 0);
        CHECK_INT(round_trip("sss", "{\"t\":1,\"pins\":{\"null\":[{\"fail\":false}]}}", "ok", NULL), 0);
        struct tc_err err = { "" };
        json_t *ext = json_pack("{s:s}", "anything", "goes");
        CHECK_INT(tc_pin_config_check("tpm2", ext, &err), 0);
        json_decref(ext);
}

/* Messages quote URLs from headers: one line, no terminal escapes, valid
 * UTF-8 kept as it is. */
TEST(error_messages_escape_control_characters_and_bad_utf8) {
        struct tc_err err = { "" };
        CHECK_INT(tc_fail(&err, -EINVAL, "server %s down", "http://h/\x1b[31m\nforged\x7f\t"), -EINVAL);
        CHECK_STR(err.msg, "server http://h/\\x1b[31m\\x0aforged\\x7f\\x09 down");
        CHECK_INT(tc_wrap(&err, -EIO, "token %s", "\r1"), -EIO);
        CHECK_STR(err.msg, "token \\x0d1: server http://h/\\x1b[31m\\x0aforged\\x7f\\x09 down");
        /* UTF-8 stays; a C1 control (U+009B, CSI), stray, overlong and
         * surrogate bytes do not. */
        tc_fail(&err, -EINVAL, "%s", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91|\xc2\x9b|\xff|\xc0\xaf|\xed\xa0\x80|\xe2\x82");
        CHECK_STR(err.msg, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91|\\xc2\\x9b|\\xff|\\xc0\\xaf|\\xed\\xa0\\x80|\\xe2\\x82");
        char small[8];
        CHECK_INT(tc_escape(small, sizeof(small), "ab\x1b\x1b"), 6);
        CHECK_STR(small, "ab\\x1b");
}

/* Characters that hide or reorder the text around them come out as
 * \u{XXXX}: a URL in luks list, an error or the agent log shows what it
 * holds. Printable UTF-8, neighbours of the ranges included, stays. */
/* A message cut to fit says so, on a character boundary. */
TEST(error_messages_cut_to_fit_end_in_dots) {
        struct tc_err err = { "" };
        char long_text[700];
        memset(long_text, 'a', sizeof(long_text) - 1);
        long_text[sizeof(long_text) - 1] = '\0';
        tc_fail(&err, -EIO, "%s", long_text);
        size_t len = strlen(err.msg);
        CHECK(len == sizeof(err.msg) - 1);
        CHECK_STR(err.msg + len - 3, "...");
        /* Short ones are left alone; a wrapped one cut to fit says so too. */
        tc_fail(&err, -EIO, "short");
        CHECK_STR(err.msg, "short");
        memset(long_text, 'b', 500);
        long_text[500] = '\0';
        tc_fail(&err, -EIO, "%s", long_text);
        tc_wrap(&err, -EIO, "prefix with \u00e9\u00e9\u00e9");
        len = strlen(err.msg);
        CHECK_STR(err.msg + len - 3, "...");
        CHECK(strncmp(err.msg, "prefix with ", 12) == 0);
        /* UTF-8 is cut between characters, not inside one. */
        char accents[1200] = "";
        for (int i = 0; i < 550; i++)
                strcat(accents, "\u00e9");
        tc_fail(&err, -EIO, "%s", accents);
        len = strlen(err.msg);
        CHECK_STR(err.msg + len - 3, "...");
        CHECK(len < 4 || ((unsigned char) err.msg[len - 4] & 0xc0) != 0xc0);
}

/* Lines that are no tc_err (the agent's events, tether-keys' warnings) are
 * formatted, escaped and cut as messages are, in a buffer of their own size. */
TEST(formatted_lines_escape_and_cut_like_error_messages) {
        char line[1024], long_text[900];
        CHECK_INT(tc_format(line, sizeof(line), "%s: answered", "/dev/\x1b[31m\nsda\xe2\x80\xae"), 38);
        CHECK_STR(line, "/dev/\\x1b[31m\\x0asda\\u{202e}: answered");
        /* Longer than a tc_err holds, shorter than the line: whole. */
        memset(long_text, 'a', sizeof(long_text) - 1);
        long_text[sizeof(long_text) - 1] = '\0';
        CHECK_INT(tc_format(line, sizeof(line), "%s; not answered", long_text), sizeof(long_text) - 1 + 14);
        CHECK_STR(line + sizeof(long_text) - 1, "; not answered");
        /* Cut to fit: says so. */
        char small[16];
        CHECK_INT(tc_format(small, sizeof(small), "%s", long_text), sizeof(small) - 1);
        CHECK_STR(small, "aaaaaaaaaaaa...");
}

TEST(error_messages_escape_bidi_and_invisible_characters) {
        static const struct {
                const char *in, *out;
        } cases[] = {
                { "a\xd8\x9c" "b", "a\\u{061c}b" },         /* Arabic letter mark */
                { "a\xe2\x80\x8b" "b", "a\\u{200b}b" },     /* zero-width space */
                { "a\xe2\x80\x8f" "b", "a\\u{200f}b" },     /* right-to-left mark */
                { "a\xe2\x80\xa8" "b", "a\\u{2028}b" },     /* line separator */
                { "a\xe2\x80\xa9" "b", "a\\u{2029}b" },     /* paragraph separator */
                { "http://evil\xe2\x80\xaemoc.elpmaxe/", "http://evil\\u{202e}moc.elpmaxe/" }, /* RLO */
                { "a\xe2\x81\xa0" "b", "a\\u{2060}b" },     /* word joiner */
                { "a\xe2\x81\xa6" "b", "a\\u{2066}b" },     /* left-to-right isolate */
                { "a\xe2\x81\xaf" "b", "a\\u{206f}b" },
                { "a\xef\xbb\xbf" "b", "a\\u{feff}b" },     /* zero-width no-break space */
                /* Left as they are. */
                { "plain ASCII: http://h:80/x?y=1", "plain ASCII: http://h:80/x?y=1" },
                { "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac", "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac" }, /* café 日本 */
                { "\xd8\x9b\xe2\x80\x8a\xe2\x80\x90\xe2\x80\xa7\xe2\x80\xaf\xe2\x81\x9f\xe2\x81\xb0\xef\xbb\xbe",
                  "\xd8\x9b\xe2\x80\x8a\xe2\x80\x90\xe2\x80\xa7\xe2\x80\xaf\xe2\x81\x9f\xe2\x81\xb0\xef\xbb\xbe" },
        };
        for (size_t i = 0; i < ELEMENTS(cases); i++) {
                struct tc_err err = { "" };
                tc_fail(&err, -EINVAL, "%s", cases[i].in);
                CHECK_STR(err.msg, cases[i].out);
                char *dup = tc_escape_dup(cases[i].in);
                CHECK_STR(dup, cases[i].out);
                free(dup);
                /* Escaped text is escaped already: a second pass keeps it. */
                tc_fail(&err, -EINVAL, "%s", cases[i].out);
                CHECK_STR(err.msg, cases[i].out);
        }
        /* An escape that does not fit is left out whole. */
        char small[10];
        CHECK_INT(tc_escape(small, sizeof(small), "ab\xe2\x80\xae"), 2);
        CHECK_STR(small, "ab");
}

/* Issue 11: a whole decryption has a time limit, whatever the header holds.
 * What one leaf may take (3 x 1 s, pauses of 0.25 and 0.5 s) plus 1 s. */
TEST(deadline_limit_cancels_and_is_inherited) {
        struct tc_ctx c, child, grandchild;
        tc_ctx_init(&c);
        CHECK_INT(c.deadline_ms, 0);
        c.timeout_ms = 1000;
        CHECK_INT(tc_ctx_limit_ms(&c), 4750);
        c.attempts = 1;
        CHECK_INT(tc_ctx_limit_ms(&c), 2000);
        c.attempts = 3;
        /* In boot mode, after the boot wait. */
        c.wait_until_ms = tc_now_ms() + 5000;
        CHECK(tc_ctx_limit_ms(&c) > 9600 && tc_ctx_limit_ms(&c) <= 9750);
        c.wait_until_ms = 0;

        tc_ctx_set_deadline(&c);
        CHECK_INT(c.deadline_ms - c.started_ms, 4750);
        int64_t first = c.deadline_ms;
        tc_ctx_set_deadline(&c);  /* a caller's deadline stays */
        CHECK_INT(c.deadline_ms, first);
        tc_ctx_child(&child, &c);
        CHECK_INT(child.deadline_ms, first);
        CHECK(!tc_ctx_cancelled(&child));

        /* Past it: cancelled, down the chain even where a child has none. */
        c.started_ms = tc_now_ms() - 2000;
        c.deadline_ms = c.started_ms + 1500;
        tc_ctx_child(&grandchild, &child);
        grandchild.deadline_ms = 0;
        CHECK(tc_ctx_cancelled(&c));
        CHECK(tc_ctx_cancelled(&grandchild));
        CHECK(tc_ctx_expired(&c));
        struct tc_err err = { "sss: only 0 of the 1 shares needed" };
        CHECK_INT(tc_ctx_expired_error(&c, -EHOSTUNREACH, &err), -ETIMEDOUT);
        CHECK(strstr(err.msg, "gave up after 2.0 s: the whole decryption has a time limit of 1.5 s (what one pin "
                              "may take: 3 tries x TETHER_TIMEOUT unset: 1.0 s with pauses") == err.msg);
        CHECK(strstr(err.msg, "by then: sss: only 0 of the 1 shares needed") != NULL);
        /* Success and an unexpired deadline keep what they had. */
        CHECK_INT(tc_ctx_expired_error(&c, 0, &err), 0);
        c.deadline_ms = 0;
        CHECK_INT(tc_ctx_expired_error(&c, -EIO, &err), -EIO);
}

/* A deadline set for a reason of the caller's (the token plugin's short try
 * in the initramfs) says that reason when it passes, not TETHER_TIMEOUT's
 * arithmetic, and children say it too. */
TEST(deadline_why_is_the_message) {
        struct tc_ctx c, child;
        tc_ctx_init(&c);
        c.started_ms = tc_now_ms() - 1200;
        c.deadline_ms = c.started_ms + 1000;
        c.deadline_why = "the short try";
        tc_ctx_child(&child, &c);
        struct tc_err err = { "http://x unreachable" };
        CHECK_INT(tc_ctx_expired_error(&child, -EHOSTUNREACH, &err), -ETIMEDOUT);
        CHECK(strncmp(err.msg, "gave up after 1.2 s: the short try; by then: http://x unreachable", 64) == 0);
        CHECK(strstr(err.msg, "TETHER_TIMEOUT") == NULL);
}

/* Issue 14: in the initramfs the token plugin makes a short try unless
 * rd.tether.timeout= asks for a wait; TETHER_BOOT_TIMEOUT and the running
 * system keep what they did. */
TEST(boot_policy_short_try_in_the_initramfs_unless_asked_to_wait) {
        struct tc_boot_policy p;
        /* The initramfs, nothing said: the short try, no wait. */
        tc_boot_policy_for(NULL, true, NULL, &p);
        CHECK_INT(p.wait_ms, 0);
        CHECK_INT(p.limit_ms, TC_BOOT_TRY_MS);
        CHECK(TC_BOOT_TRY_MS <= 1000);
        tc_boot_policy_for("", true, NULL, &p);
        CHECK_INT(p.limit_ms, TC_BOOT_TRY_MS);
        /* rd.tether.timeout=SECONDS: that wait, no limit but the client's. */
        tc_boot_policy_for(NULL, true, "10", &p);
        CHECK_INT(p.wait_ms, 10000);
        CHECK_INT(p.limit_ms, 0);
        tc_boot_policy_for(NULL, true, "0.5", &p);
        CHECK_INT(p.wait_ms, 500);
        /* 0 and nonsense: the short try (0 used to mean the client's normal
         * attempts, up to 30 s with a server that never answers). */
        for (size_t i = 0; i < 4; i++) {
                tc_boot_policy_for(NULL, true, (const char *[]) { "0", "", "ten", "-1" }[i], &p);
                CHECK_INT(p.wait_ms, 0);
                CHECK_INT(p.limit_ms, TC_BOOT_TRY_MS);
        }
        /* TETHER_BOOT_TIMEOUT wins, anywhere; malformed: the old default. */
        tc_boot_policy_for("3", true, "10", &p);
        CHECK_INT(p.wait_ms, 3000);
        CHECK_INT(p.limit_ms, 0);
        tc_boot_policy_for("3", false, NULL, &p);
        CHECK_INT(p.wait_ms, 3000);
        tc_boot_policy_for("x", false, NULL, &p);
        CHECK_INT(p.wait_ms, TC_BOOT_WAIT_DEFAULT_MS);
        CHECK_INT(p.limit_ms, 0);
        /* After boot: the normal attempts, whatever the command line says. */
        tc_boot_policy_for(NULL, false, "10", &p);
        CHECK_INT(p.wait_ms, 0);
        CHECK_INT(p.limit_ms, 0);
}

/* Past the deadline an sss node starts no child, not even one that would
 * answer at once (null), and the error says why. */
TEST(deadline_passed_sss_starts_no_child) {
        struct tc_ctx c;
        struct tc_err err = { "" };
        char *jwe = NULL;
        uint8_t *pt = NULL;
        size_t len = 0;
        tc_ctx_init(&c);
        CHECK_INT(tc_encrypt(&c, "sss", "{\"t\":1,\"pins\":{\"null\":[{},{}]}}", (const uint8_t *) "x", 1, &jwe, &err), 0);
        CHECK_INT(tc_decrypt(&c, jwe, strlen(jwe), &pt, &len, &err), 0);
        tc_secret_free(pt, len);
        pt = NULL;
        c.started_ms = tc_now_ms() - 100;
        c.deadline_ms = tc_now_ms() - 1;
        CHECK_INT(tc_decrypt(&c, jwe, strlen(jwe), &pt, &len, &err), -ETIMEDOUT);
        CHECK(pt == NULL);
        CHECK(strstr(err.msg, "the whole decryption has a time limit") != NULL);
        free(jwe);
}

/* ------------------------------------------------------------ sss tree bounds */

/* An sss JWE over the given children, as a crafted header would hold them:
 * encryption refuses such trees, so the test seals them itself. */
static char *sss_wrap(const char *const *children, size_t n) {
        uint8_t cek[TC_CEK_LEN], p[32];
        struct tc_err err;
        char *out = NULL;
        json_t *jwes = json_array();
        for (size_t i = 0; i < n; i++)
                json_array_append_new(jwes, json_string(children[i]));
        memset(p, 0xfb, sizeof(p));
        RAND_bytes(cek, sizeof(cek));
        json_t *h = json_pack("{s:s,s:s,s:{s:s,s:{s:i,s:o,s:o}}}", "alg", "dir", "enc", "A256GCM", "clevis", "pin",
                              "sss", "sss", "t", 1, "p", jose_b64_enc(p, sizeof(p)), "jwe", jwes);
        if (!h || tc_jwe_encrypt(h, cek, (const uint8_t *) "x", 1, &out, &err) < 0)
                out = NULL;
        json_decref(h);
        return out;
}

/* {"t":1,"pins":{"sss":{... levels deep ...{"null":{}}}}} */
static char *nested_config(unsigned levels, const char *leaf_pin, const char *leaf_cfg) {
        char *cfg = strdup(leaf_cfg);
        const char *pin = leaf_pin;
        for (unsigned i = 0; i < levels; i++) {
                char *c = NULL;
                if (asprintf(&c, "{\"t\":1,\"pins\":{\"%s\":%s}}", pin, cfg) < 0)
                        abort();
                free(cfg);
                cfg = c;
                pin = "sss";
        }
        return cfg;
}

/* Each level is a JWE of its own: the bound holds across them, and a tree
 * too deep is refused whole before any leaf is asked (here an external pin
 * that would leave a mark). */
TEST(sss_nesting_is_bounded_across_levels_before_any_leaf_runs) {
        char dir[] = "/tmp/tether-depth-XXXXXX", script[64], mark[64];
        uint8_t *pt = NULL;
        size_t len = 0;
        struct tc_err err = { "" };
        REQUIRE(mkdtemp(dir));
        snprintf(script, sizeof(script), "%s/clevis-decrypt-mark", dir);
        snprintf(mark, sizeof(mark), "%s/ran", dir);
        FILE *f = fopen(script, "w");
        REQUIRE(f);
        fprintf(f, "#!/bin/sh\ntouch %s\ncat >/dev/null\nexit 1\n", mark);
        fclose(f);
        chmod(script, 0755);
        REQUIRE(tc_ctx_set_pin_path(&ctx, dir, &err) == 0);

        /* A leaf of the external pin "mark" (its header is all it reads). */
        json_t *h = json_pack("{s:s,s:s,s:{s:s}}", "alg", "dir", "enc", "A256GCM", "clevis", "pin", "mark");
        uint8_t cek[TC_CEK_LEN] = { 1 };
        char *jwe = NULL;
        REQUIRE(tc_jwe_encrypt(h, cek, (const uint8_t *) "x", 1, &jwe, &err) == 0);
        json_decref(h);
        /* 16 sss levels over it are fine (the leaf is asked, and fails)... */
        for (int i = 0; i < TC_SSS_MAX_DEPTH; i++) {
                char *up = sss_wrap((const char *const *) &jwe, 1);
                free(jwe);
                REQUIRE((jwe = up));
        }
        CHECK(tc_decrypt(&ctx, jwe, strlen(jwe), &pt, &len, &err) < 0);
        CHECK(access(mark, F_OK) == 0);
        unlink(mark);
        /* luks list shows what decryption accepts, and decodes no deeper. */
        char *pin = NULL;
        json_t *cfg = tc_jwe_config(jwe, false, &pin);
        CHECK(cfg != NULL);
        CHECK_STR(pin ? pin : "", "sss");
        json_decref(cfg);
        free(pin);
        /* ...17 are refused, naming the bound, and nothing ran. */
        char *up = sss_wrap((const char *const *) &jwe, 1);
        free(jwe);
        REQUIRE((jwe = up));
        CHECK_INT(tc_decrypt(&ctx, jwe, strlen(jwe), &pt, &len, &err), -ELOOP);
        CHECK_STR(err.msg, "sss: JWEs nested more than 16 levels deep");
        CHECK(access(mark, F_OK) < 0);
        pin = NULL;
        CHECK(tc_jwe_config(jwe, false, &pin) == NULL);
        free(pin);
        free(jwe);
        ctx.pin_path = NULL;
        unlink(script);
        rmdir(dir);

        /* Encryption writes only what decryption accepts: 16 levels with a
         * leaf round-trip, 17 are refused up front. */
        char *ok = nested_config(TC_SSS_MAX_DEPTH, "null", "{}");
        CHECK_INT(round_trip("sss", ok, "deep", NULL), 0);
        free(ok);
        char *deep = nested_config(TC_SSS_MAX_DEPTH + 1, "null", "{}");
        jwe = NULL;
        CHECK_INT(tc_encrypt(&ctx, "sss", deep, (const uint8_t *) "x", 1, &jwe, &err), -ELOOP);
        CHECK_STR(err.msg, "sss configuration: pins nested more than 16 levels deep");
        CHECK(jwe == NULL);
        free(deep);
}

static char *null_leaves_config(size_t n) {
        size_t cap = 64 + 3 * n;
        char *cfg = malloc(cap);
        size_t o = (size_t) snprintf(cfg, cap, "{\"t\":1,\"pins\":{\"null\":[");
        for (size_t i = 0; i < n; i++)
                o += (size_t) snprintf(cfg + o, cap - o, "%s{}", i ? "," : "");
        snprintf(cfg + o, cap - o, "]}}");
        return cfg;
}

/* 256 leaf pins in one binding at most, however they are spread. */
TEST(sss_leaf_pins_are_bounded_in_one_tree) {
        struct tc_err err = { "" };
        char *a = NULL, *b = NULL, *jwe = NULL;
        uint8_t *pt = NULL;
        size_t len = 0;
        char *cfg200 = null_leaves_config(200), *cfg56 = null_leaves_config(56), *cfg57 = null_leaves_config(57);

        REQUIRE(tc_encrypt(&ctx, "sss", cfg200, (const uint8_t *) "x", 1, &a, &err) == 0);
        REQUIRE(tc_encrypt(&ctx, "sss", cfg57, (const uint8_t *) "x", 1, &b, &err) == 0);
        const char *two[] = { a, b };
        REQUIRE((jwe = sss_wrap(two, 2)));
        CHECK_INT(tc_decrypt(&ctx, jwe, strlen(jwe), &pt, &len, &err), -E2BIG);
        CHECK_STR(err.msg, "sss: more than 256 pins in one binding");
        CHECK(pt == NULL);
        free(jwe);

        /* Encryption: 200 + 56 is fine, 200 + 57 is refused with the same words. */
        char *ok = NULL, *over = NULL;
        CHECK(asprintf(&ok, "{\"t\":2,\"pins\":{\"sss\":[%s,%s]}}", cfg200, cfg56) > 0);
        CHECK(asprintf(&over, "{\"t\":2,\"pins\":{\"sss\":[%s,%s]}}", cfg200, cfg57) > 0);
        CHECK_INT(round_trip("sss", ok, "many", NULL), 0);
        jwe = NULL;
        CHECK_INT(tc_encrypt(&ctx, "sss", over, (const uint8_t *) "x", 1, &jwe, &err), -E2BIG);
        CHECK_STR(err.msg, "sss: more than 256 pins in one binding");
        CHECK(jwe == NULL);
        free(ok);
        free(over);
        free(a);
        free(b);
        free(cfg200);
        free(cfg56);
        free(cfg57);
}

SETUP {
        tc_ctx_init(&ctx);
        return 0;
}
