#include "httpd.h"
#include "cleanup.h"
#include "log.h"
#include "routes.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <pthread.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>

/* Past this much discarded body, a client is not going to stop: hang up. */
#define TOO_LARGE_DISCARD_MAX (1024 * 1024)

/* One client network's open connections. */
struct prefix_count {
        struct prefix_count *next;
        uint8_t key[16];
        unsigned n;
};

#define LIMITS_BUCKETS 1024

/* Why our own counting rather than MHD_OPTION_PER_IP_CONNECTION_LIMIT and
 * MHD_OPTION_CONNECTION_LIMIT: those count per daemon, that is per listening
 * socket, and per whole IPv6 address, of which a client has 2^64. */
struct httpd_limits {
        pthread_mutex_t lock;
        unsigned connection_limit, per_address_limit;
        unsigned total;
        struct prefix_count *buckets[LIMITS_BUCKETS];
        /* Refusals since the last log line about them, per limit. */
        struct refusals {
                unsigned n;
                bool one_client;     /* all from the client below */
                char client[INET6_ADDRSTRLEN + 4];
                int64_t next_log_ms;
        } refused_total, refused_prefix;
};

/* The reservation the accept policy callback took for the connection
 * libmicrohttpd is accepting on this thread, until MHD_CONNECTION_NOTIFY_STARTED
 * claims it. libmicrohttpd 0.9.75 calls both on the accepting thread, one
 * connection at a time; if it drops the connection in between (out of
 * memory), the reservation is still here at the next accept and is returned. */
static __thread struct pending {
        struct httpd_limits *limits;
        bool has_prefix;
        uint8_t key[16];
} pending;

/* One open connection as the request deadline and the limits see it (MHD's
 * socket context). */
struct conn {
        struct conn *prev, *next;
        int fd;                      /* MHD's socket: only shut down, never closed here */
        int64_t deadline_ms;         /* CLOCK_MONOTONIC; 0: none */
        bool cut;
        struct pending counted;      /* limits NULL: not counted */
};

struct httpd {
        struct MHD_Daemon *daemon;
        const struct httpd_config *cfg;
        struct httpd_limits *limits;   /* shared with the other daemons; NULL: none */
        struct keystore *ks;
        int closed_eventfd;          /* inetd mode: written when the connection closes */

        /* The request deadline: every open connection, and a thread that cuts
         * the ones whose request is late. */
        pthread_mutex_t lock;
        pthread_cond_t wake;
        struct conn *conns;
        bool reaper_started, stopping;
        unsigned refused;            /* connections refused by libmicrohttpd since the last log line about it */
        int64_t refused_log_ms;      /* when the next such line may be written */
        pthread_t reaper;
};

/* One request, from the request line to the last byte of the answer. */
struct request {
        struct timespec start;
        char target[TANG_MAX_URI + 2];   /* raw, before any decoding; longer ones are cut */
        size_t target_len;
        const char *method;
        struct route route;
        bool routed;
        bool too_large;
        size_t discarded;
        char *body;
        size_t body_len;
        int status;
        enum rec_outcome outcome;
        const char *host, *key;         /* point into served */
        bool key_rotated;
        struct served *served;          /* kept until the answer is sent */
};

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn) {
        (void) cls;
        (void) conn;
        struct request *req = calloc(1, sizeof(*req));
        if (!req)
                return NULL;
        clock_gettime(CLOCK_MONOTONIC, &req->start);
        size_t len = strlen(uri);
        req->target_len = len;
        if (len > sizeof(req->target) - 1)
                len = sizeof(req->target) - 1;
        memcpy(req->target, uri, len);
        req->target[len] = '\0';
        return req;
}

static void format_address(const struct sockaddr *sa, char *buf, size_t len) {
        snprintf(buf, len, "-");
        if (sa->sa_family == AF_INET)
                inet_ntop(AF_INET, &((const struct sockaddr_in *) sa)->sin_addr, buf, (socklen_t) len);
        else if (sa->sa_family == AF_INET6)
                inet_ntop(AF_INET6, &((const struct sockaddr_in6 *) sa)->sin6_addr, buf, (socklen_t) len);
}

static void format_peer(struct MHD_Connection *conn, char *buf, size_t len) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (ci && ci->client_addr)
                format_address(ci->client_addr, buf, len);
        else
                snprintf(buf, len, "-");
}

