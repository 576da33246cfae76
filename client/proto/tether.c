#include "tether.h"
#include "cleanup.h"
#include "pin.h"
#include "sss-internal.h"

#include <errno.h>
#include <string.h>

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

/* The pin a JWE names, for the fuzzers to compare with what tc_decrypt
 * dispatches on (tc_jwe_tree_parse decodes the header once and reads the
 * pin there). */
char *tc_peek_pin(const char *compact, size_t len) {
        json_auto_t *h = NULL;
        if (tc_jwe_header_decode(compact, len, &h, NULL) < 0)
                return NULL;
        const char *pin = json_string_value(json_object_get(json_object_get(h, "clevis"), "pin"));
        return pin ? strdup(pin) : NULL;
}

static int node_parse(const char *compact, size_t len, unsigned depth, size_t *leaves, struct tc_jwe_node *node,
                      struct tc_err *err);

static int leaf_count(size_t *leaves, struct tc_err *err) {
        if (++*leaves > TC_SSS_MAX_LEAVES)
                return tc_fail(err, -E2BIG, "sss: more than %d pins in one binding", TC_SSS_MAX_LEAVES);
        return 0;
}

static int children_parse(struct tc_jwe_node *node, unsigned depth, size_t *leaves, struct tc_err *err) {
        const json_t *jwes = json_object_get(json_object_get(json_object_get(node->jwe.header, "clevis"), "sss"), "jwe");
        size_t n = json_array_size(jwes);
        int r;

        /* Anything else is sss_decrypt's to explain. */
        if (!json_is_array(jwes) || n == 0 || n > TC_SSS_MAX_CHILDREN)
                return 0;
        node->jwe.children = calloc(n, sizeof(*node->jwe.children));
        if (!node->jwe.children)
                return tc_fail(err, -ENOMEM, "out of memory");
        node->jwe.n_children = n;
        for (size_t i = 0; i < n; i++) {
                struct tc_jwe_node *c = &node->jwe.children[i];
                const char *s = json_string_value(json_array_get(jwes, i));
                if (s)
                        r = node_parse(s, strlen(s), depth + 1, leaves, c, err);
                else {
                        c->r = tc_fail(&c->err, -EINVAL, "not a compact JWE string");
                        r = leaf_count(leaves, err);
                }
                if (r < 0)
                        return r;
        }
        return 0;
}

static int node_parse(const char *compact, size_t len, unsigned depth, size_t *leaves, struct tc_jwe_node *node,
                      struct tc_err *err) {
        json_t *header = NULL;
        int r;

        memset(node, 0, sizeof(*node));
        node->compact = compact;
        node->len = len;
        /* Each level is a JWE of its own, so no per-header bound sees this. */
        if (depth > TC_SSS_MAX_DEPTH)
                return tc_fail(err, -ELOOP, "sss: JWEs nested more than %d levels deep", TC_SSS_MAX_DEPTH);
        r = tc_jwe_header_decode(compact, len, &header, &node->err);
        if (r == 0) {
                const char *pin = json_string_value(json_object_get(json_object_get(header, "clevis"), "pin"));
                if (pin && !(node->pin = strdup(pin))) {
                        json_decref(header);
                        return tc_fail(err, -ENOMEM, "out of memory");
                }
                        /* Dispatched on before any other check: external pins may
                 * use JWE features the built-in ones do not. */
                node->external = pin && !tc_pin_find(pin) && valid_pin_name(pin);
                if (node->external)
                        json_decref(header);
                else
                        r = tc_jwe_parse_decoded(compact, len, header, &node->jwe, &node->err);
        } else
                /* For the message tc_jwe_parse gives malformed input. */
                r = tc_jwe_parse(compact, len, &node->jwe, &node->err);
        node->r = r;
        if (r < 0 || node->external || !node->pin || strcmp(node->pin, "sss") != 0)
                return leaf_count(leaves, err);
        return children_parse(node, depth, leaves, err);
}

int tc_jwe_tree_parse(const char *compact, size_t len, struct tc_jwe_node *root, struct tc_err *err) {
        size_t leaves = 0;
        int r = node_parse(compact, len, 0, &leaves, root, err);
        if (r == 0 && root->r < 0) {
                r = root->r;
                if (err)
                        *err = root->err;
        }
        if (r < 0)
                tc_jwe_tree_clear(root);
        return r;
}

void tc_jwe_tree_clear(struct tc_jwe_node *node) {
        for (size_t i = 0; i < node->jwe.n_children; i++)
                tc_jwe_tree_clear(&node->jwe.children[i]);
        free(node->jwe.children);
        tc_jwe_clear(&node->jwe);
        free(node->pin);
        memset(node, 0, sizeof(*node));
}

int tc_decrypt_node(const struct tc_ctx *ctx, const struct tc_jwe_node *node, uint8_t **pt, size_t *pt_len,
                    struct tc_err *err) {
        const struct tc_pin *p = tc_pin_find(node->pin);
        int r;

        if (node->r < 0) {
                if (err)
                        *err = node->err;
                return node->r;
        }
        if (node->external) {
                r = tc_external_decrypt(ctx, node->pin, node->compact, node->len, pt, pt_len, err);
                if (r == -ENOENT)
                        r = tc_wrap(err, r, "unsupported pin \"%s\" (built in: tang, sss, null)", node->pin);
                return r;
        }
        if (!p)
                return tc_fail(err, -EINVAL, "JWE names no Clevis pin (clevis.pin is missing or malformed)");
        return p->decrypt(ctx, &node->jwe, pt, pt_len, err);
}

/* The entry point of every decryption: the whole tree is parsed and bounded
 * first, and whatever it holds (thousands of leaves that block), it ends by
 * the deadline of tc_ctx_set_deadline(), unless the caller set an earlier
 * one. */
int tc_decrypt(const struct tc_ctx *ctx, const char *jwe, size_t jwe_len, uint8_t **pt, size_t *pt_len,
               struct tc_err *err) {
        _cleanup_(tc_jwe_tree_clear) struct tc_jwe_node root = {};
        struct tc_ctx bounded;
        tc_ctx_child(&bounded, ctx);
        tc_ctx_set_deadline(&bounded);
        int r = tc_jwe_tree_parse(jwe, jwe_len, &root, err);
        if (r == 0)
                r = tc_decrypt_node(&bounded, &root, pt, pt_len, err);
        return tc_ctx_expired_error(&bounded, r, err);
}
