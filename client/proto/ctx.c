#include "ctx.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tc_ctx_init(struct tc_ctx *ctx) {
        memset(ctx, 0, sizeof(*ctx));
        ctx->connect_timeout_ms = TC_DEFAULT_CONNECT_TIMEOUT_MS;
        ctx->timeout_ms = TC_DEFAULT_TIMEOUT_MS;
        ctx->attempts = TC_DEFAULT_ATTEMPTS;
        ctx->backoff_ms = TC_DEFAULT_BACKOFF_MS;
}

int tc_ctx_set_timeout(struct tc_ctx *ctx, const char *seconds) {
        if (!seconds || !*seconds)
                return 0;
        char *end;
        errno = 0;
        double s = strtod(seconds, &end);
        if (errno || *end || !(s > 0) || s > 3600)
                return -EINVAL;
        ctx->timeout_ms = (long) (s * 1000);
        if (ctx->connect_timeout_ms > ctx->timeout_ms)
                ctx->connect_timeout_ms = ctx->timeout_ms;
        snprintf(ctx->timeout_given, sizeof(ctx->timeout_given), "%s", seconds);
        return 0;
}

/* An empty or relative entry would mean the current directory, whatever it
 * happens to be. */
int tc_ctx_check_pin_path(const char *dirs, struct tc_err *err) {
        if (!dirs || !*dirs)
                return 0;
        for (const char *p = dirs; p;) {
                const char *colon = strchr(p, ':');
                if (*p != '/')
                        return tc_fail(err, -EINVAL, "TETHER_PIN_PATH=\"%s\": every entry must be an absolute directory",
                                       dirs);
                p = colon ? colon + 1 : NULL;
        }
        return 0;
}

int tc_ctx_set_pin_path(struct tc_ctx *ctx, const char *dirs, struct tc_err *err) {
        ctx->pin_path = dirs && *dirs ? dirs : NULL;
        return tc_ctx_check_pin_path(dirs, err);
}

void tc_ctx_child(struct tc_ctx *child, const struct tc_ctx *parent) {
        /* Field by field, not *parent: another thread may be cancelling the
         * parent (an sss node inside an sss node) while this one copies. */
        *child = (struct tc_ctx) {
                .connect_timeout_ms = parent->connect_timeout_ms,
                .timeout_ms = parent->timeout_ms,
                .attempts = parent->attempts,
                .backoff_ms = parent->backoff_ms,
                .wait_until_ms = parent->wait_until_ms,
                .netwatch = parent->netwatch,
                .deadline_ms = parent->deadline_ms,
                .started_ms = parent->started_ms,
                .deadline_why = parent->deadline_why,
                .trust_all = parent->trust_all,
                .trust = parent->trust,
                .trust_data = parent->trust_data,
                .pin_path = parent->pin_path,
                .proxy = parent->proxy,
                .parent = parent,
        };
        memcpy(child->timeout_given, parent->timeout_given, sizeof(child->timeout_given));
}

void tc_ctx_cancel(struct tc_ctx *ctx) {
        __atomic_store_n(&ctx->cancelled, 1, __ATOMIC_RELEASE);
}

bool tc_ctx_cancelled(const struct tc_ctx *ctx) {
        int64_t now = 0;
        for (; ctx; ctx = ctx->parent) {
                if (__atomic_load_n(&ctx->cancelled, __ATOMIC_ACQUIRE))
                        return true;
                if (ctx->deadline_ms && (now ? now : (now = tc_now_ms())) >= ctx->deadline_ms)
                        return true;
        }
        return false;
}

void tc_ctx_fanout_cancel(void *data, size_t job) {
        (void) job;
        tc_ctx_cancel(data);
}

bool tc_ctx_fanout_cancelled(void *data) {
        return tc_ctx_cancelled(data);
}

/* What one leaf may take: its attempts, each within timeout_ms, and the
 * pauses between them (backoff_ms, doubled after each). */
static int64_t leaf_ms(const struct tc_ctx *ctx) {
        unsigned attempts = ctx->attempts ? ctx->attempts : 1;
        int64_t total = 0, backoff = ctx->backoff_ms;
        for (unsigned i = 0; i < attempts && total < INT32_MAX; i++) {
                total += ctx->timeout_ms;
                if (i > 0) {
                        total += backoff;
                        backoff *= 2;
                }
        }
        return total;
}

int64_t tc_ctx_limit_ms(const struct tc_ctx *ctx) {
        int64_t now = tc_now_ms(), wait = ctx->wait_until_ms > now ? ctx->wait_until_ms - now : 0;
        return wait + leaf_ms(ctx) + TC_DEADLINE_SLACK_MS;
}

void tc_ctx_set_deadline(struct tc_ctx *ctx) {
        if (ctx->deadline_ms)
                return;
        ctx->started_ms = tc_now_ms();
        ctx->deadline_ms = ctx->started_ms + tc_ctx_limit_ms(ctx);
}

bool tc_ctx_expired(const struct tc_ctx *ctx) {
        return ctx->deadline_ms && tc_now_ms() >= ctx->deadline_ms;
}

int tc_ctx_expired_error(const struct tc_ctx *ctx, int r, struct tc_err *err) {
        if (r >= 0 || !tc_ctx_expired(ctx))
                return r;
        if (ctx->deadline_why)
                return tc_wrap(err, -ETIMEDOUT, "gave up after %.1f s: %s; by then",
                               (double) (tc_now_ms() - ctx->started_ms) / 1000, ctx->deadline_why);
        char timeout[64];
        if (*ctx->timeout_given)
                snprintf(timeout, sizeof(timeout), "TETHER_TIMEOUT=%.20s s", ctx->timeout_given);
        else
                snprintf(timeout, sizeof(timeout), "TETHER_TIMEOUT unset: %.1f s", (double) ctx->timeout_ms / 1000);
        return tc_wrap(err, -ETIMEDOUT,
                       "gave up after %.1f s: the whole decryption has a time limit of %.1f s (%swhat one pin may "
                       "take: %u tr%s x %s with pauses, plus %.0f s; raise TETHER_TIMEOUT to wait longer); by then",
                       (double) (tc_now_ms() - ctx->started_ms) / 1000,
                       (double) (ctx->deadline_ms - ctx->started_ms) / 1000,
                       ctx->wait_until_ms ? "the boot wait (rd.tether.timeout), then " : "",
                       ctx->attempts ? ctx->attempts : 1, ctx->attempts == 1 ? "y" : "ies", timeout,
                       (double) TC_DEADLINE_SLACK_MS / 1000);
}
