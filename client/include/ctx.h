/* What every client operation runs with: network limits, the trust policy
 * for new tang servers, cancellation (an sss node cancels its children once
 * it has enough shares) and a deadline for the whole operation. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Asked whether to trust a tang server's signing keys (S256 thumbprints).
 * Returns 1 to trust, 0 to refuse, < 0 on error. */
typedef int (*tc_trust_fn)(void *userdata, const char *url, const char *const *thps, size_t n);

/* How to notice network changes while waiting for a server at boot: the
 * boot layer provides it (tc_boot_netwatch, netlink), the protocol layer only
 * calls it. open returns a file descriptor or -errno; wait waits up to ms,
 * returns 1 on a change, 0 on timeout, -errno on error. */
struct tc_netwatch_ops {
        int (*open)(void);
        int (*wait)(int fd, long ms);
};

/* One setting from the caller's environment: its value (NULL when unset or
 * empty) and the variable's name, for messages. */
struct tc_env_value {
        const char *name, *value;
};

/* The proxy settings, as curl reads them (the programs fill them in
 * program_ctx_from_environment: http_proxy; https_proxy or HTTPS_PROXY;
 * all_proxy or ALL_PROXY; no_proxy or NO_PROXY). Borrowed, like pin_path:
 * the strings must outlive the context; what the library derives from them
 * (credentials) it copies and wipes. */
struct tc_proxy_env {
        struct tc_env_value http, https, all, no;
};

struct tc_ctx {
        long connect_timeout_ms;
        long timeout_ms;             /* whole exchange, per attempt */
        char timeout_given[21];      /* "", or the seconds the caller gave
                                      * (tc_ctx_set_timeout), for messages */
        unsigned attempts;           /* tries per request when the server is unreachable */
        long backoff_ms;             /* pause before the 2nd attempt, doubled after */
        int64_t wait_until_ms;       /* 0, or a tc_now_ms() time: until then an
                                      * unreachable server is tried again, beyond
                                      * attempts, as soon as the network changes */
        const struct tc_netwatch_ops *netwatch; /* NULL: plain pauses while waiting */
        bool trust_all;              /* -y: trust advertisements without asking */
        tc_trust_fn trust;           /* NULL: refuse unknown keys */
        void *trust_data;
        const char *pin_path;        /* NULL, or extra directories for external
                                      * pin programs (tc_ctx_set_pin_path) */
        int64_t deadline_ms;         /* 0, or a tc_now_ms() time after which the
                                      * whole operation counts as cancelled,
                                      * however many leaves a header holds */
        int64_t started_ms;          /* when the deadline was set, for messages */
        const char *deadline_why;    /* NULL, or who set deadline_ms and why,
                                      * for the message when it passes (static) */
        struct tc_proxy_env proxy;   /* all NULL: no proxy */
        const struct tc_ctx *parent; /* cancelled when the parent is */
        int cancelled;               /* atomic */
};

#define TC_DEFAULT_TIMEOUT_MS 10000
#define TC_DEFAULT_CONNECT_TIMEOUT_MS 3000
#define TC_DEFAULT_ATTEMPTS 3
#define TC_DEFAULT_BACKOFF_MS 250
/* Longest pause between tries while waiting for the network (wait_until_ms). */
#define TC_WAIT_BACKOFF_MAX_MS 2000

/* Slack of the whole-decryption time limit, over what one leaf may take. */
#define TC_DEADLINE_SLACK_MS 1000

/* Defaults suited to boot. The library reads no environment variable: the
 * programs pass TETHER_TIMEOUT and TETHER_PIN_PATH in with the setters. */
void tc_ctx_init(struct tc_ctx *ctx);
/* The time allowed for each whole exchange (timeout_ms, and connect_timeout_ms
 * if longer) from "SECONDS", above 0 and up to 3600, as in TETHER_TIMEOUT.
 * NULL or "" leaves the defaults. Returns 0, or -EINVAL when malformed (ctx
 * unchanged). The text is kept for messages about the time limit. */
int tc_ctx_set_timeout(struct tc_ctx *ctx, const char *seconds);
/* Extra directories (colon-separated) searched for external pin programs
 * before the fixed ones, as in TETHER_PIN_PATH; NULL or "" for none. Not
 * copied: it must outlive ctx. Every entry must be an absolute directory:
 * otherwise returns -EINVAL and err says so, and ctx keeps it anyway, so that
 * what needs an external pin fails with that message when it looks for one
 * and the rest (tang, sss, null) works as before. */
int tc_ctx_set_pin_path(struct tc_ctx *ctx, const char *dirs, struct tc_err *err);
/* Whether dirs (NULL, "" or a pin path as above) is acceptable: 0, or -EINVAL
 * with err naming it. */
int tc_ctx_check_pin_path(const char *dirs, struct tc_err *err);
/* A child context: same limits, policy and deadline, cancelled with the parent. */
void tc_ctx_child(struct tc_ctx *child, const struct tc_ctx *parent);
void tc_ctx_cancel(struct tc_ctx *ctx);
/* True once cancelled (this context or an ancestor) or past the deadline. */
bool tc_ctx_cancelled(const struct tc_ctx *ctx);
/* The .cancel and .cancelled hooks of a fan-out (base/fanout.h) whose jobs
 * all run in one context: data is that context (or a struct beginning with
 * it), cancelled to stop them and asked whether it is cancelled. */
void tc_ctx_fanout_cancel(void *data, size_t job);
bool tc_ctx_fanout_cancelled(void *data);
/* Both, for a struct tc_fanout_ops initializer: { .run = f, TC_CTX_FANOUT_HOOKS }. */
#define TC_CTX_FANOUT_HOOKS .cancel = tc_ctx_fanout_cancel, .cancelled = tc_ctx_fanout_cancelled

/* How long a whole decryption may take with these limits, in ms: what one
 * leaf may take (attempts x timeout_ms plus the pauses between attempts)
 * plus TC_DEADLINE_SLACK_MS, after the boot wait (wait_until_ms) if any.
 * Normal configurations ask all their leaves at once, so this is enough for
 * them; a header with more blocking leaves than threads is cut off there. */
int64_t tc_ctx_limit_ms(const struct tc_ctx *ctx);
/* Gives ctx the deadline tc_ctx_limit_ms() from now, unless it has one. */
void tc_ctx_set_deadline(struct tc_ctx *ctx);
/* Whether ctx has a deadline and it has passed. */
bool tc_ctx_expired(const struct tc_ctx *ctx);
/* If ctx's deadline has passed, replaces err with a message saying so and
 * returns -ETIMEDOUT; otherwise returns r. */
int tc_ctx_expired_error(const struct tc_ctx *ctx, int r, struct tc_err *err);
