/* The metrics' own listener (tetherd --metrics-address): GET /metrics on an
 * address and port of its own, never on the client port, because what it
 * says (recoveries per key and, later, per host) is for the operator's
 * Prometheus, not for every client. One thread, a handful of connections. */
#pragma once

#include <stddef.h>
#include "cleanup.h"
#include "err.h"
#include "keystore.h"
#include "metrics.h"

#define METRICS_HTTP_CONNECTION_LIMIT 8
#define METRICS_HTTP_TIMEOUT_S 10

struct metrics_http;

/* Splits "ADDR:PORT" (a numeric IPv4 address, or an IPv6 one in brackets:
 * "[::1]:9100") into addr and port. Returns 0, or -EINVAL with err saying
 * what is wrong with arg. */
int metrics_http_parse_address(const char *arg, char *addr, size_t addr_len, char *port, size_t port_len,
                               struct tc_err *err);

/* Serves m (and ks's key set, see metrics_format) on listen_fd, which it
 * owns from then on, also on failure. */
int metrics_http_start(int listen_fd, struct metrics *m, struct keystore *ks, struct metrics_http **ret,
                       struct tc_err *err);
void metrics_http_stop(struct metrics_http *h);
TC_DEFINE_CLEANUP(struct metrics_http *, metrics_http_stop)