static void log_request(struct MHD_Connection *conn, const struct request *req) {
        char peer[INET6_ADDRSTRLEN + 1], path[160], method[40];
        struct timespec now;

        clock_gettime(CLOCK_MONOTONIC, &now);
        long long us = (now.tv_sec - req->start.tv_sec) * 1000000LL + (now.tv_nsec - req->start.tv_nsec) / 1000;
        format_peer(conn, peer, sizeof(peer));
        /* Method and target are the client's bytes: no control characters or
         * spaces reach the log. */
        log_line("%s %s %s %d %lldus", peer, log_sanitize(method, sizeof(method), req->method ? req->method : "-", false),
                 log_sanitize(path, sizeof(path), req->target, false), req->status, us);
}

static void observe_request(struct httpd *h, struct MHD_Connection *conn, const struct request *req) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        struct request_record r = {
                .route = req->route.kind,
                .status = req->status,
                .outcome = req->outcome,
                .host = req->host,
                .key = req->key,
                .key_rotated = req->key_rotated,
                .peer = ci ? ci->client_addr : NULL,
                .peer_len = ci && ci->client_addr ? (ci->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                                                              : sizeof(struct sockaddr_in))
                                                  : 0,
                .realtime_ms = tc_realtime_ms(),
                .duration_us = (now.tv_sec - req->start.tv_sec) * 1000000LL + (now.tv_nsec - req->start.tv_nsec) / 1000,
        };
        h->cfg->observe(h->cfg->observe_data, &r);
}

/* A request is answered: the connection's next request, if it keeps the
 * connection alive, has the idle timeout to start and the request timeout
 * to arrive. Starting that deadline now rather than at the next request's
 * first byte is deliberate: MHD reports no callback before a whole request
 * line, and a slow request line is exactly what has to be bounded. */
static void deadline_renew(struct httpd *h, struct MHD_Connection *conn) {
        if (h->cfg->request_timeout_s == 0)
                return;
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        struct conn *c = ci ? ci->socket_context : NULL;
        if (!c)
                return;
        int64_t deadline = tc_now_ms() + ((int64_t) h->cfg->timeout_s + h->cfg->request_timeout_s) * 1000;
        pthread_mutex_lock(&h->lock);
        c->deadline_ms = deadline;
        pthread_mutex_unlock(&h->lock);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe) {
        struct httpd *h = cls;
        struct request *req = *con_cls;
        (void) toe;

        if (!req)
                return;
        deadline_renew(h, conn);
        if (h->cfg->log_requests)
                log_request(conn, req);
        if (h->cfg->observe)
                observe_request(h, conn, req);
        served_unref(req->served);
        free(req->body);
        free(req);
        *con_cls = NULL;
}

bool httpd_client_prefix(const struct sockaddr *sa, socklen_t len, uint8_t key[16]) {
        static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

        memset(key, 0, 16);
        if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
                memcpy(key, v4mapped, 12);
                memcpy(key + 12, &((const struct sockaddr_in *) sa)->sin_addr, 4);
                return true;
        }
        if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
                const uint8_t *a = ((const struct sockaddr_in6 *) sa)->sin6_addr.s6_addr;
                if (memcmp(a, v4mapped, 12) == 0)
                        memcpy(key, a, 16);     /* an IPv4 client on a dual-stack socket */
                else
                        memcpy(key, a, 8);      /* its /64 */
                return true;
        }
        return false;
}

static void format_prefix(const uint8_t key[16], char *buf, size_t len) {
        static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        if (memcmp(key, v4mapped, 12) == 0)
                inet_ntop(AF_INET, key + 12, buf, (socklen_t) len);
        else {
                inet_ntop(AF_INET6, key, buf, (socklen_t) len);
                strncat(buf, "/64", len - strlen(buf) - 1);
        }
}

int httpd_limits_new(unsigned connection_limit, unsigned per_address_limit, struct httpd_limits **ret) {
        struct httpd_limits *l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        pthread_mutex_init(&l->lock, NULL);
        l->connection_limit = connection_limit;
        l->per_address_limit = per_address_limit;
        *ret = l;
        return 0;
}

void httpd_limits_free(struct httpd_limits *l) {
        if (!l)
                return;
        for (size_t i = 0; i < LIMITS_BUCKETS; i++)
                while (l->buckets[i]) {
                        struct prefix_count *p = l->buckets[i];
                        l->buckets[i] = p->next;
                        free(p);
                }
        pthread_mutex_destroy(&l->lock);
        free(l);
}

