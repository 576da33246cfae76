/* The programs' settings from their environment, read here only: the client
 * library reads no environment variable (it runs inside other processes:
 * the token plugin in systemd-cryptsetup), its callers pass them in. */
#pragma once

#include "boot.h"
#include "ctx.h"
#include "err.h"

/* ctx with the defaults (tc_ctx_init), TETHER_TIMEOUT, TETHER_PIN_PATH and
 * curl's proxy variables (http_proxy, https_proxy, all_proxy, no_proxy and
 * the upper-case forms curl reads; the strings stay the environment's).
 * Returns 0, or -EINVAL for a malformed TETHER_TIMEOUT (err says so). A malformed TETHER_PIN_PATH is not an
 * error here: what runs an external pin fails with a message naming it. */
int program_ctx_from_environment(struct tc_ctx *ctx, struct tc_err *err);

/* How long to try the tang servers at boot (tc_boot_policy), with
 * TETHER_BOOT_TIMEOUT. */
void program_boot_policy(struct tc_boot_policy *p);
