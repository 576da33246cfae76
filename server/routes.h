/* Tang's HTTP API as a pure function of (method, raw target, body): no
 * sockets, so it can be tested and fuzzed in-process. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include "served.h"

#define TANG_MAX_URI 4096
#define TANG_MAX_BODY (64 * 1024)
/* The body of /rec's 503: a key file for the kid exists but cannot be read. */
#define REC_UNREADABLE_BODY "the server has this key, but cannot read its key file"
/* The bodies of /adv's 500 (see enum served_no_adv). */
#define ADV_NO_KEY_BODY "no usable signing key"
#define ADV_UNREADABLE_BODY "no usable signing key: the key files exist but the server cannot read them"
#define ADV_REMOVED_BODY "no usable signing key: the key files were just removed; new ones are created shortly"
#define ADV_DIR_GONE_BODY "no advertised key: the key directory is gone"
/* The bodies of the per-host routes' 403s. */
#define HOST_REVOKED_BODY "revoked: an administrator revoked this host's keys"
#define HOST_HELD_BODY "held: waiting for an administrator to allow this recovery"

enum route_kind {
        ROUTE_NOT_FOUND,
        ROUTE_METHOD_NOT_ALLOWED,
        ROUTE_URI_TOO_LONG,
        ROUTE_ADV,
        ROUTE_REC,
        ROUTE_HEALTH,
        ROUTE_HOST_ADV,        /* /h/NAME/adv[/THP] */
        ROUTE_HOST_REC,        /* /h/NAME/rec/KID */
};

struct route {
        enum route_kind kind;
        const char *arg;       /* thp or kid inside the target, not NUL-terminated */
        size_t arg_len;
        const char *host;      /* per-host routes: NAME inside the target, valid, not NUL-terminated */
        size_t host_len;
};

/* What /rec did, for the ledger and the metrics (see observe.h). */
enum rec_outcome {
        REC_OUTCOME_NONE,          /* not a /rec request */
        REC_OUTCOME_RECOVERED,     /* 200 */
        REC_OUTCOME_ALLOWED,       /* 200 for a held host, spending an admin's allow */
        REC_OUTCOME_REVOKED,       /* 403: the host is revoked */
        REC_OUTCOME_HELD,          /* 403: the host is held; recorded as pending */
        REC_OUTCOME_NOT_EXCHANGE,  /* 403: the kid names a key that does not derive */
        REC_OUTCOME_UNKNOWN_KEY,   /* 404: no such key (or host) */
        REC_OUTCOME_BAD_REQUEST,   /* 400 */
        REC_OUTCOME_UNAVAILABLE,   /* 5xx: the server cannot answer it now */
        REC_OUTCOME_MAX,
};

/* Stable lowercase names, as the ledger and the metrics spell them. */
const char *rec_outcome_name(enum rec_outcome o);

struct reply {
        int status;
        enum rec_outcome outcome;
        const char *host;           /* per-host routes: points into served data */
        const char *key;            /* S256 thumbprint of the key used: points into served data */
        bool key_rotated;           /* that key is a rotated (hidden) one */
        const char *content_type;   /* NULL: empty body */
        const char *body;           /* points into served data or into buf */
        size_t len;
        char buf[512];
};

/* prefix: the endpoint without surrounding slashes, or NULL. */
void route_match(const char *prefix, const char *method, const char *target, struct route *rt);

/* Answers a matched route. s may be NULL (nothing loaded yet). */
void route_serve(const struct served *s, const struct route *rt, const char *body, size_t len,
                 struct reply *reply);
