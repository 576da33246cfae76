#include "ctx.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int tc_ctx_init(struct tc_ctx *ctx) {
        memset(ctx, 0, sizeof(*ctx));
        ctx->connect_timeout_ms = TC_DEFAULT_CONNECT_TIMEOUT_MS;
        ctx->timeout_ms = TC_DEFAULT_TIMEOUT_MS;
        ctx->attempts = TC_DEFAULT_ATTEMPTS;
        ctx->backoff_ms = TC_DEFAULT_BACKOFF_MS;

        const char *t = getenv("TETHER_TIMEOUT");
        if (t && *t) {
                char *end;
                errno = 0;
                double s = strtod(t, &end);
                if (errno || *end || !(s > 0) || s > 3600)
                        return -EINVAL;
                ctx->timeout_ms = (long) (s * 1000);
                if (ctx->connect_timeout_ms > ctx->timeout_ms)
                        ctx->connect_timeout_ms = ctx->timeout_ms;
        }
        return 0;
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
                .trust_all = parent->trust_all,
                .trust = parent->trust,
                .trust_data = parent->trust_data,
                .parent = parent,
        };
}

void tc_ctx_cancel(struct tc_ctx *ctx) {
        __atomic_store_n(&ctx->cancelled, 1, __ATOMIC_RELEASE);
}

bool tc_ctx_cancelled(const struct tc_ctx *ctx) {
        for (; ctx; ctx = ctx->parent)
                if (__atomic_load_n(&ctx->cancelled, __ATOMIC_ACQUIRE))
                        return true;
        return false;
}
