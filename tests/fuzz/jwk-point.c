/* A JWK from outside, both ways it arrives: as the client's blinded point
 * in a /rec request (tetherd's rec_check_request and rec_exchange, up to the
 * multiplication, with an exchange key of each curve), and as the server's
 * answer or a JWE's epk in the client (tc_ec_point_from_jwk). Both decode
 * through ecpoint_decode.
 *
 * Input: the JWK's JSON text. */
#include "fuzz.h"

#include "ec.h"
#include "ecpoint.h"
#include "keyset.h"
#include "rec.h"

#include <string.h>
#include <jose/jwk.h>

static struct tk_keyset *keys;

/* An ECMR key per curve, as tang's key directory would hold it. */
static void write_key(const char *dir, const char *crv) {
        char path[4096];
        json_auto_t *jwk = json_pack("{s:s,s:s}", "alg", "ECMR", "crv", crv);
        FUZZ_ASSERT(jwk && jose_jwk_gen(NULL, jwk));
        snprintf(path, sizeof(path), "%s/%s.jwk", dir, crv);
        FUZZ_ASSERT(json_dump_file(jwk, path, JSON_COMPACT) == 0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        static const char *const curves[] = { "P-256", "P-384", "P-521" };
        const char *dir = fuzz_tmpdir();
        (void) argc, (void) argv;

        for (size_t i = 0; i < 3; i++)
                write_key(dir, curves[i]);
        FUZZ_ASSERT(tk_keyset_load(dir, NULL, NULL, &keys) == 0 && keys->n_keys == 3);
        for (size_t i = 0; i < keys->n_keys; i++)
                FUZZ_ASSERT(keys->keys[i].ecmr);
        return 0;
}

/* What the client does with the same JWK: accepted iff its point decodes;
 * and the point survives the trip back to a JWK. Returns whether accepted. */
static bool client_reads(const json_t *jwk) {
        struct tc_ec ec;
        struct tc_err err;
        EC_POINT *p = NULL, *again = NULL;

        if (tc_ec_init(&ec, json_string_value(json_object_get(jwk, "crv")), &err) < 0)
                return false;
        bool ok = tc_ec_point_from_jwk(&ec, jwk, "the fuzzed JWK", &p, &err) == 0;
        if (ok) {
                json_auto_t *back = tc_ec_point_to_jwk(&ec, p);
                FUZZ_ASSERT(back);
                FUZZ_ASSERT(tc_ec_point_from_jwk(&ec, back, "the re-encoded JWK", &again, &err) == 0);
                FUZZ_ASSERT(EC_POINT_cmp(ec.group, p, again, ec.bn) == 0);
        }
        EC_POINT_free(p);
        EC_POINT_free(again);
        tc_ec_clear(&ec);
        return ok;
}

/* A 200 from /rec: a JWK of the key's curve holding a valid point. */
static void check_answer(const struct tk_ecmr_key *key, const char *out, size_t len) {
        json_auto_t *answer = json_loadb(out, len, JSON_REJECT_DUPLICATES, NULL);
        FUZZ_ASSERT(answer);
        FUZZ_ASSERT(strcmp(json_string_value(json_object_get(answer, "crv")), key->crv) == 0);
        FUZZ_ASSERT(client_reads(answer));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *body = fuzz_copy(data, size);
        json_t *req = NULL;
        char out[512];
        size_t written = 0;

        if (rec_check_request(body, size, &req) == 0) {
                bool exchanged = false;
                for (size_t i = 0; i < keys->n_keys; i++) {
                        const struct tk_ecmr_key *key = keys->keys[i].ecmr;
                        if (rec_exchange(key, req, out, sizeof(out), &written) != 0)
                                continue;
                        /* Only the key of the request's own curve multiplies. */
                        FUZZ_ASSERT(!exchanged);
                        exchanged = true;
                        check_answer(key, out, written);
                }
                /* What the server multiplies, the client would have accepted. */
                if (exchanged)
                        FUZZ_ASSERT(client_reads(req));
                json_decref(req);
        }

        json_auto_t *jwk = json_loadb(body, size, JSON_REJECT_DUPLICATES, NULL);
        if (json_is_object(jwk))
                client_reads(jwk);
        free(body);
        return 0;
}
