/* What one answered request was, handed to whoever watches the traffic (the
 * usage ledger, the metrics) after the answer is sent: the request path
 * itself does no I/O and takes no lock for them. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include "routes.h"

struct request_record {
        enum route_kind route;
        int status;                    /* 0: no answer was sent (connection dropped) */
        enum rec_outcome outcome;      /* REC_OUTCOME_NONE outside /rec */
        const char *host;              /* per-host route: the host's name; NULL on the shared routes */
        const char *key;               /* the key's S256 thumbprint once the kid matched a key, else NULL */
        bool key_rotated;              /* that key is rotated (hidden): its clients have not rebound yet */
        const struct sockaddr *peer;   /* NULL when unknown */
        socklen_t peer_len;
        int64_t realtime_ms;           /* when the answer was sent, wall clock */
        int64_t duration_us;           /* from the request line to the answer */
};

/* Called on the connection's thread, once per answered request, with
 * pointers valid for the call only: copy what is kept. Must not block. */
typedef void (*request_observer_fn)(void *userdata, const struct request_record *r);
