/* HTTP for the client side, over libcurl. No printing: errors come back as
 * a negative errno and a one-line message. */
#pragma once

#include <stddef.h>

struct tc_http_reply {
        long status;
        char *body;      /* NUL-terminated, owned by the caller */
        size_t len;
};

/* Largest reply body we accept; advertisements and /rec replies are small. */
#define TC_HTTP_MAX_BODY (1024 * 1024)

/* GET (body == NULL) or POST to url. timeout_ms bounds the whole exchange. */
int tc_http_request(const char *url, const char *body, size_t body_len, const char *content_type,
                    long timeout_ms, struct tc_http_reply *reply, char *err, size_t errlen);
void tc_http_reply_clear(struct tc_http_reply *reply);
