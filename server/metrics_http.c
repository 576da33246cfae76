#include "metrics_http.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct metrics_http {
        struct MHD_Daemon *daemon;
        struct metrics *metrics;
        struct keystore *ks;
};

int metrics_http_parse_address(const char *arg, char *addr, size_t addr_len, char *port, size_t port_len,
                               struct tc_err *err) {
        unsigned char bin[16];
        const char *colon, *host = arg;
        size_t host_len;
        bool v6 = arg[0] == '[';

        if (v6) {
                const char *close = strchr(arg, ']');
                if (!close || close[1] != ':')
                        return tc_fail(err, -EINVAL, "invalid metrics address '%s': an IPv6 address goes in brackets "
                                       "before the port, as [::1]:9100", arg);
                host = arg + 1;
                host_len = (size_t) (close - host);
                colon = close + 1;
        } else {
                colon = strrchr(arg, ':');
                if (!colon)
                        return tc_fail(err, -EINVAL, "invalid metrics address '%s': give ADDRESS:PORT, as "
                                       "127.0.0.1:9100 or [::1]:9100", arg);
                host_len = (size_t) (colon - arg);
        }
        if (host_len == 0 || host_len >= addr_len)
                return tc_fail(err, -EINVAL, "invalid metrics address '%s': no address before the port", arg);
        memcpy(addr, host, host_len);
        addr[host_len] = '\0';
        if (inet_pton(v6 ? AF_INET6 : AF_INET, addr, bin) != 1)
                return tc_fail(err, -EINVAL, "invalid metrics address '%s': '%s' is not a numeric %s address%s", arg,
                               addr, v6 ? "IPv6" : "IPv4", v6 ? "" : " (an IPv6 one goes in brackets: [::1]:9100)");
        const char *p = colon + 1;
        char *end;
        errno = 0;
        unsigned long n = strtoul(p, &end, 10);
        if (!*p || *end || errno || n == 0 || n > 65535 || *p == '+' || *p == '-' || strlen(p) >= port_len)
                return tc_fail(err, -EINVAL, "invalid metrics address '%s': the port must be a number from 1 to 65535",
                               arg);
        snprintf(port, port_len, "%s", p);
        return 0;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, char *body, size_t len,
                             enum MHD_ResponseMemoryMode mode, const char *allow) {
        struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, mode);
        if (!resp) {
                if (mode == MHD_RESPMEM_MUST_FREE)
                        free(body);
                return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                status == MHD_HTTP_OK ? CONTENT_TYPE : "text/plain; charset=utf-8");
        if (allow)
                MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
        enum MHD_Result r = MHD_queue_response(conn, status, resp);
        MHD_destroy_response(resp);
        return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
        struct metrics_http *h = cls;
        (void) version;
        (void) upload_data;

        /* A body is read and dropped before the answer: there is no route
         * that takes one. */
        if (!*con_cls) {
                *con_cls = h;
                return MHD_YES;
        }
        if (*upload_data_size) {
                *upload_data_size = 0;
                return MHD_YES;
        }
        if (strcmp(url, "/metrics") != 0)
                return reply(conn, MHD_HTTP_NOT_FOUND, (char *) "not found: the metrics are at /metrics\n",
                             strlen("not found: the metrics are at /metrics\n"), MHD_RESPMEM_PERSISTENT, NULL);
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
                return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, (char *) "method not allowed\n",
                             strlen("method not allowed\n"), MHD_RESPMEM_PERSISTENT, "GET, HEAD");

        char *text;
        size_t len;
        if (metrics_format(h->metrics, h->ks, &text, &len) < 0)
                return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, (char *) "out of memory\n",
                             strlen("out of memory\n"), MHD_RESPMEM_PERSISTENT, NULL);
        return reply(conn, MHD_HTTP_OK, text, len, MHD_RESPMEM_MUST_FREE, NULL);
}

static void on_mhd_error(void *cls, const char *fmt, va_list ap) {
        char msg[512];
        (void) cls;
        vsnprintf(msg, sizeof(msg), fmt, ap);
        size_t n = strlen(msg);
        while (n && msg[n - 1] == '\n')
                msg[--n] = '\0';
        log_line("metrics: %s", msg);
}

int metrics_http_start(int listen_fd, struct metrics *m, struct keystore *ks, struct metrics_http **ret,
                       struct tc_err *err) {
        struct metrics_http *h = calloc(1, sizeof(*h));
        if (!h) {
                close(listen_fd);
                return tc_fail(err, -ENOMEM, "cannot start the metrics server: %s", strerror(ENOMEM));
        }
        h->metrics = m;
        h->ks = ks;
        /* One thread: a scrape every few seconds, from one Prometheus or two. */
        h->daemon = MHD_start_daemon(
                MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, h,
                MHD_OPTION_EXTERNAL_LOGGER, on_mhd_error, h,
                MHD_OPTION_LISTEN_SOCKET, listen_fd,
                MHD_OPTION_CONNECTION_LIMIT, (unsigned) METRICS_HTTP_CONNECTION_LIMIT,
                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) METRICS_HTTP_TIMEOUT_S,
                MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) (16 * 1024),
                MHD_OPTION_STRICT_FOR_CLIENT, 1,
                MHD_OPTION_END);
        if (!h->daemon) {
                close(listen_fd);
                free(h);
                return tc_fail(err, -EIO, "cannot start the metrics server");
        }
        *ret = h;
        return 0;
}

void metrics_http_stop(struct metrics_http *h) {
        if (!h)
                return;
        /* Closes the listening socket too. */
        MHD_stop_daemon(h->daemon);
        free(h);
}
