#include "environment.h"

#include <errno.h>
#include <stdlib.h>

#include "boot.h"

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
        return 0;
}

long program_boot_wait_ms(void) {
        return tc_boot_wait_ms(getenv("TETHER_BOOT_TIMEOUT"));
}
