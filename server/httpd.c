#include "httpd.h"
#include "cleanup.h"
#include "log.h"
#include "routes.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>

/* Past this much discarded body, a client is not going to stop: hang up. */
#define TOO_LARGE_DISCARD_MAX (1024 * 1024)

struct httpd {
        struct MHD_Daemon *daemon;
        const struct httpd_config *cfg;
        struct keystore *ks;
        int closed_eventfd;          /* inetd mode: written when the connection closes */
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

static void format_peer(struct MHD_Connection *conn, char *buf, size_t len) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        snprintf(buf, len, "-");
        if (!ci || !ci->client_addr)
                return;
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
                inet_ntop(AF_INET, &((const struct sockaddr_in *) sa)->sin_addr, buf, (socklen_t) len);
        else if (sa->sa_family == AF_INET6)
                inet_ntop(AF_INET6, &((const struct sockaddr_in6 *) sa)->sin6_addr, buf, (socklen_t) len);
}

static void log_request(struct MHD_Connection *conn, const struct request *req) {
        char peer[INET6_ADDRSTRLEN + 1], path[160];
        struct timespec now;
        size_t j = 0;

        clock_gettime(CLOCK_MONOTONIC, &now);
        long long us = (now.tv_sec - req->start.tv_sec) * 1000000LL + (now.tv_nsec - req->start.tv_nsec) / 1000;
        format_peer(conn, peer, sizeof(peer));
        /* The target is untrusted: no control characters or spaces reach the log. */
        for (size_t i = 0; req->target[i] && j < sizeof(path) - 4; i++) {
                unsigned char c = (unsigned char) req->target[i];
                path[j++] = c > 0x20 && c < 0x7f ? (char) c : '?';
        }
        if (req->target_len > j)
                path[j++] = '.', path[j++] = '.', path[j++] = '.';
        path[j] = '\0';
        log_line("%s %s %s %d %lldus", peer, req->method ? req->method : "-", path, req->status, us);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe) {
        struct httpd *h = cls;
        struct request *req = *con_cls;
        (void) toe;

        if (!req)
                return;
        if (h->cfg->log_requests)
                log_request(conn, req);
        served_unref(req->served);
        free(req->body);
        free(req);
        *con_cls = NULL;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
        struct httpd *h = cls;
        (void) conn;
        (void) socket_context;
        if (toe == MHD_CONNECTION_NOTIFY_CLOSED && h->closed_eventfd >= 0) {
                uint64_t one = 1;
                (void) !write(h->closed_eventfd, &one, sizeof(one));
        }
}

static enum MHD_Result respond(struct MHD_Connection *conn, struct request *req, const struct reply *reply) {
        struct MHD_Response *resp;

        req->status = reply->status;
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
        enum MHD_Result ret = MHD_queue_response(conn, (unsigned) reply->status, resp);
        MHD_destroy_response(resp);
        return ret;
}

static enum MHD_Result respond_status(struct MHD_Connection *conn, struct request *req, int status) {
        struct reply reply = { .status = status };
        return respond(conn, req, &reply);
}

static bool body_too_large(struct MHD_Connection *conn) {
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (!cl)
                return false;
        errno = 0;
        char *end;
        unsigned long long n = strtoull(cl, &end, 10);
        return errno != 0 || n > TANG_MAX_BODY;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
        struct httpd *h = cls;
        struct request *req = *con_cls;
        struct reply reply;
        (void) url;
        (void) version;

        if (!req)
                return MHD_NO;
        if (!req->routed) {
                req->routed = true;
                req->method = method;
                if (req->target_len > TANG_MAX_URI)
                        return respond_status(conn, req, 414);
                route_match(h->cfg->prefix, method, req->target, &req->route);
                if (body_too_large(conn))
                        return respond_status(conn, req, 413);
                /* Every answer waits for the final call: MHD closes a connection
                 * whose response was queued before the request was complete, which
                 * would cost keep-alive clients a new connection per request.
                 * Returning without a response also answers Expect: 100-continue. */
                return MHD_YES;
        }
        if (*upload_data_size > 0) {
                size_t n = *upload_data_size;
                *upload_data_size = 0;
                if (req->route.kind != ROUTE_REC)
                        return MHD_YES; /* Tang ignores bodies on other routes; so do we, unbuffered. */
                if (req->too_large || req->body_len + n > TANG_MAX_BODY) {
                        /* MHD cannot queue a response mid-body: drop the rest and
                         * answer 413 at the end, hanging up on clients that keep
                         * streaming long after the limit. */
                        req->too_large = true;
                        req->discarded += n;
                        return req->discarded > TOO_LARGE_DISCARD_MAX ? MHD_NO : MHD_YES;
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
        if (req->too_large)
                return respond_status(conn, req, 413);
        req->served = keystore_acquire(h->ks);
        route_serve(req->served, &req->route, req->body ? req->body : "", req->body_len, &reply);
        return respond(conn, req, &reply);
}

static void on_mhd_error(void *cls, const char *fmt, va_list ap) {
        (void) cls;
        char msg[512];
        vsnprintf(msg, sizeof(msg), fmt, ap);
        msg[strcspn(msg, "\n")] = '\0';
        /* A client hanging up on an idle keep-alive connection is routine,
         * and after a power cut there are thousands of them. */
        if (strstr(msg, "closed by remote side"))
                return;
        log_line("http: %s", msg);
}

int httpd_start(const struct httpd_config *cfg, struct keystore *ks, int listen_fd, int conn_fd,
                int closed_eventfd, struct httpd **ret) {
        struct httpd *h = calloc(1, sizeof(*h));
        unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;

        if (!h)
                return -ENOMEM;
        h->cfg = cfg;
        h->ks = ks;
        h->closed_eventfd = closed_eventfd;
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
        /* Holds the request line and headers; tang's own limit is 4 KiB. */
        opts[n++] = (struct MHD_OptionItem) { MHD_OPTION_CONNECTION_MEMORY_LIMIT, 16 * 1024, NULL };
        opts[n++] = (struct MHD_OptionItem) { MHD_OPTION_URI_LOG_CALLBACK, (intptr_t) on_uri, h };
        opts[n++] = (struct MHD_OptionItem) { MHD_OPTION_NOTIFY_COMPLETED, (intptr_t) on_completed, h };
        opts[n++] = (struct MHD_OptionItem) { MHD_OPTION_NOTIFY_CONNECTION, (intptr_t) on_connection, h };
        opts[n++] = (struct MHD_OptionItem) { MHD_OPTION_END, 0, NULL };

        h->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h, MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
        if (!h->daemon) {
                free(h);
                return -EIO;
        }
        if (conn_fd >= 0) {
                struct sockaddr_storage ss;
                socklen_t len = sizeof(ss);
                if (getpeername(conn_fd, (struct sockaddr *) &ss, &len) < 0 ||
                    MHD_add_connection(h->daemon, conn_fd, (struct sockaddr *) &ss, len) != MHD_YES) {
                        MHD_stop_daemon(h->daemon);
                        free(h);
                        return -ENOTSOCK;
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
        free(h);
}
