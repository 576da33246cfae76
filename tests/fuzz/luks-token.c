/* A LUKS2 token's JSON as libcryptsetup hands it over (untrusted: anyone
 * with the disk can write it): tc_luks_token_jwe turns a clevis token into
 * a compact JWE, which is then parsed and read back into a pin
 * configuration, as `tether luks list` and the token plugin (validate,
 * dump) do.
 *
 * Input: the token JSON (a C string: cut at the first NUL). */
#include "fuzz.h"

#include "jwe.h"
#include "luks.h"
#include "tether.h"

#include <string.h>

/* The compact form is the token's protected header, then its other parts. */
static void check_compact(const char *json, const char *compact) {
        json_auto_t *token = json_loads(json, 0, NULL);
        const char *protected = json_string_value(json_object_get(json_object_get(token, "jwe"), "protected"));
        const char *tag = json_string_value(json_object_get(json_object_get(token, "jwe"), "tag"));
        size_t dots = 0;

        FUZZ_ASSERT(protected && tag);
        FUZZ_ASSERT(strncmp(compact, protected, strlen(protected)) == 0 && compact[strlen(protected)] == '.');
        FUZZ_ASSERT(strlen(compact) >= strlen(tag) && strcmp(compact + strlen(compact) - strlen(tag), tag) == 0);
        for (const char *p = compact; *p; p++)
                dots += *p == '.';
        FUZZ_ASSERT(dots >= 4);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *json = fuzz_cstring(data, size), *compact = NULL, *pin = NULL;
        struct tc_err err;
        struct tc_jwe jwe;

        if (tc_luks_token_jwe(json, &compact, &err) == 0) {
                check_compact(json, compact);
                if (tc_jwe_parse(compact, strlen(compact), &jwe, &err) == 0)
                        tc_jwe_clear(&jwe);
                /* What luksDump shows through the token plugin. */
                json_t *cfg = tc_jwe_config(compact, size % 2 == 1, &pin);
                FUZZ_ASSERT(!cfg || pin);
                char *text = cfg ? json_dumps(cfg, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
                FUZZ_ASSERT(!cfg || text);
                free(text);
                json_decref(cfg);
                free(pin);
                free(compact);
        }
        free(json);
        return 0;
}
