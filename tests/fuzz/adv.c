/* The client's advertisement handling: the body of an /adv reply parsed and
 * verified as tc_tang_fetch_adv does (tc_tang_parse_adv: every advertised
 * signing key must have signed it), then, when it verifies, used as the
 * tang pin uses it: an encryption with {"url", "adv"} in the configuration,
 * which reads the exchange key and never touches the network.
 *
 * Input: the /adv reply body (a JWS in JSON serialisation). */
#include "fuzz.h"

#include "jwe.h"
#include "keyset.h"
#include "luks.h"
#include "tether.h"
#include "pin.h"
#include "tang.h"

#include <string.h>

static struct tc_ctx ctx;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        (void) argc, (void) argv;
        tc_ctx_init(&ctx);
        /* Nothing may ask whether to trust a key, let alone a person. */
        ctx.trust = NULL;
        ctx.trust_all = false;
        return 0;
}

/* A JWE the tang pin made is one the parser takes back, naming the URL. */
static void check_jwe(const char *compact) {
        struct tc_jwe jwe;
        struct tc_err err;
        char *pin = NULL;

        FUZZ_ASSERT(tc_jwe_parse(compact, strlen(compact), &jwe, &err) == 0);
        FUZZ_ASSERT(strcmp(tc_jwe_pin(&jwe), "tang") == 0);
        json_auto_t *cfg = tc_jwe_config(compact, false, &pin);
        FUZZ_ASSERT(cfg && strcmp(pin, "tang") == 0);
        FUZZ_ASSERT(strcmp(json_string_value(json_object_get(cfg, "url")), "http://127.0.0.1:9") == 0);
        free(pin);
        tc_jwe_clear(&jwe);
}

static void encrypt_with(const json_t *jws, const json_t *verify, bool with_thp) {
        static const uint8_t secret[] = "fuzz";
        struct tc_err err;
        char *compact = NULL, *thp = NULL;

        json_auto_t *cfg = json_pack("{s:s,s:O}", "url", "http://127.0.0.1:9", "adv", jws);
        FUZZ_ASSERT(cfg);
        if (with_thp && (thp = tk_thumbprint(json_array_get(verify, 0), "S256")))
                json_object_set_new(cfg, "thp", json_string(thp));
        if (tc_encrypt_json(&ctx, "tang", cfg, secret, sizeof(secret), &compact, &err) == 0)
                check_jwe(compact);
        free(compact);
        free(thp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *body = fuzz_copy(data, size);
        json_t *jws = NULL, *payload = NULL;
        struct tc_err err = {};

        if (tc_tang_parse_adv(body, size, "the fuzzer", &jws, &payload, &err) == 0) {
                json_auto_t *verify = tc_tang_keys_for(payload, "verify");
                json_auto_t *derive = tc_tang_keys_for(payload, "deriveKey");
                /* Verified means signed by at least one advertised key. */
                FUZZ_ASSERT(json_is_object(jws) && json_array_size(verify) > 0 && derive);
                encrypt_with(jws, verify, size % 2 == 1);
                json_decref(jws);
                json_decref(payload);
        } else
                FUZZ_ASSERT(!jws && !payload && err.msg[0]);
        free(body);
        return 0;
}
