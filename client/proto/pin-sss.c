/* The sss pin: Shamir's threshold scheme over child pins of any kind,
 * nested to any depth, in Clevis's format. Decryption asks every child at
 * once (within a process-wide budget of threads) and finishes as soon as t
 * have answered; the rest are cancelled. */
#include "cleanup.h"
#include "fanout.h"
#include "pin.h"
#include "shamir.h"
#include "sss-internal.h"

#include <errno.h>
#include <string.h>
#include <jose/b64.h>

/* ---------------------------------------------------------------- encrypt */

static int add_child(const struct tc_ctx *ctx, const struct tc_shamir *s, const char *pin, const json_t *cfg,
                     json_t *jwes, struct tc_err *err) {
        size_t len = 2 * s->p_len;
        _cleanup_free_ char *jwe = NULL;
        uint8_t *share = malloc(len);
        TC_CLEANUP_SECRET(share, len);
        int r;

        if (!share)
                return tc_fail(err, -ENOMEM, "out of memory");
        r = tc_shamir_share(s, share, err);
        if (r == 0)
                r = tc_encrypt_json(ctx, pin, cfg, share, len, &jwe, err);
        if (r < 0)
                return tc_wrap(err, r, "sss child %zu (%s)", json_array_size(jwes) + 1, pin);
        return json_array_append_new(jwes, json_string(jwe)) < 0 ? tc_fail(err, -ENOMEM, "out of memory") : 0;
}

/* The bounds of tc_jwe_tree_parse, on the configuration: what encryption
 * writes, decryption must accept. depth is that of cfg, an sss node. */