static struct prefix_count **prefix_slot(struct httpd_limits *l, const uint8_t key[16]) {
        uint32_t hash = 2166136261u;     /* FNV-1a */
        for (size_t i = 0; i < 16; i++)
                hash = (hash ^ key[i]) * 16777619u;
        struct prefix_count **pp = &l->buckets[hash % LIMITS_BUCKETS];
        while (*pp && memcmp((*pp)->key, key, 16) != 0)
                pp = &(*pp)->next;
        return pp;
}

/* Called with l->lock held. */
static void limits_release_locked(struct httpd_limits *l, const struct pending *p) {
        if (l->total > 0)
                l->total--;
        if (!p->has_prefix)
                return;
        struct prefix_count **pp = prefix_slot(l, p->key);
        struct prefix_count *e = *pp;
        if (e && --e->n == 0) {
                *pp = e->next;
                free(e);
        }
}

static void limits_release(struct pending *p) {
        struct httpd_limits *l = p->limits;
        if (!l)
                return;
        pthread_mutex_lock(&l->lock);
        limits_release_locked(l, p);
        pthread_mutex_unlock(&l->lock);
        p->limits = NULL;
}

/* Refusals come in floods (one client over its limit): at most one line a
 * second per limit, counting them. Called with l->lock held; returns whether
 * to log, with the line in line. */
static bool refusal_note(struct refusals *r, const char *client, const char *what, unsigned limit, char *line,
                         size_t len) {
        if (r->n == 0 || strcmp(r->client, client) != 0)
                r->one_client = r->n == 0;
        snprintf(r->client, sizeof(r->client), "%s", client);
        r->n++;
        int64_t now = tc_now_ms();
        if (now < r->next_log_ms)
                return false;
        if (r->one_client)
                snprintf(line, len, "http: refused %u connection(s) from %s (over %s %u)", r->n, client, what, limit);
        else
                snprintf(line, len, "http: refused %u connection(s) from several clients, the last %s (over %s %u)",
                         r->n, client, what, limit);
        r->n = 0;
        r->next_log_ms = now + 1000;
        return true;
}

static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen) {
        struct httpd *h = cls;
        struct httpd_limits *l = h->limits;
        struct pending p = { .limits = l };
        char client[INET6_ADDRSTRLEN + 4] = "-", line[256];
        bool say = false, ok = true;

        limits_release(&pending);       /* a connection libmicrohttpd dropped after we said yes */
        if (l->per_address_limit > 0)
                p.has_prefix = httpd_client_prefix(addr, addrlen, p.key);
        pthread_mutex_lock(&l->lock);
        struct prefix_count **pp = p.has_prefix ? prefix_slot(l, p.key) : NULL;
        if (l->total >= l->connection_limit) {
                format_address(addr, client, sizeof(client));
                say = refusal_note(&l->refused_total, client, "--connection-limit", l->connection_limit, line,
                                   sizeof(line));
                ok = false;
        } else if (pp && *pp && (*pp)->n >= l->per_address_limit) {
                format_prefix(p.key, client, sizeof(client));
                say = refusal_note(&l->refused_prefix, client, "--per-address-limit", l->per_address_limit, line,
                                   sizeof(line));
                ok = false;
        } else if (pp && !*pp && !(*pp = calloc(1, sizeof(**pp))))
                ok = false;             /* out of memory: refusing is the safe side */
        if (ok) {
                if (pp) {
                        memcpy((*pp)->key, p.key, 16);
                        (*pp)->n++;
                }
                l->total++;
                pending = p;
        }
        pthread_mutex_unlock(&l->lock);
        if (say)
                log_line("%s", line);
        return ok ? MHD_YES : MHD_NO;
}

/* Why a registry and shutdown(2) from a thread of our own: MHD's connection
 * timeout is reset by every byte received, and no MHD callback runs while a
 * request line or header trickles in, so nothing inside MHD can notice a
 * request that is merely slow. The reaper never closes a socket (MHD owns
 * it); it only shuts it down, which MHD then sees as the peer hanging up and
 * cleans up on its own path. The fd cannot be reused under the reaper: MHD
 * reports MHD_CONNECTION_NOTIFY_CLOSED before it closes the socket, and that
 * notification unlinks the entry under the same lock the reaper holds while
 * it calls shutdown(). */
