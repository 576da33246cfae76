/* libmicrohttpd glue: turns connections into route_match/route_serve calls
 * and logs one line per request. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include "err.h"
#include "keystore.h"
#include "observe.h"

struct httpd_config {
        const char *prefix;          /* endpoint without slashes, or NULL */
        unsigned threads;
        unsigned connection_limit;
        unsigned timeout_s;          /* idle connection timeout */
        unsigned per_address_limit;  /* connections from one client address; 0: no limit */
        unsigned request_timeout_s;  /* a request's headers and body must arrive within this; 0: none */
        bool log_requests;
        request_observer_fn observe; /* NULL: nobody watches */
        void *observe_data;
};

struct httpd;

/* The connection limits, counted across every listening socket: one client
 * holds at most per_address_limit connections whichever addresses of the
 * server it uses, and from whichever address of its network (the /64 for
 * IPv6: one host usually has all of it). */
struct httpd_limits;
int httpd_limits_new(unsigned connection_limit, unsigned per_address_limit, struct httpd_limits **ret);
void httpd_limits_free(struct httpd_limits *l);
TC_DEFINE_CLEANUP(struct httpd_limits *, httpd_limits_free)
/* The key a client is counted under: its IPv4 address (also when given as
 * ::ffff:a.b.c.d) or its IPv6 /64, as 16 bytes. False for other families. */
bool httpd_client_prefix(const struct sockaddr *sa, socklen_t len, uint8_t key[16]);

/* One daemon per listening socket (listen_fd >= 0), or for a single
 * connection handed over by inetd (conn_fd >= 0, listen_fd < 0; limits
 * may be NULL then). On failure err says what failed; with -EIO,
 * libmicrohttpd has logged why. */
int httpd_start(const struct httpd_config *cfg, struct httpd_limits *limits, struct keystore *ks, int listen_fd,
                int conn_fd, int closed_eventfd, struct httpd **ret, struct tc_err *err);
/* Stops accepting, waits up to drain_ms for open connections, then stops. */
void httpd_stop(struct httpd *h, unsigned drain_ms);
