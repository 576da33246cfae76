/* Reading a JWE's pin configuration back out of its header: what `luks
 * list` prints and what `luks regen` re-encrypts with. Clevis's format
 * (tang '{"url":...}', sss '{"t":2,"pins":{"tang":[...]}}'), but nothing
 * dropped: null children, several nested sss, other pins' settings. */
#include "cleanup.h"
#include "jwe.h"
#include "keyset.h"
#include "luks.h"
#include "tang.h"

#include <string.h>

static json_t *header_config(const json_t *header, bool with_thp, char **pin_out);

static json_t *tang_config(const json_t *tang, bool with_thp) {
        json_t *cfg = json_pack("{s:O?}", "url", json_object_get(tang, "url"));
        if (cfg && with_thp) {
                json_auto_t *verify = tc_tang_keys_for(json_object_get(tang, "adv"), "verify");
                _cleanup_free_ char *thp = tk_thumbprint(json_array_get(verify, 0), "S256");
                if (thp)
                        json_object_set_new(cfg, "thp", json_string(thp));
        }
        return cfg;
}

static json_t *tpm2_config(const json_t *tpm2) {
        static const char *const keys[] = { "hash", "key", "pcr_bank", "pcr_ids", "pcr_digest" };
        json_t *cfg = json_object();
        for (size_t i = 0; cfg && i < ELEMENTSOF(keys); i++) {
                json_t *v = json_object_get(tpm2, keys[i]);
                if (v)
                        json_object_set(cfg, keys[i], v);
        }
        return cfg;
}

static int add_child(json_t *groups, const char *pin, json_t *cfg) {
        json_t *list = json_object_get(groups, pin);
        if (!list) {
                list = json_array();
                if (json_object_set_new(groups, pin, list) < 0)
                        return -1;
        }
        return json_array_append_new(list, cfg);
}

static json_t *sss_config(const json_t *sss, bool with_thp) {
        json_auto_t *groups = json_object();
        json_t *jwes = json_object_get(sss, "jwe"), *j;
        size_t i;
        if (!groups)
                return NULL;
        json_array_foreach(jwes, i, j) {
                struct tc_jwe child;
                char *pin = NULL;
                const char *s = json_string_value(j);
                if (!s || tc_jwe_parse(s, strlen(s), &child, NULL) < 0)
                        continue;
                json_t *cfg = header_config(child.header, with_thp, &pin);
                tc_jwe_clear(&child);
                if (cfg && pin)
                        add_child(groups, pin, cfg);
                else
                        json_decref(cfg);
                free(pin);
        }
        /* Clevis's order: tang, tpm2, the rest, sss last; a single nested sss
         * as an object, as Clevis writes it. */
        json_auto_t *pins = json_object();
        const char *name;
        json_t *list;
        static const char *const first[] = { "tang", "tpm2" };
        for (size_t k = 0; k < ELEMENTSOF(first); k++)
                if ((list = json_object_get(groups, first[k])))
                        json_object_set(pins, first[k], list);
        json_object_foreach(groups, name, list)
                if (strcmp(name, "tang") && strcmp(name, "tpm2") && strcmp(name, "sss"))
                        json_object_set(pins, name, list);
        if ((list = json_object_get(groups, "sss")))
                json_object_set(pins, "sss", json_array_size(list) == 1 ? json_array_get(list, 0) : list);
        return json_pack("{s:O,s:O}", "t", json_object_get(sss, "t"), "pins", pins);
}

static json_t *header_config(const json_t *header, bool with_thp, char **pin_out) {
        const json_t *clevis = json_object_get(header, "clevis");
        const char *pin = json_string_value(json_object_get(clevis, "pin"));
        const json_t *data = pin ? json_object_get(clevis, pin) : NULL;
        json_t *cfg;

        if (!pin || !json_is_object(data))
                return NULL;
        if (strcmp(pin, "tang") == 0)
                cfg = tang_config(data, with_thp);
        else if (strcmp(pin, "sss") == 0)
                cfg = sss_config(data, with_thp);
        else if (strcmp(pin, "null") == 0)
                cfg = json_object_get(data, "jwk") ? json_object() : json_pack("{s:b}", "fail", 1);
        else if (strcmp(pin, "tpm2") == 0)
                cfg = tpm2_config(data);
        else
                cfg = json_deep_copy(data);
        if (cfg && pin_out)
                *pin_out = strdup(pin);
        return cfg;
}

json_t *tc_jwe_config(const char *compact, bool with_thp, char **pin) {
        struct tc_jwe jwe;
        if (tc_jwe_parse(compact, strlen(compact), &jwe, NULL) < 0)
                return NULL;
        json_t *cfg = header_config(jwe.header, with_thp, pin);
        tc_jwe_clear(&jwe);
        return cfg;
}