static void conn_started(struct httpd *h, struct MHD_Connection *conn, void **socket_context) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct pending counted = pending;

        pending.limits = NULL;
        if ((h->cfg->request_timeout_s == 0 && !counted.limits) || !ci)
                goto fail;
        struct conn *c = calloc(1, sizeof(*c));
        if (!c)
                goto fail;     /* served without a deadline nor a count: better than refusing it */
        c->fd = ci->connect_fd;
        c->counted = counted;
        if (h->cfg->request_timeout_s > 0)
                c->deadline_ms = tc_now_ms() + (int64_t) h->cfg->request_timeout_s * 1000;
        pthread_mutex_lock(&h->lock);
        c->next = h->conns;
        if (h->conns)
                h->conns->prev = c;
        h->conns = c;
        pthread_mutex_unlock(&h->lock);
        *socket_context = c;
        return;
fail:
        limits_release(&counted);
}

static void conn_closed(struct httpd *h, void **socket_context) {
        struct conn *c = *socket_context;
        if (!c)
                return;
        pthread_mutex_lock(&h->lock);
        if (c->prev)
                c->prev->next = c->next;
        else
                h->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        pthread_mutex_unlock(&h->lock);
        limits_release(&c->counted);
        free(c);
        *socket_context = NULL;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
        struct httpd *h = cls;
        if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
                conn_started(h, conn, socket_context);
                return;
        }
        conn_closed(h, socket_context);
        if (h->closed_eventfd >= 0) {
                uint64_t one = 1;
                (void) !write(h->closed_eventfd, &one, sizeof(one));
        }
}

static void *reaper_main(void *arg) {
        struct httpd *h = arg;
        /* A quarter of the deadline, at most a second: a request is cut
         * between 1 and 1.25 times the deadline after it began. */
        int64_t period_ms = (int64_t) h->cfg->request_timeout_s * 250;
        if (period_ms > 1000)
                period_ms = 1000;

        pthread_mutex_lock(&h->lock);
        while (!h->stopping) {
                int64_t now = tc_now_ms();
                unsigned cut = 0;
                for (struct conn *c = h->conns; c; c = c->next)
                        if (!c->cut && c->deadline_ms != 0 && now >= c->deadline_ms) {
                                (void) shutdown(c->fd, SHUT_RDWR);
                                c->cut = true;
                                cut++;
                        }
                if (cut > 0)
                        log_line("http: cut %u connection(s) whose request took over %us", cut,
                                 h->cfg->request_timeout_s);
                struct timespec until;
                clock_gettime(CLOCK_MONOTONIC, &until);
                until.tv_sec += period_ms / 1000;
                until.tv_nsec += (period_ms % 1000) * 1000000;
                if (until.tv_nsec >= 1000000000)
                        until.tv_sec++, until.tv_nsec -= 1000000000;
                (void) pthread_cond_timedwait(&h->wake, &h->lock, &until);
        }
        pthread_mutex_unlock(&h->lock);
        return NULL;
}

static int reaper_start(struct httpd *h) {
        pthread_condattr_t attr;
        int r;

        pthread_mutex_init(&h->lock, NULL);
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&h->wake, &attr);
        pthread_condattr_destroy(&attr);
        if (h->cfg->request_timeout_s == 0)
                return 0;
        r = pthread_create(&h->reaper, NULL, reaper_main, h);
        if (r != 0)
                return -r;
        h->reaper_started = true;
        return 0;
}

static void reaper_stop(struct httpd *h) {
        if (h->reaper_started) {
                pthread_mutex_lock(&h->lock);
                h->stopping = true;
                pthread_cond_signal(&h->wake);
                pthread_mutex_unlock(&h->lock);
                pthread_join(h->reaper, NULL);
                h->reaper_started = false;
        }
}

static void httpd_free(struct httpd *h) {
        reaper_stop(h);
        pthread_cond_destroy(&h->wake);
        pthread_mutex_destroy(&h->lock);
        free(h);
}

