#include "tether.h"
#include "cleanup.h"
#include "pin.h"

#include <errno.h>
#include <string.h>
#include <jose/b64.h>

static const struct tc_pin *const pins[] = { &tc_pin_tang, &tc_pin_sss, &tc_pin_null };

const struct tc_pin *tc_pin_find(const char *name) {
        for (size_t i = 0; name && i < ELEMENTSOF(pins); i++)
                if (strcmp(pins[i]->name, name) == 0)
                        return pins[i];
        return NULL;
}

static bool valid_pin_name(const char *name) {
        if (!name || !*name)
                return false;
        for (const char *p = name; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
                        return false;
        return true;
}

int tc_encrypt_json(const struct tc_ctx *ctx, const char *pin, const json_t *cfg, const uint8_t *pt, size_t pt_len,
                    char **jwe, struct tc_err *err) {
        const struct tc_pin *p = tc_pin_find(pin);
        if (!json_is_object(cfg))
                return tc_fail(err, -EINVAL, "%s pin configuration is not a JSON object", pin);
        if (p)
                return p->encrypt(ctx, cfg, pt, pt_len, jwe, err);
        if (!valid_pin_name(pin))
                return tc_fail(err, -EINVAL, "\"%s\" is not a pin name", pin);
        int r = tc_external_encrypt(ctx, pin, cfg, pt, pt_len, jwe, err);
        if (r == -ENOENT)
                return tc_wrap(err, r, "unsupported pin \"%s\" (built in: tang, sss, null)", pin);
        return r;
}

int tc_encrypt(const struct tc_ctx *ctx, const char *pin, const char *config, const uint8_t *pt, size_t pt_len,
               char **jwe, struct tc_err *err) {
        json_error_t jerr;
        json_auto_t *cfg = json_loads(config, JSON_REJECT_DUPLICATES, &jerr);
        if (!cfg)
                return tc_fail(err, -EINVAL, "%s pin configuration is not valid JSON: %s", pin, jerr.text);
        return tc_encrypt_json(ctx, pin, cfg, pt, pt_len, jwe, err);
}

/* Before any other check: external pins may use JWE features the
 * built-in ones do not. */
char *tc_peek_pin(const char *compact, size_t len) {
        const char *dot = memchr(compact, '.', len);
        if (!dot || (size_t) (dot - compact) > TC_JWE_HEADER_MAX)
                return NULL;
        json_auto_t *text = json_stringn(compact, (size_t) (dot - compact));
        json_auto_t *h = text ? jose_b64_dec_load(text) : NULL;
        const char *pin = json_string_value(json_object_get(json_object_get(h, "clevis"), "pin"));
        return pin ? strdup(pin) : NULL;
}

int tc_decrypt_compact(const struct tc_ctx *ctx, const char *compact, size_t len, uint8_t **pt, size_t *pt_len,
                       struct tc_err *err) {
        _cleanup_free_ char *name = tc_peek_pin(compact, len);
        const struct tc_pin *p = tc_pin_find(name);
        struct tc_jwe jwe;
        int r;

        if (name && !p && valid_pin_name(name)) {
                r = tc_external_decrypt(ctx, name, compact, len, pt, pt_len, err);
                if (r == -ENOENT)
                        r = tc_wrap(err, r, "unsupported pin \"%s\" (built in: tang, sss, null)", name);
                return r;
        }
        r = tc_jwe_parse(compact, len, &jwe, err);
        if (r < 0)
                return r;
        if (p)
                r = p->decrypt(ctx, &jwe, pt, pt_len, err);
        else
                r = tc_fail(err, -EINVAL, "JWE names no Clevis pin (clevis.pin is missing or malformed)");
        tc_jwe_clear(&jwe);
        return r;
}

/* The entry point of every decryption: whatever the header holds (thousands
 * of leaves that block), it ends by the deadline of tc_ctx_set_deadline(),
 * unless the caller set an earlier one. */
int tc_decrypt(const struct tc_ctx *ctx, const char *jwe, size_t jwe_len, uint8_t **pt, size_t *pt_len,
               struct tc_err *err) {
        struct tc_ctx bounded;
        tc_ctx_child(&bounded, ctx);
        tc_ctx_set_deadline(&bounded);
        int r = tc_decrypt_compact(&bounded, jwe, jwe_len, pt, pt_len, err);
        return tc_ctx_expired_error(&bounded, r, err);
}
