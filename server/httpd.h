/* libmicrohttpd glue: turns connections into route_match/route_serve calls
 * and logs one line per request. */
#pragma once

#include <stdbool.h>
#include "keystore.h"

struct httpd_config {
        const char *prefix;          /* endpoint without slashes, or NULL */
        unsigned threads;
        unsigned connection_limit;
        unsigned timeout_s;          /* idle connection timeout */
        unsigned per_address_limit;  /* connections from one client address; 0: no limit */
        unsigned request_timeout_s;  /* a request's headers and body must arrive within this; 0: none */
        bool log_requests;
};

struct httpd;

/* One daemon per listening socket (listen_fd >= 0), or for a single
 * connection handed over by inetd (conn_fd >= 0, listen_fd < 0). */
int httpd_start(const struct httpd_config *cfg, struct keystore *ks, int listen_fd, int conn_fd,
                int closed_eventfd, struct httpd **ret);
/* Stops accepting, waits up to drain_ms for open connections, then stops. */
void httpd_stop(struct httpd *h, unsigned drain_ms);
