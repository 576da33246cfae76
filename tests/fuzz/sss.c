/* The sss pin's header parser and combiner on a JWE from outside:
 * tc_sss_header_parse (t, p, the children), each child parsed, null
 * children decrypted and sss children opened the same way, recursively
 * (tang children would need a server and are skipped, as unreachable ones
 * are), and tc_sss_combine once t shares are in, as sss_decrypt does
 * without its threads.
 *
 * Input: a compact sss JWE. */
#include "fuzz.h"

#include "jwe.h"
#include "pin.h"
#include "sss-internal.h"

#include <string.h>

static struct tc_ctx ctx;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        (void) argc, (void) argv;
        tc_ctx_init(&ctx);
        return 0;
}

static int sss_open(const struct tc_jwe *jwe, uint8_t **pt, size_t *pt_len);

/* A child's share, as child_run gets it: only the right length counts. */
static int child_share(const char *compact, size_t share_len, uint8_t **share) {
        struct tc_jwe child;
        struct tc_err err;
        size_t len = 0;
        int r;

        if (tc_jwe_parse(compact, strlen(compact), &child, &err) < 0)
                return -1;
        const char *pin = tc_jwe_pin(&child);
        if (pin && strcmp(pin, "null") == 0)
                r = tc_pin_null.decrypt(&ctx, &child, share, &len, &err);
        else if (pin && strcmp(pin, "sss") == 0)
                r = sss_open(&child, share, &len);
        else
                r = -1;
        tc_jwe_clear(&child);
        if (r == 0 && len != share_len) {
                tc_secret_free(*share, len);
                r = -1;
        }
        return r;
}

/* Shamir interpolation does not depend on the order of the shares. */
static void check_order_free(const struct tc_sss_header *h, const struct tc_jwe *jwe, const uint8_t *const *shares,
                             const uint8_t *pt, size_t pt_len) {
        const uint8_t *reversed[TC_SSS_MAX_CHILDREN];
        uint8_t *again = NULL;
        size_t again_len = 0;
        struct tc_err err;

        for (size_t i = 0; i < h->t; i++)
                reversed[i] = shares[h->t - 1 - i];
        FUZZ_ASSERT(tc_sss_combine(h, jwe, reversed, &again, &again_len, &err) == 0);
        FUZZ_ASSERT(again_len == pt_len && memcmp(again, pt, pt_len) == 0);
        tc_secret_free(again, again_len);
}

static int sss_open(const struct tc_jwe *jwe, uint8_t **pt, size_t *pt_len) {
        struct tc_sss_header h;
        struct tc_err err;
        uint8_t *shares[TC_SSS_MAX_CHILDREN];
        size_t k = 0;
        int r = -1;

        if (tc_sss_header_parse(jwe->header, &h, &err) < 0)
                return -1;
        FUZZ_ASSERT(h.t >= 1 && h.t <= h.n && h.n <= TC_SSS_MAX_CHILDREN && h.p && h.p_len > 0);
        for (size_t i = 0; i < h.n && k < h.t; i++) {
                const char *child = json_string_value(json_array_get(h.jwes, i));
                if (child && child_share(child, 2 * h.p_len, &shares[k]) == 0)
                        k++;
        }
        if (k == h.t) {
                r = tc_sss_combine(&h, jwe, (const uint8_t *const *) shares, pt, pt_len, &err);
                if (r == 0)
                        check_order_free(&h, jwe, (const uint8_t *const *) shares, *pt, *pt_len);
        }
        for (size_t i = 0; i < k; i++)
                tc_secret_free(shares[i], 2 * h.p_len);
        tc_sss_header_clear(&h);
        return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *compact = fuzz_copy(data, size);
        struct tc_jwe jwe;
        struct tc_err err;
        uint8_t *pt = NULL;
        size_t pt_len = 0;

        if (tc_jwe_parse(compact, size, &jwe, &err) == 0) {
                if (sss_open(&jwe, &pt, &pt_len) == 0)
                        tc_secret_free(pt, pt_len);
                tc_jwe_clear(&jwe);
        }
        free(compact);
        return 0;
}
