#include "environment.h"

#include <errno.h>
#include <stdlib.h>

#include "boot.h"

/* The first of the variables set and not empty, as curl_getenv() sees them. */
static struct tc_env_value first_set(const char *name, const char *other) {
        const char *v = getenv(name);
        if ((!v || !*v) && other) {
                name = other;
                v = getenv(other);
        }
        return (struct tc_env_value) { .name = name, .value = v && *v ? v : NULL };
}

/* curl's proxy variables, as Clevis (through curl) read them: http_proxy in
 * lower case only (HTTP_PROXY can be set by a web server's client, CGI's
 * HTTP_ headers: curl ignores it), the others in either case, lower first. */
static void proxy_from_environment(struct tc_proxy_env *p) {
        *p = (struct tc_proxy_env) {
                .http = first_set("http_proxy", NULL),
                .https = first_set("https_proxy", "HTTPS_PROXY"),
                .all = first_set("all_proxy", "ALL_PROXY"),
                .no = first_set("no_proxy", "NO_PROXY"),
        };
}

int program_ctx_from_environment(struct tc_ctx *ctx, struct tc_err *err) {
        const char *timeout = getenv("TETHER_TIMEOUT");
        tc_ctx_init(ctx);
        if (tc_ctx_set_timeout(ctx, timeout) < 0)
                return tc_fail(err, -EINVAL, "TETHER_TIMEOUT must be a positive number of seconds, at most 3600 (got \"%s\"); "
                               "unset it for the default, 10", timeout);
        /* Kept even when malformed (tc_ctx_set_pin_path): only external
         * pins need it, and they say what is wrong with it. */
        struct tc_err ignored = {};
        (void) tc_ctx_set_pin_path(ctx, getenv("TETHER_PIN_PATH"), &ignored);
        proxy_from_environment(&ctx->proxy);
        return 0;
}

void program_boot_policy(struct tc_boot_policy *p) {
        tc_boot_policy(getenv("TETHER_BOOT_TIMEOUT"), p);
}