static enum MHD_Result respond(struct MHD_Connection *conn, struct request *req, const struct reply *reply,
                               bool close) {
        struct MHD_Response *resp;

        req->status = reply->status;
        req->outcome = reply->outcome;
        req->host = reply->host;
        req->key = reply->key;
        req->key_rotated = reply->key_rotated;
        if (reply->body && reply->body != reply->buf)
                /* Served data outlives the response: req->served holds it. */
                resp = MHD_create_response_from_buffer(reply->len, (void *) reply->body, MHD_RESPMEM_PERSISTENT);
        else
                resp = MHD_create_response_from_buffer(reply->len, (void *) (reply->body ? reply->body : ""),
                                                       MHD_RESPMEM_MUST_COPY);
        if (!resp)
                return MHD_NO;
        if (reply->content_type)
                MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, reply->content_type);
        /* After a request whose framing is in doubt, nothing more is read
         * from the connection: what would follow could be anything. */
        if (close)
                MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
        enum MHD_Result ret = MHD_queue_response(conn, (unsigned) reply->status, resp);
        MHD_destroy_response(resp);
        return ret;
}

static enum MHD_Result respond_error(struct MHD_Connection *conn, struct request *req, int status) {
        struct reply reply = { .status = status };
        return respond(conn, req, &reply, true);
}

/* What the headers say about where the body ends, and whether the header
 * block had one shape only.
 *
 * Why the pointer arithmetic: libmicrohttpd 0.9.75 hands over headers after
 * parsing them its own way, and several shapes that another parser (a proxy
 * in front) reads differently come out looking harmless: obs-fold is glued
 * onto the previous header, a bare LF ends a line, a NUL cuts a value. It
 * parses the header block in place, turning each line's ':' and CR LF into
 * NULs, so a well-formed block leaves exactly this layout in its buffer:
 * "name\0 value\0\0name\0 value\0\0\0\0". Each header must start where the
 * previous line's CR LF ended, and the block must end with CR LF: anything
 * else (a name built elsewhere from a fold, one byte of line end, bytes after
 * a NUL) breaks the chain. tests/integration/test_routes.py pins this: a
 * libmicrohttpd that stops parsing in place fails every request there. */
struct framing {
        unsigned content_lengths, transfer_encodings, hosts;
        bool bad;                    /* a value no front proxy would agree on */
        bool malformed;              /* a header line of another shape than name ":" OWS value CRLF */
        unsigned long long content_length;
        const char *next_line;       /* where the next header line must begin */
};

static bool is_decimal(const char *s, size_t len) {
        if (len == 0 || len > 18)    /* 18 digits cannot overflow */
                return false;
        for (size_t i = 0; i < len; i++)
                if (s[i] < '0' || s[i] > '9')
                        return false;
        return true;
}

/* RFC 9110's tchar: the characters of a header name. */
static bool is_tchar(unsigned char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               (c != '\0' && strchr("!#$%&'*+-.^_`|~", c));
}

static bool header_line_sound(struct framing *f, const char *key, size_t key_size, const char *value,
                              size_t value_size) {
        /* Pointers compared before any byte is read: a folded header's name
         * lives elsewhere in libmicrohttpd's pool. */
        if (!value || key != f->next_line || key_size == 0)
                return false;
        for (size_t i = 0; i < key_size; i++)
                if (!is_tchar((unsigned char) key[i]))
                        return false;   /* "Content-Length " and the like */
        if (key[key_size] != '\0')
                return false;
        /* Between the colon and the value only spaces and tabs; the walk
         * stops at the first other byte, at the latest at the line end. */
        const char *p = key + key_size + 1;
        while (p != value && (*p == ' ' || *p == '\t'))
                p++;
        if (p != value)
                return false;
        for (size_t i = 0; i < value_size; i++) {
                unsigned char c = (unsigned char) value[i];
                if ((c < 0x20 && c != '\t') || c == 0x7f)
                        return false;   /* a bare CR kept in the value, an escape ... */
        }
        /* The line end: two NULs (CR LF). A NUL from the client cut the value
         * short, or a bare LF ended it, when the next byte is not one. */
        if (value[value_size] != '\0' || value[value_size + 1] != '\0')
                return false;
        f->next_line = value + value_size + 2;
        return true;
}

static enum MHD_Result framing_header(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
                                      const char *value, size_t value_size) {
        struct framing *f = cls;
        (void) kind;

        if (!f->malformed && !header_line_sound(f, key, key_size, value, value_size))
                f->malformed = true;
        if (f->malformed)
                return MHD_NO;     /* no use looking further */
        if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
                f->content_lengths++;
                if (!is_decimal(value, value_size))
                        f->bad = true;
                else
                        f->content_length = strtoull(value, NULL, 10);
        } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
                f->transfer_encodings++;
                /* Only chunked alone: any other coding, or a list, is one
                 * libmicrohttpd would read differently from a proxy. */
                if (value_size != strlen("chunked") || strcasecmp(value, "chunked") != 0)
                        f->bad = true;
        } else if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0)
                f->hosts++;
        return MHD_YES;
}

