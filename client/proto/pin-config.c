/* Pin configurations: checking the keys of one given to encrypt, and
 * reading one back out of a JWE's header (what `luks list` prints and what
 * `luks regen` re-encrypts with). Clevis's format (tang '{"url":...}', sss
 * '{"t":2,"pins":{"tang":[...]}}'), but nothing dropped: null children,
 * several nested sss, other pins' settings. */
#include "cleanup.h"
#include "jwe.h"
#include "keyset.h"
#include "tether.h"
#include "pin.h"
#include "tang.h"

#include <errno.h>
#include <string.h>

/* ---------------------------------------------------------------- checking */

/* What Clevis's clevis-encrypt-tang, -sss and -null read. */
static const char *const tang_keys[] = { "url", "thp", "adv", NULL };
static const char *const sss_keys[] = { "t", "pins", NULL };
static const char *const null_keys[] = { "fail", NULL };

static const char *const *known_keys(const char *pin) {
        if (strcmp(pin, "tang") == 0)
                return tang_keys;
        if (strcmp(pin, "sss") == 0)
                return sss_keys;
        if (strcmp(pin, "null") == 0)
                return null_keys;
        return NULL;
}

static bool key_known(const char *const *known, const char *key) {
        for (; *known; known++)
                if (strcmp(*known, key) == 0)
                        return true;
        return false;
}

/* path: where cfg sits in the configuration given, jq style (".pins.tang[1]"),
 * "" at the top; one buffer for the whole walk, cut back on the way out. */
static int check_config(const char *pin, const json_t *cfg, char *path, size_t size, struct tc_err *err);

static int check_keys(const char *pin, const json_t *cfg, const char *const *known, const char *path,
                      struct tc_err *err) {
        const char *key;
        json_t *v;
        json_object_foreach((json_t *) cfg, key, v) {
                if (key_known(known, key))
                        continue;
                char list[128] = "";
                for (const char *const *k = known; *k; k++)
                        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", k == known ? "" : ", ", *k);
                return tc_fail(err, -EINVAL, "%s configuration%s%s: unknown key \"%s\" (known: %s)", pin,
                               *path ? " at " : "", path, key, list);
        }
        return 0;
}

/* The children of an sss configuration, wherever their shape is right (the
 * sss pin reports a wrong shape itself). */
static int check_sss_children(const json_t *cfg, char *path, size_t size, struct tc_err *err) {
        const json_t *pins = json_object_get(cfg, "pins");
        size_t len = strlen(path), i;
        const char *pin;
        json_t *v, *c;
        int r = 0;
        json_object_foreach((json_t *) pins, pin, v) {
                if (json_is_object(v)) {
                        snprintf(path + len, size - len, ".pins.%s", pin);
                        r = check_config(pin, v, path, size, err);
                } else if (json_is_array(v))
                        json_array_foreach(v, i, c) {
                                if (!json_is_object(c))
                                        continue;
                                snprintf(path + len, size - len, ".pins.%s[%zu]", pin, i);
                                if ((r = check_config(pin, c, path, size, err)) < 0)
                                        break;
                        }
                path[len] = '\0';
                if (r < 0)
                        return r;
        }
        return 0;
}

static int check_config(const char *pin, const json_t *cfg, char *path, size_t size, struct tc_err *err) {
        const char *const *known = known_keys(pin);
        if (!known || !json_is_object(cfg))
                return 0;
        int r = check_keys(pin, cfg, known, path, err);
        if (r == 0 && strcmp(pin, "sss") == 0)
                r = check_sss_children(cfg, path, size, err);
        return r;
}

int tc_pin_config_check(const char *pin, const json_t *cfg, struct tc_err *err) {
        char path[256] = "";
        return check_config(pin, cfg, path, sizeof(path), err);
}

/* ---------------------------------------------------------------- reading back */

static json_t *header_config(const json_t *header, bool with_thp, char **pin_out, unsigned depth);

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

/* NULL for a tree deeper than decryption accepts: what cannot be decrypted
 * is not worth decoding level after level to be shown. */
static json_t *sss_config(const json_t *sss, bool with_thp, unsigned depth) {
        json_auto_t *groups = json_object();
        json_t *jwes = json_object_get(sss, "jwe"), *j;
        size_t i;
        if (!groups || depth >= TC_SSS_MAX_DEPTH)
                return NULL;
        json_array_foreach(jwes, i, j) {
                _cleanup_(tc_jwe_clear) struct tc_jwe child = {};
                _cleanup_free_ char *pin = NULL;
                const char *s = json_string_value(j);
                if (!s || tc_jwe_parse(s, strlen(s), &child, NULL) < 0)
                        continue;
                json_t *cfg = header_config(child.header, with_thp, &pin, depth + 1);
                if (!cfg && json_is_object(json_object_get(json_object_get(child.header, "clevis"), "sss")))
                        return NULL;
                if (cfg && pin)
                        add_child(groups, pin, cfg);
                else
                        json_decref(cfg);
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

static json_t *header_config(const json_t *header, bool with_thp, char **pin_out, unsigned depth) {
        const json_t *clevis = json_object_get(header, "clevis");
        const char *pin = json_string_value(json_object_get(clevis, "pin"));
        const json_t *data = pin ? json_object_get(clevis, pin) : NULL;
        json_t *cfg;

        if (!pin || !json_is_object(data))
                return NULL;
        if (strcmp(pin, "tang") == 0)
                cfg = tang_config(data, with_thp);
        else if (strcmp(pin, "sss") == 0)
                cfg = sss_config(data, with_thp, depth);
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
        _cleanup_(tc_jwe_clear) struct tc_jwe jwe = {};
        if (tc_jwe_parse(compact, strlen(compact), &jwe, NULL) < 0)
                return NULL;
        return header_config(jwe.header, with_thp, pin, 0);
}
