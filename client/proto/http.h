/* HTTP for the client side, over OpenSSL 3's HTTP client: http and https (system CA
 * bundle), proxies from the environment, IPv6 literals, bounded retries
 * when the server cannot be reached, cancellation through the context. */
#pragma once

#include <stddef.h>

#include "ctx.h"
#include "err.h"

struct tc_http_reply {
        long status;
        char *body;      /* NUL-terminated, owned by the caller */
        size_t len;
};

/* Largest reply body we accept; advertisements and /rec replies are small. */
#define TC_HTTP_MAX_BODY (1024 * 1024)

/* GET (body == NULL) or POST to url. Any HTTP status is a success here; the
 * caller judges it. Fails with -EHOSTUNREACH, -ETIMEDOUT, -ECANCELED,
 * -EMSGSIZE (reply too large) or -ENOMEM, with a message naming the URL. */
int tc_http_request(const struct tc_ctx *ctx, const char *url, const char *body, size_t body_len,
                    const char *content_type, struct tc_http_reply *reply, struct tc_err *err);
void tc_http_reply_clear(struct tc_http_reply *reply);