/* The request line as libmicrohttpd left it in place: method, one space,
 * target, one space, version, CR LF. A second space before the target is
 * skipped by libmicrohttpd but not by every proxy. Returns where the first
 * header line must begin, or NULL. */
static const char *request_line_end(const char *method, const char *url, const char *version) {
        size_t method_len = strlen(method), version_len = strlen(version);
        if (url != method + method_len + 1)
                return NULL;
        if (version[version_len] != '\0' || version[version_len + 1] != '\0')
                return NULL;    /* a bare LF after the version */
        return version + version_len + 2;
}

/* Whether the chain of lines walked above covers exactly the bytes
 * libmicrohttpd consumed for the head (request line to blank line). NULs
 * look like line ends to the walk, and libmicrohttpd measures values with
 * strlen(), so bytes after a NUL are invisible to both: a line starting
 * with NULs ends the head for libmicrohttpd ("\0\0Content-Length: 5" is
 * the blank line, the rest of the line skipped, while a proxy sees a
 * header), a value followed by NULs hides the rest of its line, a bare LF
 * at the end of the head leaves the walk one byte past it. What
 * libmicrohttpd read but no header accounts for is such hidden bytes. */
static bool head_size_accounted(struct MHD_Connection *conn, const char *head, const char *head_end) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
        return ci && head_end > head && ci->header_size == (size_t) (head_end - head);
}

/* Request smuggling lives in the gap between how two HTTP parsers find the
 * end of a body. Every request whose end is not stated exactly once, in one
 * unambiguous way, gets 400 and the connection is closed: repeated or
 * malformed Content-Length, Transfer-Encoding other than a single "chunked",
 * both headers at once, any header line of another shape than the plain one
 * (see struct framing), an HTTP/1.1 request without exactly one Host (RFC
 * 9112 3.2). Returns 0, -EMSGSIZE for a body over TANG_MAX_BODY (413), or
 * -EBADMSG (400). */
static int framing_check(struct MHD_Connection *conn, const char *method, const char *url, const char *version) {
        struct framing f = { .next_line = request_line_end(method, url, version) };

        if (!f.next_line)
                return -EBADMSG;
        MHD_get_connection_values_n(conn, MHD_HEADER_KIND, framing_header, &f);
        /* The blank line that ends the block: CR LF too. Its second byte is
         * inside libmicrohttpd's read buffer even after a bare LF: the buffer
         * is larger than what was received, the header list being allocated
         * from the other end of the same pool. */
        if (f.malformed || f.next_line[0] != '\0' || f.next_line[1] != '\0')
                return -EBADMSG;
        if (!head_size_accounted(conn, method, f.next_line + 2))
                return -EBADMSG;
        if (f.bad || f.content_lengths > 1 || f.transfer_encodings > 1 || (f.content_lengths && f.transfer_encodings))
                return -EBADMSG;
        if (strcmp(version, MHD_HTTP_VERSION_1_1) == 0 && f.hosts != 1)
                return -EBADMSG;
        if (f.content_lengths && f.content_length > TANG_MAX_BODY)
                return -EMSGSIZE;
        return 0;
}

/* RFC 9112 3.2.2: a server must accept the absolute-form
 * ("GET http://host/adv"); it is routed on its path. */
static const char *origin_form(const char *target) {
        size_t scheme = strncasecmp(target, "http://", 7) == 0 ? 7 : strncasecmp(target, "https://", 8) == 0 ? 8 : 0;
        if (scheme == 0)
                return target;
        const char *path = strchr(target + scheme, '/');
        return path ? path : "/";
}

/* The target as the client sent it, checked before it is routed or
 * logged. The URI log callback saw it up to its first NUL; the request line
 * has it up to the space before the version: bytes between the two were
 * hidden by a NUL, and a proxy in front routed on a different target than
 * ours. Control characters belong in no URI (RFC 3986 2) and only reach
 * logs and terminals. Called after framing_check(), which has checked that
 * url and version lie in the request line as sent. */