static int config_tree_check(const json_t *cfg, unsigned depth, size_t *leaves, struct tc_err *err) {
        const char *pin;
        json_t *v, *c;
        size_t i;
        int r = 0;

        if (depth >= TC_SSS_MAX_DEPTH)
                return tc_fail(err, -ELOOP, "sss configuration: pins nested more than %d levels deep", TC_SSS_MAX_DEPTH);
        json_object_foreach(json_object_get(cfg, "pins"), pin, v) {
                json_array_foreach(json_is_array(v) ? v : NULL, i, c)
                        if (r >= 0)
                                r = strcmp(pin, "sss") == 0 ? config_tree_check(c, depth + 1, leaves, err)
                                                            : (++*leaves > TC_SSS_MAX_LEAVES ? -E2BIG : 0);
                if (json_is_object(v) && r >= 0)
                        r = strcmp(pin, "sss") == 0 ? config_tree_check(v, depth + 1, leaves, err)
                                                    : (++*leaves > TC_SSS_MAX_LEAVES ? -E2BIG : 0);
                if (r == -E2BIG)
                        return tc_fail(err, r, "sss: more than %d pins in one binding", TC_SSS_MAX_LEAVES);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int sss_encrypt(const struct tc_ctx *ctx, const json_t *cfg, const uint8_t *pt, size_t pt_len, char **jwe,
                       struct tc_err *err) {
        json_t *t_json = json_object_get(cfg, "t"), *pins = json_object_get(cfg, "pins"), *v;
        json_int_t t = t_json ? json_integer_value(t_json) : 1;
        json_auto_t *jwes = json_array(), *header = NULL;
        _cleanup_(tc_shamir_clear) struct tc_shamir s = {};
        uint8_t cek[TC_CEK_LEN], pbuf[TC_SSS_KEY_BYTES * 2];
        TC_CLEANUP_ERASE(cek);
        const char *pin;
        size_t n = 0;
        int r;

        if (!jwes)
                return tc_fail(err, -ENOMEM, "out of memory");
        /* Every child's keys before any child contacts a server. */
        if ((r = tc_pin_config_check("sss", cfg, err)) < 0)
                return r;
        if ((t_json && !json_is_integer(t_json)) || t < 1)
                return tc_fail(err, -EINVAL, "sss configuration: \"t\" must be an integer of at least 1");
        if (!json_is_object(pins) || json_object_size(pins) == 0)
                return tc_fail(err, -EINVAL, "sss configuration: \"pins\" must be an object naming at least one pin");
        json_object_foreach(pins, pin, v) {
                if (json_is_array(v)) {
                        size_t i;
                        json_t *c;
                        json_array_foreach(v, i, c)
                                if (!json_is_object(c))
                                        return tc_fail(err, -EINVAL, "sss configuration: the %s configurations must be objects", pin);
                        n += json_array_size(v);
                } else if (json_is_object(v))
                        n++;
                else
                        return tc_fail(err, -EINVAL, "sss configuration: \"%s\" must be an object or an array of objects", pin);
        }
        size_t leaves = 0;
        if ((r = config_tree_check(cfg, 0, &leaves, err)) < 0)
                return r;
        if ((size_t) t > n)
                return tc_fail(err, -EINVAL, "sss configuration: threshold t=%lld is more than the %zu pins given", (long long) t, n);
        if (n > TC_SSS_MAX_CHILDREN)
                return tc_fail(err, -EINVAL, "sss configuration: more than %d pins", TC_SSS_MAX_CHILDREN);

        r = tc_shamir_generate(&s, (size_t) t, err);
        if (r < 0)
                return r;
        json_object_foreach(pins, pin, v) {
                if (json_is_object(v))
                        r = add_child(ctx, &s, pin, v, jwes, err);
                else {
                        size_t i;
                        json_t *c;
                        json_array_foreach(v, i, c)
                                if ((r = add_child(ctx, &s, pin, c, jwes, err)) < 0)
                                        break;
                }
                if (r < 0)
                        return r;
        }
        BN_bn2bin(s.p, pbuf);
        header = json_pack("{s:s,s:s,s:{s:s,s:{s:I,s:o,s:O}}}", "alg", "dir", "enc", "A256GCM", "clevis",
                                        "pin", "sss", "sss", "t", t, "p", jose_b64_enc(pbuf, s.p_len), "jwe", jwes);
        if (!header)
                return tc_fail(err, -ENOMEM, "out of memory");
        r = tc_shamir_secret(&s, cek, err);
        return r < 0 ? r : tc_jwe_encrypt(header, cek, pt, pt_len, jwe, err);
}

/* ---------------------------------------------------------------- decrypt */

struct child {
        uint8_t *share;
        size_t share_len;
        struct tc_err err;
};

struct sss_job {
        struct tc_ctx ctx;          /* first (tc_ctx_fanout_cancel); cancelled
                                     * once t shares are in */
        const struct tc_jwe *jwe;   /* the node; its children are the jobs */
        size_t t, n;
        size_t share_len;
        struct child *children;
        int *results;               /* each child's, from the fan-out */
};
_Static_assert(offsetof(struct sss_job, ctx) == 0, "the fan-out hooks take the job for its context");

/* Worker threads across every sss node of the process, nested or not: a
 * crafted header could otherwise start 256 per node, at every level. Beyond
 * the budget a node decrypts its remaining children itself, one after the
 * other, taking a thread again as soon as one is free. */
static struct tc_fanout_budget workers = { .max = TC_SSS_MAX_THREADS };

unsigned tc_sss_workers(void) {
        return tc_fanout_budget_used(&workers);
}

static int child_run(void *data, size_t i, struct tc_fanout *f) {
        struct sss_job *job = data;
        struct child *c = &job->children[i];
        uint8_t *pt = NULL;
        size_t len = 0;

        (void) f;  /* cancelled through job->ctx, which the child pins watch */
        int r = tc_decrypt_node(&job->ctx, &job->jwe->children[i], &pt, &len, &c->err);
        if (r == 0 && len != job->share_len) {
                tc_secret_free(pt, len);
                return tc_fail(&c->err, -EINVAL, "its share has %zu bytes, expected %zu", len, job->share_len);
        }
        if (r == 0) {
                c->share = pt;
                c->share_len = len;
        }
        return r;
}

static const struct tc_fanout_ops children_ops = {
        .run = child_run,
        TC_CTX_FANOUT_HOOKS,
};

/* "sss: only 1 of the 2 shares needed: child 2: ...; child 3: ...". why is
 * what the fan-out returned. */
static int report_failure(const struct sss_job *job, int why, struct tc_err *err) {
        char msg[sizeof(err->msg)];
        int r = -EHOSTUNREACH;
        size_t ok = 0;
        for (size_t i = 0; i < job->n; i++)
                ok += job->results[i] >= 0;
        size_t used = (size_t) snprintf(msg, sizeof(msg), "sss: only %zu of the %zu shares needed", ok, job->t);
        bool first = true;
        for (size_t i = 0; i < job->n && used < sizeof(msg); i++) {
                const struct child *c = &job->children[i];
                if (job->results[i] >= 0 || job->results[i] == -ECANCELED)
                        continue;
                r = job->results[i];
                used += (size_t) snprintf(msg + used, sizeof(msg) - used, "%s child %zu: %s", first ? ":" : ";", i + 1,
                                          c->err.msg);
                first = false;
        }
        /* Nothing ran: the fan-out itself could not start. */
        if (first && why == -ENOMEM)
                return tc_fail(err, why, "sss: out of memory");
        return tc_fail(err, r, "%s", msg);
}

int tc_sss_header_parse(const json_t *header, struct tc_sss_header *h, struct tc_err *err) {
        const json_t *sss = json_object_get(json_object_get(header, "clevis"), "sss");
        const json_t *jwes = json_object_get(sss, "jwe");
        const char *p_b64 = json_string_value(json_object_get(sss, "p"));
        json_int_t t = json_integer_value(json_object_get(sss, "t"));
        uint8_t pbuf[TC_SSS_KEY_BYTES * 2];

        memset(h, 0, sizeof(*h));
        if (!json_is_array(jwes) || !p_b64 || t < 1 || (size_t) t > json_array_size(jwes) ||
            json_array_size(jwes) > TC_SSS_MAX_CHILDREN)
                return tc_fail(err, -EINVAL, "sss JWE: clevis.sss needs t (1 to the number of JWEs), p and jwe");
        size_t p_len = jose_b64_dec_buf(p_b64, strlen(p_b64), NULL, 0);
        if (p_len == 0 || p_len > sizeof(pbuf) || jose_b64_dec_buf(p_b64, strlen(p_b64), pbuf, sizeof(pbuf)) != p_len ||
            !(h->p = BN_bin2bn(pbuf, (int) p_len, NULL)) || BN_num_bytes(h->p) != (int) p_len) {
                tc_sss_header_clear(h);
                return tc_fail(err, -EINVAL, "sss JWE: p is malformed");
        }
        h->t = (size_t) t;
        h->n = json_array_size(jwes);
        h->jwes = jwes;
        h->p_len = p_len;
        return 0;
}

void tc_sss_header_clear(struct tc_sss_header *h) {
        BN_clear_free(h->p);
        memset(h, 0, sizeof(*h));
}

int tc_sss_combine(const struct tc_sss_header *h, const struct tc_jwe *jwe, const uint8_t *const *shares, uint8_t **pt,
                   size_t *pt_len, struct tc_err *err) {
        uint8_t cek[TC_CEK_LEN];
        TC_CLEANUP_ERASE(cek);
        int r = tc_shamir_recover(h->p, shares, h->t, cek, err);
        return r < 0 ? r : tc_jwe_decrypt(jwe, cek, pt, pt_len, err);
}

static int sss_decrypt(const struct tc_ctx *ctx, const struct tc_jwe *jwe, uint8_t **pt, size_t *pt_len,
                       struct tc_err *err) {
        struct tc_sss_header h;
        struct sss_job job = { .jwe = jwe };
        int r = tc_sss_header_parse(jwe->header, &h, err);

        if (r < 0)
                return r;
        /* The children come parsed with the tree (tc_jwe_tree_parse). */
        if (jwe->n_children != h.n) {
                tc_sss_header_clear(&h);
                return tc_fail(err, -EINVAL, "sss JWE: its children were not parsed with it");
        }
        tc_ctx_child(&job.ctx, ctx);
        job.t = h.t;
        job.n = h.n;
        job.share_len = 2 * h.p_len;
        job.children = calloc(job.n, sizeof(*job.children));
        job.results = calloc(job.n, sizeof(*job.results));
        if (!job.children || !job.results) {
                free(job.children);
                free(job.results);
                tc_sss_header_clear(&h);
                return tc_fail(err, -ENOMEM, "out of memory");
        }

        /* Until t shares are in, or too many children failed for t to be
         * reached; cancelled from above or past the deadline, no further
         * child starts, however many are left. */
        r = tc_fanout_run(&children_ops, &job,
                          &(struct tc_fanout_opts) { .n = job.n, .quorum = job.t, .budget = &workers,
                                                     .deadline_ms = job.ctx.deadline_ms, .results = job.results });
        if (r < 0)
                r = report_failure(&job, r, err);
        else {
                const uint8_t *shares[TC_SSS_MAX_CHILDREN];
                size_t k = 0;
                for (size_t i = 0; i < job.n && k < job.t; i++)
                        if (job.children[i].share)
                                shares[k++] = job.children[i].share;
                r = tc_sss_combine(&h, jwe, shares, pt, pt_len, err);
        }
        for (size_t i = 0; i < job.n; i++)
                tc_secret_free(job.children[i].share, job.children[i].share_len);
        free(job.children);
        free(job.results);
        tc_sss_header_clear(&h);
        return r;
}

const struct tc_pin tc_pin_sss = {
        .name = "sss",
        .encrypt = sss_encrypt,
        .decrypt = sss_decrypt,
};