static bool target_sound(const struct request *req, const char *url, const char *version) {
        if (version != url + req->target_len + 1)
                return false;
        /* A longer target is answered 414 whatever it holds. */
        size_t len = req->target_len < sizeof(req->target) - 1 ? req->target_len : sizeof(req->target) - 1;
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char) req->target[i];
                if (c < 0x20 || c == 0x7f)
                        return false;
        }
        return true;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
        struct httpd *h = cls;
        struct request *req = *con_cls;
        struct reply reply;
        if (!req)
                return MHD_NO;
        if (!req->routed) {
                req->routed = true;
                req->method = method;
                int r = framing_check(conn, method, url, version);
                if (r == 0 && !target_sound(req, url, version))
                        r = -EBADMSG;
                if (r < 0)
                        return respond_error(conn, req, r == -EMSGSIZE ? 413 : 400);
                if (req->target_len > TANG_MAX_URI)
                        return respond_error(conn, req, 414);
                route_match(h->cfg->prefix, method, origin_form(req->target), &req->route);
                /* Every answer waits for the final call: MHD closes a connection
                 * whose response was queued before the request was complete, which
                 * would cost keep-alive clients a new connection per request.
                 * Returning without a response also answers Expect: 100-continue. */
                return MHD_YES;
        }
        if (*upload_data_size > 0) {
                size_t n = *upload_data_size;
                *upload_data_size = 0;
                /* Every route has the same cap: Tang ignores bodies outside /rec,
                 * but reading an endless one is a way to hold a connection. */
                if (req->too_large || req->body_len + n > TANG_MAX_BODY) {
                        /* MHD cannot queue a response mid-body: drop the rest and
                         * answer 413 at the end, hanging up on clients that keep
                         * streaming long after the limit. */
                        req->too_large = true;
                        req->discarded += n;
                        return req->discarded > TOO_LARGE_DISCARD_MAX ? MHD_NO : MHD_YES;
                }
                if (req->route.kind != ROUTE_REC && req->route.kind != ROUTE_HOST_REC) {
                        req->body_len += n;    /* counted, not kept */
                        return MHD_YES;
                }
                char *nb = realloc(req->body, req->body_len + n + 1);
                if (!nb)
                        return MHD_NO;
                memcpy(nb + req->body_len, upload_data, n);
                req->body = nb;
                req->body_len += n;
                req->body[req->body_len] = '\0';
                return MHD_YES;
        }
        deadline_renew(h, conn);     /* complete: the deadline no longer applies to it */
        if (req->too_large)
                return respond_error(conn, req, 413);
        req->served = keystore_acquire(h->ks);
        if (req->route.kind == ROUTE_REC || req->route.kind == ROUTE_HOST_REC)
                route_serve(req->served, &req->route, req->body ? req->body : "", req->body_len, &reply);
        else
                route_serve(req->served, &req->route, "", 0, &reply);
        return respond(conn, req, &reply, false);
}

static void on_mhd_error(void *cls, const char *fmt, va_list ap) {
        char raw[512], msg[512];
        vsnprintf(raw, sizeof(raw), fmt, ap);
        raw[strcspn(raw, "\n")] = '\0';
        /* MHD's messages may quote the request. */
        log_sanitize(msg, sizeof(msg), raw, true);
        /* A client hanging up on an idle keep-alive connection is routine,
         * and after a power cut there are thousands of them; a connection
         * cut at the request deadline is already counted by the reaper. */
        if (strstr(msg, "closed by remote side") || strstr(msg, "detected connection closure"))
                return;
        /* Refusals come in floods (one client over its per-address limit):
         * at most one line a second, counting them. */
        if (strstr(msg, "reached connection limit")) {
                struct httpd *h = cls;
                int64_t now = tc_now_ms();
                pthread_mutex_lock(&h->lock);
                unsigned n = ++h->refused;
                bool say = now >= h->refused_log_ms;
                if (say) {
                        h->refused = 0;
                        h->refused_log_ms = now + 1000;
                }
                pthread_mutex_unlock(&h->lock);
                if (say)
                        log_line("http: refused %u connection(s) over --connection-limit %u on one socket", n,
                                 h->cfg->connection_limit);
                return;
        }
        log_line("http: %s", msg);
}

int httpd_start(const struct httpd_config *cfg, struct httpd_limits *limits, struct keystore *ks, int listen_fd,
                int conn_fd, int closed_eventfd, struct httpd **ret, struct tc_err *err) {
        struct httpd *h = calloc(1, sizeof(*h));
        unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;

        if (!h)
                return tc_fail(err, -ENOMEM, "cannot start the HTTP server: %s", strerror(ENOMEM));
        h->cfg = cfg;
        h->ks = ks;
        h->limits = listen_fd >= 0 ? limits : NULL;
        h->closed_eventfd = closed_eventfd;
        int r = reaper_start(h);
        if (r < 0) {
                httpd_free(h);
                return tc_fail(err, r, "cannot start the HTTP server: %s", strerror(-r));
        }
        if (listen_fd < 0)
                flags |= MHD_USE_NO_LISTEN_SOCKET;
        unsigned threads = listen_fd >= 0 ? cfg->threads : 1;

        struct MHD_OptionItem opts[16];
        size_t n = 0;
        /* First, so that MHD never prints on its own. */
        opts[n++] = (struct MHD_OptionItem) { MHD_OPTION_EXTERNAL_LOGGER, (intptr_t) on_mhd_error, h };
        if (listen_fd >= 0)
                opts[n++] = (struct MHD_OptionItem) { MHD_OPTION_LISTEN_SOCKET, listen_fd, NULL };
        if (threads > 1)
                opts[n++] = (struct MHD_OptionItem) { MHD_OPTION_THREAD_POOL_SIZE, threads, NULL };
        opts[n++] = (struct MHD_OptionItem) { MHD_OPTION_CONNECTION_LIMIT, cfg->connection_limit, NULL };
        opts[n++] = (struct MHD_OptionItem) { MHD_OPTION_CONNECTION_TIMEOUT, cfg->timeout_s, NULL };
        /* 1: libmicrohttpd itself answers 400 to an HTTP/1.1 request without
         * Host, and to spaces or tabs inside the request line's target. */
        opts[n++] = (struct MHD_OptionItem) { MHD_OPTION_STRICT_FOR_CLIENT, 1, NULL };
        /* Holds the request line and headers; tang's own limit is 4 KiB. */
        opts[n++] = (struct MHD_OptionItem) { MHD_OPTION_CONNECTION_MEMORY_LIMIT, 16 * 1024, NULL };
        opts[n++] = (struct MHD_OptionItem) { MHD_OPTION_URI_LOG_CALLBACK, (intptr_t) on_uri, h };
        opts[n++] = (struct MHD_OptionItem) { MHD_OPTION_NOTIFY_COMPLETED, (intptr_t) on_completed, h };
        opts[n++] = (struct MHD_OptionItem) { MHD_OPTION_NOTIFY_CONNECTION, (intptr_t) on_connection, h };
        opts[n++] = (struct MHD_OptionItem) { MHD_OPTION_END, 0, NULL };

        /* One client must not take every connection: the limits are checked
         * before libmicrohttpd allocates anything for a connection, and those
         * over them are closed at once. */
        h->daemon = MHD_start_daemon(flags, 0, h->limits ? on_accept : NULL, h, on_request, h, MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
        if (!h->daemon) {
                httpd_free(h);
                /* It has logged why, through on_mhd_error. */
                return tc_fail(err, -EIO, "cannot start the HTTP server");
        }
        if (conn_fd >= 0) {
                struct sockaddr_storage ss;
                socklen_t len = sizeof(ss);
                if (getpeername(conn_fd, (struct sockaddr *) &ss, &len) < 0 ||
                    MHD_add_connection(h->daemon, conn_fd, (struct sockaddr *) &ss, len) != MHD_YES) {
                        MHD_stop_daemon(h->daemon);
                        httpd_free(h);
                        return tc_fail(err, -ENOTSOCK, "cannot start the HTTP server: stdin is not a connected socket");
                }
        }
        *ret = h;
        return 0;
}

void httpd_stop(struct httpd *h, unsigned drain_ms) {
        if (!h)
                return;
        /* New connections are refused from now on (shutdown ends a listen),
         * but libmicrohttpd's threads may still use the socket until
         * MHD_stop_daemon() returns: closed only then (its manual says so). */
        int fd = MHD_quiesce_daemon(h->daemon);
        if (fd >= 0)
                (void) shutdown(fd, SHUT_RDWR);
        for (unsigned waited = 0; waited < drain_ms; waited += 20) {
                const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
                if (!info || info->num_connections == 0)
                        break;
                struct timespec ts = { 0, 20 * 1000 * 1000 };
                nanosleep(&ts, NULL);
        }
        MHD_stop_daemon(h->daemon);
        if (fd >= 0)
                close(fd);
        httpd_free(h);
}
