/* HTTP over OpenSSL 3's own client (<openssl/http.h>), already linked for
 * the cryptography: libcurl's dependency closure cost most of the start-up
 * of `tether decrypt`. OpenSSL does the HTTP (request line, headers, status
 * line, header parsing, Content-Length, CONNECT, TLS); this file drives its
 * non-blocking API from a poll() loop in short slices, so that millisecond
 * deadlines and cancellation through the context hold everywhere, the host
 * name lookup included. */
#include "http.h"
#include "cleanup.h"
#include "proxy.h"
#include "util.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <sys/eventfd.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/http.h>
#include <openssl/httperr.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* Poll slices: cancellation has no file descriptor to wait on. A wait
 * begins with short slices (a cancellation soon after a request, as when an
 * sss quorum is reached, is seen at once) that grow the longer it lasts, so
 * that thousands of waiting clients in one process do not wake 50 times a
 * second each. */
#define SLICE_MS 20
#define SLICE_MAX_MS 250

TC_DEFINE_CLEANUP(BIO *, BIO_free_all)
TC_DEFINE_CLEANUP(OSSL_HTTP_REQ_CTX *, OSSL_HTTP_REQ_CTX_free)
TC_DEFINE_CLEANUP(struct addrinfo *, freeaddrinfo)
/* The headers may hold the proxy's credentials (Proxy-Authorization). */
static void header_wipe_free(CONF_VALUE *v) {
        if (v && v->value)
                OPENSSL_cleanse(v->value, strlen(v->value));
        X509V3_conf_free(v);
}
static inline void headers_freep(STACK_OF(CONF_VALUE) **h) {
        sk_CONF_VALUE_pop_free(*h, header_wipe_free);
}

/* How an attempt ended: what the message says, and whether to try again. */
enum outcome {
        ANSWERED,        /* an HTTP answer, whatever its status */
        CANCELLED,
        NOT_FOUND,       /* host name not found */
        PROXY_NOT_FOUND, /* the proxy's host name not found */
        CONNECT_FAILED,  /* sys_errno says why */
        CONNECT_TIMEOUT, /* no connection within connect_timeout_ms */
        ANSWER_TIMEOUT,  /* connected; no (complete) answer in time */
        CLOSED,          /* closed or reset before any answer (sys_errno) */
        PARTIAL,         /* closed before the end of the answer */
        TOO_LARGE,
        HEADERS_TOO_LARGE, /* more than MAX_HEADER_BYTES before the body */
        NOT_HTTP,
        REDIRECT,        /* HTTP 301/302: tang clients do not follow them */
        TLS_FAILED,      /* detail: OpenSSL's reason */
        TLS_UNTRUSTED,   /* detail: why the certificate was refused */
        PROXY_FAILED,    /* detail; status: the proxy's answer to CONNECT */
        PROXY_AUTH,      /* the proxy answered 407 (status) */
        FAILED,          /* detail */
};

struct attempt {
        enum outcome outcome;
        int sys_errno;
        long status;      /* once known (200 while reading the body) */
        char detail[256];
};

/* What the request is, from the URL and the environment. */
struct target {
        int use_ssl;
        char *host, *port, *path, *query; /* OSSL_HTTP_parse_url's */
        struct tc_proxy proxy;            /* host NULL without a proxy */
        bool host_is_ip;
};

static void target_clear(struct target *t) {
        OPENSSL_free(t->host);
        OPENSSL_free(t->port);
        OPENSSL_free(t->path);
        OPENSSL_free(t->query);
        tc_proxy_clear(&t->proxy);
}

void tc_http_reply_clear(struct tc_http_reply *reply) {
        free(reply->body);
        memset(reply, 0, sizeof(*reply));
}

static int append(struct tc_http_reply *reply, const void *data, size_t n) {
        if (reply->len + n > TC_HTTP_MAX_BODY)
                return -EMSGSIZE;
        char *nb = realloc(reply->body, reply->len + n + 1);
        if (!nb)
                return -ENOMEM;
        memcpy(nb + reply->len, data, n);
        reply->body = nb;
        reply->len += n;
        reply->body[reply->len] = '\0';
        return 0;
}

static int64_t earlier(int64_t a, int64_t b) {
        return a < b ? a : b;
}

/* Waits until fd is ready for events, until the time until (tc_now_ms()),
 * or cancellation. Returns 1 (ready), 0 (time is up) or -ECANCELED. */
static int wait_fd(int fd, short events, int64_t until, const struct tc_ctx *ctx) {
        for (int slice = SLICE_MS;; slice = slice * 2 > SLICE_MAX_MS ? SLICE_MAX_MS : slice * 2) {
                if (tc_ctx_cancelled(ctx))
                        return -ECANCELED;
                int64_t left = until - tc_now_ms();
                if (left <= 0)
                        return 0;
                struct pollfd p = { .fd = fd, .events = events };
                int r = poll(&p, 1, (int) (left < slice ? left : slice));
                if (r > 0)
                        return 1;
                if (r < 0 && errno != EINTR)
                        return -errno;
        }
}

/* --- the URL and the proxy --------------------------------------------- */

static int parse_target(const char *url, const struct tc_ctx *ctx, struct target *t, struct tc_err *err) {
        if (!OSSL_HTTP_parse_url(url, &t->use_ssl, NULL, &t->host, &t->port, NULL, &t->path, &t->query, NULL)) {
                ERR_clear_error();
                return tc_fail(err, -EINVAL, "%s: not an http:// or https:// URL", url);
        }
        /* An IPv6 literal comes with its brackets: the lookup, the
         * certificate check and no_proxy want the address alone. */
        size_t hl = strlen(t->host);
        if (hl >= 2 && t->host[0] == '[' && t->host[hl - 1] == ']') {
                memmove(t->host, t->host + 1, hl - 2);
                t->host[hl - 2] = '\0';
        }
        unsigned char ip[16];
        t->host_is_ip = inet_pton(AF_INET, t->host, ip) == 1 || inet_pton(AF_INET6, t->host, ip) == 1;

        /* The proxy settings the caller read (curl's variables): the
         * proxy is spoken to in plain HTTP, for https:// through CONNECT. */
        const struct tc_env_value *proxy = tc_proxy_select(&ctx->proxy, t->use_ssl, t->host);
        return proxy ? tc_proxy_parse(proxy, &t->proxy, err) : 0;
}

/* --- name lookup, bounded ---------------------------------------------- */

/* At most this many lookups given up on may still run: each holds a
 * thread until the resolver answers. */
#define MAX_PENDING_LOOKUPS 16

static int pending_lookups; /* atomic */

/* One name lookup on a thread of its own, shared by that thread and the
 * caller until both are done with it. */
struct lookup {
        int refs;  /* atomic */
        int done;  /* atomic: rc and result are set */
        int ready; /* eventfd, written once done */
        int rc;
        struct addrinfo *result;
        struct addrinfo hints;
        char names[]; /* host, then port */
};

static void lookup_unref(struct lookup *l) {
        if (__atomic_sub_fetch(&l->refs, 1, __ATOMIC_ACQ_REL) != 0)
                return;
        if (l->result)
                freeaddrinfo(l->result);
        close(l->ready);
        free(l);
}

static void *lookup_run(void *arg) {
        struct lookup *l = arg;
        size_t hl = strlen(l->names) + 1;
        l->rc = getaddrinfo(l->names, l->names + hl, &l->hints, &l->result);
        __atomic_store_n(&l->done, 1, __ATOMIC_RELEASE);
        (void) eventfd_write(l->ready, 1);
        __atomic_sub_fetch(&pending_lookups, 1, __ATOMIC_ACQ_REL);
        lookup_unref(l);
        return NULL;
}

/* The addresses of host:port. BIO_lookup (what OpenSSL's connect BIO uses)
 * blocks for as long as the resolver likes; the lookup runs on a thread of
 * its own (as curl's threaded resolver does) while this one waits for it
 * with the deadline and cancellation. A lookup given up on finishes on its
 * own and frees itself; at most MAX_PENDING_LOOKUPS run at once. Returns 0,
 * -ENOENT (no such name), -ETIMEDOUT, -ECANCELED, -EAGAIN (too many
 * lookups pending) or -EIO. */
static int resolve(const char *host, const char *port, int64_t until, const struct tc_ctx *ctx, struct addrinfo **res) {
        struct addrinfo numeric = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
        if (getaddrinfo(host, port, &numeric, res) == 0)
                return 0;

        size_t hl = strlen(host) + 1, pl = strlen(port) + 1;
        struct lookup *l = calloc(1, sizeof(*l) + hl + pl);
        if (!l)
                return -ENOMEM;
        memcpy(l->names, host, hl);
        memcpy(l->names + hl, port, pl);
        l->hints = (struct addrinfo) { .ai_socktype = SOCK_STREAM };
        l->refs = 2;
        l->ready = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (l->ready < 0) {
                free(l);
                return -EIO;
        }
        if (__atomic_add_fetch(&pending_lookups, 1, __ATOMIC_ACQ_REL) > MAX_PENDING_LOOKUPS) {
                __atomic_sub_fetch(&pending_lookups, 1, __ATOMIC_ACQ_REL);
                close(l->ready);
                free(l);
                return -EAGAIN;
        }
        pthread_attr_t attr;
        pthread_t thread;
        int r = pthread_attr_init(&attr);
        if (r == 0) {
                (void) pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
                r = pthread_create(&thread, &attr, lookup_run, l);
                pthread_attr_destroy(&attr);
        }
        if (r != 0) {
                __atomic_sub_fetch(&pending_lookups, 1, __ATOMIC_ACQ_REL);
                close(l->ready);
                free(l);
                return -EAGAIN;
        }

        r = wait_fd(l->ready, POLLIN, until, ctx);
        if (r <= 0 || !__atomic_load_n(&l->done, __ATOMIC_ACQUIRE)) {
                lookup_unref(l);
                return r == -ECANCELED || tc_ctx_cancelled(ctx) ? -ECANCELED : -ETIMEDOUT;
        }
        int rc = l->rc;
        *res = l->result;
        l->result = NULL;
        lookup_unref(l);
        if (rc == 0)
                return 0;
        return rc == EAI_NONAME || rc == EAI_NODATA || rc == EAI_AGAIN || rc == EAI_FAIL ? -ENOENT : -EIO;
}

/* --- connecting -------------------------------------------------------- */

/* The errno OpenSSL queued for a failed socket call, or 0. */
static int queued_errno(void) {
        unsigned long e;
        int found = 0;
        while ((e = ERR_get_error()) != 0)
                if (ERR_GET_LIB(e) == ERR_LIB_SYS && !found)
                        found = ERR_GET_REASON(e);
        return found;
}

/* Whether a non-blocking connect on fd has completed, without waiting
 * (OpenSSL's connect BIO, asked without a wait, takes "no error yet" for
 * "connected"). */
static bool connected_by_now(int fd) {
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        int error = 0;
        socklen_t len = sizeof(error);
        return poll(&p, 1, 0) == 1 && (p.revents & POLLOUT) && !(p.revents & (POLLERR | POLLHUP)) &&
               getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) == 0 && error == 0;
}

/* A non-blocking connect BIO to one address, connected by until. Returns
 * the BIO, or NULL with a->outcome saying why. */
static BIO *connect_one(const struct addrinfo *ai, int64_t until, const struct tc_ctx *ctx, struct attempt *a) {
        _cleanup_(BIO_free_allp) BIO *bio = BIO_new(BIO_s_connect());
        BIO_ADDR *addr = BIO_ADDR_new();
        const void *where;
        size_t wlen;
        unsigned short port;
        if (ai->ai_family == AF_INET6) {
                const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *) ai->ai_addr;
                where = &s6->sin6_addr, wlen = sizeof(s6->sin6_addr), port = s6->sin6_port;
        } else {
                const struct sockaddr_in *s4 = (const struct sockaddr_in *) ai->ai_addr;
                where = &s4->sin_addr, wlen = sizeof(s4->sin_addr), port = s4->sin_port;
        }
        /* The BIO takes the address as numeric strings: its own lookup of
         * them does not block. */
        bool ok = bio && addr && BIO_ADDR_rawmake(addr, ai->ai_family, where, wlen, port) &&
                  BIO_set_conn_address(bio, addr) > 0 && BIO_set_nbio(bio, 1) > 0;
        BIO_ADDR_free(addr);
        if (!ok) {
                ERR_clear_error();
                a->outcome = FAILED;
                snprintf(a->detail, sizeof(a->detail), "cannot create a socket");
                return NULL;
        }
        for (;;) {
                if (BIO_do_connect(bio) > 0) {
                        BIO *connected = bio;
                        bio = NULL;
                        return connected;
                }
                if (!BIO_should_retry(bio)) {
                        a->outcome = CONNECT_FAILED;
                        a->sys_errno = queued_errno();
                        return NULL;
                }
                int r = wait_fd(BIO_get_fd(bio, NULL), POLLOUT, until, ctx);
                /* Time is up by the clock, but a thread that got the CPU late
                 * (thousands of clients in one process) may find its
                 * connection made long ago: one last look, without waiting. */
                if (r == 0 && connected_by_now(BIO_get_fd(bio, NULL)) && BIO_do_connect(bio) > 0) {
                        BIO *connected = bio;
                        bio = NULL;
                        return connected;
                }
                if (r <= 0) {
                        ERR_clear_error();
                        a->outcome = r == -ECANCELED ? CANCELLED : CONNECT_TIMEOUT;
                        return NULL;
                }
        }
}

/* ai, or the first address after it that can be connected to. */
static const struct addrinfo *next_usable(const struct addrinfo *ai) {
        while (ai && ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
                ai = ai->ai_next;
        return ai;
}

/* Resolves and connects to the server or its proxy, trying its addresses
 * in turn, by until. */
static BIO *connect_to(const struct target *t, int64_t until, const struct tc_ctx *ctx, struct attempt *a) {
        _cleanup_(freeaddrinfop) struct addrinfo *ais = NULL;
        const char *host = t->proxy.host ? t->proxy.host : t->host, *port = t->proxy.host ? t->proxy.port : t->port;
        int r = resolve(host, port, until, ctx, &ais);
        if (r < 0) {
                a->outcome = r == -ECANCELED ? CANCELLED
                           : r == -ETIMEDOUT ? CONNECT_TIMEOUT
                           : t->proxy.host   ? PROXY_NOT_FOUND
                                             : NOT_FOUND;
                if (r == -EIO || r == -ENOMEM) {
                        a->outcome = FAILED;
                        snprintf(a->detail, sizeof(a->detail), "cannot look up %s", host);
                } else if (r == -EAGAIN) {
                        a->outcome = FAILED;
                        snprintf(a->detail, sizeof(a->detail), "cannot look up %s: %d earlier lookups still wait for "
                                 "the name servers", host, MAX_PENDING_LOOKUPS);
                }
                return NULL;
        }
        /* As curl: every address but the last gets half of the time left,
         * the last all of it, so that an address that drops packets does
         * not take the whole budget (and every retry) from the others. */
        a->outcome = CONNECT_FAILED; /* no address to try */
        for (const struct addrinfo *ai = next_usable(ais); ai; ai = next_usable(ai->ai_next)) {
                bool last = !next_usable(ai->ai_next);
                int64_t now = tc_now_ms();
                BIO *bio = connect_one(ai, last ? until : now + (until - now) / 2, ctx, a);
                if (bio || last || (a->outcome != CONNECT_FAILED && a->outcome != CONNECT_TIMEOUT))
                        return bio;
        }
        return NULL;
}

/* --- a guard between OpenSSL's HTTP reader and the connection ---------- */

/* Headers larger than this end the attempt: tang's are a few hundred bytes. */
#define MAX_HEADER_BYTES (64 * 1024)
/* Header bytes OpenSSL may read before it is sent back to the poll loop. */
#define HEADER_SLICE_BYTES 4096

/* OpenSSL 3.0's OSSL_HTTP_REQ_CTX_nbio reads the status line and headers in
 * a loop of its own, a byte per read, for as long as bytes come: a server
 * sending header lines without end kept it from ever returning, past every
 * deadline and cancellation. This filter BIO sits on top of the connection
 * (or of its TLS) while the headers are read: it sends nbio back to the
 * poll loop every few KiB ("retry"), at once when the deadline has passed
 * or the attempt is cancelled, and fails for good past MAX_HEADER_BYTES.
 * Once the headers are in it only passes bytes through. */
struct guard {
        int64_t until;
        const struct tc_ctx *ctx;
        size_t header_bytes, since_yield;
        bool headers_done;
        bool line_start; /* the last byte read ended a line */
        bool yielded;    /* the last retry was ours: data may be waiting */
        bool too_large;
};

static int guard_read(BIO *b, char *buf, int len) {
        struct guard *g = BIO_get_data(b);
        BIO *next = BIO_next(b);
        BIO_clear_retry_flags(b);
        if (!next || !g)
                return 0;
        if (!g->headers_done) {
                if (g->too_large)
                        return -1;
                if (tc_ctx_cancelled(g->ctx) || tc_now_ms() >= g->until) {
                        BIO_set_retry_read(b);
                        return -1;
                }
                /* Only between lines: BIO_get_line drops the part of a line
                 * it read when a read asks to retry. OpenSSL reads headers a
                 * byte at a time (len 1); larger reads are bounded anyway. */
                if (len == 1 && g->line_start && g->since_yield >= HEADER_SLICE_BYTES) {
                        g->since_yield = 0;
                        g->yielded = true;
                        BIO_set_retry_read(b);
                        return -1;
                }
        }
        int n = BIO_read(next, buf, len);
        BIO_copy_next_retry(b);
        if (n > 0 && !g->headers_done) {
                g->header_bytes += (size_t) n;
                g->since_yield += (size_t) n;
                g->line_start = buf[n - 1] == '\n';
                if (g->header_bytes > MAX_HEADER_BYTES) {
                        g->too_large = true;
                        BIO_clear_retry_flags(b);
                        return -1;
                }
        }
        return n;
}

static int guard_write(BIO *b, const char *buf, int len) {
        BIO *next = BIO_next(b);
        BIO_clear_retry_flags(b);
        if (!next)
                return 0;
        int n = BIO_write(next, buf, len);
        BIO_copy_next_retry(b);
        return n;
}

/* Unsupported: OpenSSL then reads lines with BIO_get_line, through read. */
static int guard_gets(BIO *b, char *buf, int size) {
        (void) b, (void) buf, (void) size;
        return -2;
}

/* Everything else (BIO_flush, BIO_get_fd, BIO_pending, ...) is the
 * connection's. */
static long guard_ctrl(BIO *b, int cmd, long num, void *ptr) {
        BIO *next = BIO_next(b);
        if (cmd == BIO_CTRL_PUSH || cmd == BIO_CTRL_POP)
                return 1;
        if (!next)
                return 0;
        long r = BIO_ctrl(next, cmd, num, ptr);
        /* Only what may need retrying sets the flags: BIO_get_line asks
         * BIO_eof right after a read asked to retry, and must keep that. */
        if (cmd == BIO_CTRL_FLUSH || cmd == BIO_C_DO_STATE_MACHINE) {
                BIO_clear_retry_flags(b);
                BIO_copy_next_retry(b);
        }
        return r;
}

static long guard_callback_ctrl(BIO *b, int cmd, BIO_info_cb *fp) {
        BIO *next = BIO_next(b);
        return next ? BIO_callback_ctrl(next, cmd, fp) : 0;
}

static int guard_create(BIO *b) {
        BIO_set_init(b, 1);
        return 1;
}

static BIO_METHOD *guard_method;
static pthread_once_t guard_once = PTHREAD_ONCE_INIT;
static void guard_init_once(void) {
        int type = BIO_get_new_index();
        BIO_METHOD *m = type < 0 ? NULL : BIO_meth_new(type | BIO_TYPE_FILTER, "tether header guard");
        if (m && BIO_meth_set_read(m, guard_read) && BIO_meth_set_write(m, guard_write) &&
            BIO_meth_set_gets(m, guard_gets) && BIO_meth_set_ctrl(m, guard_ctrl) &&
            BIO_meth_set_callback_ctrl(m, guard_callback_ctrl) && BIO_meth_set_create(m, guard_create))
                guard_method = m;
        else
                BIO_meth_free(m);
}

/* A guard BIO for g (which must outlive it), not yet on anything. */
static BIO *guard_new(struct guard *g) {
        pthread_once(&guard_once, guard_init_once);
        BIO *b = guard_method ? BIO_new(guard_method) : NULL;
        if (b)
                BIO_set_data(b, g);
        return b;
}

/* --- TLS, through OpenSSL's bio_update_fn ------------------------------ */

static SSL_CTX *tls_ctx;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;
static void tls_init_once(void) {
        /* The system's CA certificates (SSL_CERT_FILE / SSL_CERT_DIR move
         * them), as curl used; the server's name checked below. */
        tls_ctx = SSL_CTX_new(TLS_client_method());
        if (tls_ctx && SSL_CTX_set_default_verify_paths(tls_ctx) != 1) {
                SSL_CTX_free(tls_ctx);
                tls_ctx = NULL;
        }
        if (tls_ctx)
                SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_PEER, NULL);
}

struct tls {
        const struct target *t;
        int64_t until;
        SSL *ssl;          /* once pushed */
        BIO *guard;        /* goes on top of the TLS BIO */
        BIO *top;          /* the guard, owning the TLS BIO, owning the connect BIO */
        bool proxy_failed;
        long proxy_status; /* its answer to CONNECT, when it gave one */
        char proxy_why[160];
};

/* Called by OSSL_HTTP_open once connected: through a proxy, asks it for a
 * tunnel (CONNECT); then puts a TLS BIO on top. */
static BIO *tls_update(BIO *bio, void *arg, int connect, int use_ssl) {
        struct tls *tls = arg;
        if (!connect || !use_ssl)
                return bio;
        if (tls->t->proxy.host) {
                /* OSSL_HTTP_proxy_connect waits in whole seconds and does
                 * not see cancellation: its wait is bounded by what is left
                 * of the attempt, rounded up. */
                int64_t left = tls->until - tc_now_ms();
                int secs = left <= 0 ? 1 : (int) ((left + 999) / 1000);
                bool v6 = strchr(tls->t->host, ':') != NULL;
                char name[300];
                snprintf(name, sizeof(name), "%s%s%s", v6 ? "[" : "", tls->t->host, v6 ? "]" : "");
                if (!OSSL_HTTP_proxy_connect(bio, name, tls->t->port, tls->t->proxy.user, tls->t->proxy.pass, secs,
                                             NULL, NULL)) {
                        unsigned long e = ERR_peek_last_error();
                        const char *data = NULL;
                        ERR_peek_last_error_data(&data, NULL);
                        tls->proxy_failed = true;
                        /* "reason= 407 Proxy Authentication Required" */
                        if (!data || sscanf(data, "reason= %ld", &tls->proxy_status) != 1)
                                tls->proxy_status = 0;
                        snprintf(tls->proxy_why, sizeof(tls->proxy_why), "%s%s%s",
                                 ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "failed",
                                 data && *data ? ": " : "", data ? data : "");
                        return NULL;
                }
        }
        BIO *ssl_bio = BIO_new_ssl(tls_ctx, 1);
        SSL *ssl = NULL;
        if (!ssl_bio || BIO_get_ssl(ssl_bio, &ssl) <= 0 || !ssl) {
                BIO_free(ssl_bio);
                return NULL;
        }
        /* SNI for names only; the certificate must be for the host (or the
         * IP address) in the URL. */
        if ((!tls->t->host_is_ip && !SSL_set_tlsext_host_name(ssl, tls->t->host)) ||
            (tls->t->host_is_ip ? !X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), tls->t->host)
                                : !SSL_set1_host(ssl, tls->t->host))) {
                BIO_free(ssl_bio);
                return NULL;
        }
        tls->ssl = ssl;
        tls->top = BIO_push(tls->guard, BIO_push(ssl_bio, bio));
        return tls->top;
}

/* --- the exchange ------------------------------------------------------ */

/* Sets a from what OpenSSL queued for a failed exchange (and errno). */
static void classify(struct attempt *a, int sys_errno, SSL *ssl) {
        unsigned long e;
        const char *data;
        int flags;
        a->outcome = CLOSED;
        a->sys_errno = sys_errno;
        bool seen = false;
        while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
                if (seen)
                        continue;
                int lib = ERR_GET_LIB(e), reason = ERR_GET_REASON(e);
                const char *d = data && (flags & ERR_TXT_STRING) ? data : "";
                seen = true;
                if (lib == ERR_LIB_SYS) {
                        a->sys_errno = reason;
                        seen = false; /* what follows says more */
                } else if (lib == ERR_LIB_HTTP && (reason == HTTP_R_RECEIVED_ERROR ||
                                                   reason == HTTP_R_STATUS_CODE_UNSUPPORTED)) {
                        /* OpenSSL 3.0 fails on every status but 200 (and
                         * 301/302 to a GET), saying "code=500, reason=...". */
                        long status = 0;
                        if (sscanf(d, "code=%ld", &status) == 1 && status >= 100 && status <= 999) {
                                a->outcome = ANSWERED;
                                a->status = status;
                        } else
                                a->outcome = NOT_HTTP;
                } else if (lib == ERR_LIB_HTTP && reason == HTTP_R_MAX_RESP_LEN_EXCEEDED)
                        a->outcome = TOO_LARGE;
                else if (lib == ERR_LIB_HTTP && reason == HTTP_R_REDIRECTION_NOT_ENABLED)
                        a->outcome = REDIRECT;
                else if (lib == ERR_LIB_HTTP && reason == HTTP_R_FAILED_READING_DATA)
                        a->outcome = CLOSED;
                else if (lib == ERR_LIB_HTTP)
                        a->outcome = NOT_HTTP;
                else if (lib == ERR_LIB_SSL && reason == SSL_R_CERTIFICATE_VERIFY_FAILED && ssl) {
                        a->outcome = TLS_UNTRUSTED;
                        snprintf(a->detail, sizeof(a->detail), "%s",
                                 X509_verify_cert_error_string(SSL_get_verify_result(ssl)));
                } else if (lib == ERR_LIB_SSL) {
                        a->outcome = TLS_FAILED;
                        snprintf(a->detail, sizeof(a->detail), "%s",
                                 ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "");
                } else {
                        a->outcome = FAILED;
                        ERR_error_string_n(e, a->detail, sizeof(a->detail));
                }
        }
        /* Nothing queued and no socket error: a redirection to a GET, which
         * OpenSSL 3.0 ends without an error. */
        if (!seen && !a->sys_errno)
                a->outcome = REDIRECT;
        /* A TLS session the server closed during the handshake. */
        if (a->outcome == CLOSED && ssl && !SSL_is_init_finished(ssl)) {
                a->outcome = TLS_FAILED;
                snprintf(a->detail, sizeof(a->detail), "the server closed the connection");
        }
}

/* Reads from bio until the end of the answer (EOF, or expect bytes when
 * expect > 0), the time until, or cancellation. */
static void read_body(BIO *bio, size_t expect, int64_t until, const struct tc_ctx *ctx, struct tc_http_reply *reply,
                      struct attempt *a) {
        char buf[4096];
        for (;;) {
                if (expect > 0 && reply->len >= expect) {
                        /* What follows Content-Length is not the answer. */
                        reply->len = expect;
                        reply->body[expect] = '\0';
                        a->outcome = ANSWERED;
                        return;
                }
                errno = 0;
                int n = BIO_read(bio, buf, sizeof(buf));
                if (n > 0) {
                        int r = append(reply, buf, (size_t) n);
                        if (r < 0) {
                                a->outcome = r == -EMSGSIZE ? TOO_LARGE : FAILED;
                                snprintf(a->detail, sizeof(a->detail), "out of memory");
                                return;
                        }
                        continue;
                }
                if (n < 0 && BIO_should_retry(bio)) {
                        int r = wait_fd(BIO_get_fd(bio, NULL), BIO_should_write(bio) ? POLLOUT : POLLIN, until, ctx);
                        if (r <= 0) {
                                a->outcome = r == -ECANCELED ? CANCELLED : ANSWER_TIMEOUT;
                                return;
                        }
                        continue;
                }
                /* The end: a TLS peer may close without close_notify, which
                 * OpenSSL 3 reports as an error; the length decides. */
                int e = errno;
                ERR_clear_error();
                if (expect > 0 && reply->len < expect)
                        a->outcome = PARTIAL;
                else if (n < 0 && expect == 0 && (e == ECONNRESET || e == EPIPE)) {
                        a->outcome = CLOSED;
                        a->sys_errno = e;
                } else
                        a->outcome = ANSWERED;
                return;
        }
}

/* Reads what bio has once it has something: the bytes read, 0 at the end,
 * or -1 when time is up, the attempt is cancelled or the read failed. */
static int read_some(BIO *bio, char *buf, int cap, int64_t until, const struct tc_ctx *ctx) {
        for (;;) {
                int n = BIO_read(bio, buf, cap);
                if (n > 0)
                        return n;
                if (n < 0 && BIO_should_retry(bio)) {
                        if (wait_fd(BIO_get_fd(bio, NULL), BIO_should_write(bio) ? POLLOUT : POLLIN, until, ctx) <= 0)
                                return -1;
                        continue;
                }
                ERR_clear_error();
                return n == 0 ? 0 : -1;
        }
}

/* Whether raw holds the end of an answer's headers (an empty line). */
static bool has_header_end(const struct tc_http_reply *raw) {
        return raw->len > 0 && (memmem(raw->body, raw->len, "\n\r\n", 3) || memmem(raw->body, raw->len, "\n\n", 2));
}

/* The body of an answer OpenSSL 3.0 refused for its status: it has read
 * the status line only. The rest of the headers is read up to their empty
 * line and handed, behind a stand-in status line, to a second OpenSSL HTTP
 * context, so that OpenSSL parses the headers and Content-Length here too
 * (whole: it takes an empty buffer for the end of the answer); then exactly
 * Content-Length bytes of body are read. Waiting for the connection to close
 * instead would hang on servers that keep it open after an empty answer
 * (tangd's 404 says "Content-Length: 0" and waits for the next request). An
 * error body is only an explanation: whatever goes wrong here, the status
 * stands. */
static void read_error_body(OSSL_HTTP_REQ_CTX *rctx, BIO *bio, struct guard *g, int64_t until,
                            const struct tc_ctx *ctx, struct tc_http_reply *reply, struct attempt *a) {
        const char *line1 = "HTTP/1.0 200 OK\r\n";
        char *pending, buf[4096];
        long n = BIO_get_mem_data(OSSL_HTTP_REQ_CTX_get0_mem_bio(rctx), &pending);
        _cleanup_(tc_http_reply_clear) struct tc_http_reply raw = {};
        _cleanup_(BIO_free_allp) BIO *in = NULL, *out = NULL;
        _cleanup_(OSSL_HTTP_REQ_CTX_freep) OSSL_HTTP_REQ_CTX *parse = NULL;

        a->outcome = ANSWERED;
        if (append(&raw, line1, strlen(line1)) < 0 || (n > 0 && append(&raw, pending, (size_t) n) < 0))
                goto done;
        while (!has_header_end(&raw)) {
                int got = read_some(bio, buf, sizeof(buf), until, ctx);
                if (got <= 0 || append(&raw, buf, (size_t) got) < 0)
                        goto done;
        }
        g->headers_done = true;

        in = BIO_new_mem_buf(raw.body, (int) raw.len);
        out = BIO_new(BIO_s_null());
        parse = in && out ? OSSL_HTTP_REQ_CTX_new(out, in, 0) : NULL;
        if (!parse || !OSSL_HTTP_REQ_CTX_set_request_line(parse, 0, NULL, NULL, "/") ||
            !OSSL_HTTP_REQ_CTX_set_expected(parse, NULL, 0, 0, 0))
                goto done;
        OSSL_HTTP_REQ_CTX_set_max_response_length(parse, TC_HTTP_MAX_BODY);
        if (OSSL_HTTP_REQ_CTX_nbio(parse) != 1)
                goto done;

        /* What is left in `in` begins the body. */
        size_t len = OSSL_HTTP_REQ_CTX_get_resp_len(parse);
        int got;
        while ((got = BIO_read(in, buf, sizeof(buf))) > 0)
                if (append(reply, buf, (size_t) got) < 0)
                        break;
        if (len > 0 && reply->len > len) {
                reply->len = len;
                reply->body[len] = '\0';
        }
        if (len > reply->len) {
                struct attempt body = {};
                read_body(bio, len, until, ctx, reply, &body);
                if (body.outcome != ANSWERED)
                        tc_http_reply_clear(reply);
        }
done:
        ERR_clear_error();
}

/* Proxy-Authorization: Basic, for a request through a plain HTTP proxy (a
 * tunnel's CONNECT gets it from OpenSSL). The copies are wiped. */
static int add_proxy_authorization(const struct tc_proxy *p, STACK_OF(CONF_VALUE) **headers) {
        _cleanup_free_ char *plain = NULL;
        unsigned char enc[1024];
        TC_CLEANUP_ERASE(enc);
        int n = asprintf(&plain, "%s:%s", p->user, p->pass);
        if (n < 0) {
                plain = NULL;
                return -ENOMEM;
        }
        size_t plain_len = (size_t) n;
        char value[sizeof(enc) + 8];
        TC_CLEANUP_ERASE(value);
        int r = plain_len > (sizeof(enc) / 4 * 3) - 3 ? -E2BIG : 0;
        if (r == 0) {
                EVP_EncodeBlock(enc, (const unsigned char *) plain, n);
                snprintf(value, sizeof(value), "Basic %s", enc);
                r = X509V3_add_value("Proxy-Authorization", value, headers) ? 0 : -ENOMEM;
        }
        OPENSSL_cleanse(plain, plain_len);
        return r;
}

/* One exchange with the server. until: the end of this attempt;
 * connect_until: of its connection. */
static void exchange(const struct target *t, const char *body, size_t body_len,
                     const char *content_type, int64_t until, int64_t connect_until, const struct tc_ctx *ctx,
                     struct tc_http_reply *reply, struct attempt *a) {
        _cleanup_free_ char *host_header = NULL, *path = NULL;
        _cleanup_(headers_freep) STACK_OF(CONF_VALUE) *headers = NULL;
        _cleanup_(BIO_free_allp) BIO *req = NULL;
        _cleanup_(OSSL_HTTP_REQ_CTX_freep) OSSL_HTTP_REQ_CTX *rctx = NULL;
        /* Outlives the BIOs below: the guard BIO points to it. */
        struct guard g = { .until = until, .ctx = ctx, .line_start = true };
        bool v6 = strchr(t->host, ':') != NULL;
        bool default_port = strcmp(t->port, t->use_ssl ? OSSL_HTTPS_PORT : OSSL_HTTP_PORT) == 0;

        *a = (struct attempt) {};
        ERR_clear_error();
        if (asprintf(&host_header, "%s%s%s%s%s", v6 ? "[" : "", t->host, v6 ? "]" : "", default_port ? "" : ":",
                     default_port ? "" : t->port) < 0)
                host_header = NULL;
        /* To a plain HTTP proxy the request names the whole URL. */
        if (asprintf(&path, "%s%s%s%s%s", t->proxy.host && !t->use_ssl ? "http://" : "",
                     t->proxy.host && !t->use_ssl ? host_header : "", t->path, t->query && *t->query ? "?" : "",
                     t->query && *t->query ? t->query : "") < 0)
                path = NULL;
        if (!host_header || !path || !X509V3_add_value("Host", host_header, &headers) ||
            (t->proxy.user && !t->use_ssl && add_proxy_authorization(&t->proxy, &headers) < 0) ||
            (body && !(req = BIO_new_mem_buf(body, (int) body_len)))) {
                a->outcome = FAILED;
                snprintf(a->detail, sizeof(a->detail), "out of memory");
                return;
        }

        _cleanup_(BIO_free_allp) BIO *bio = connect_to(t, connect_until, ctx, a);
        if (!bio)
                return;

        _cleanup_(BIO_free_allp) BIO *guard = guard_new(&g); /* until on the chain */
        if (!guard) {
                a->outcome = FAILED;
                snprintf(a->detail, sizeof(a->detail), "out of memory");
                return;
        }
        struct tls tls = { .t = t, .until = until, .guard = guard };
        if (t->use_ssl) {
                pthread_once(&tls_once, tls_init_once);
                if (!tls_ctx) {
                        a->outcome = FAILED;
                        snprintf(a->detail, sizeof(a->detail), "cannot set up TLS (the system's CA certificates)");
                        return;
                }
        }
        /* The connect BIO is ours: OpenSSL takes it as connected and does
         * not free it; the TLS BIO, if any, goes on top and owns it. */
        int fd = (int) BIO_get_fd(bio, NULL);
        if (!t->use_ssl) {
                bio = BIO_push(guard, bio);
                guard = NULL;
        }
        /* OpenSSL's own bound, in whole seconds, a second past ours: a
         * backstop for any wait of its own (its connect retry loop has none
         * when given 0). */
        int64_t left_ms = until - tc_now_ms();
        int backstop_s = (int) ((left_ms > 0 ? left_ms : 0) / 1000) + 2;
        rctx = OSSL_HTTP_open(t->host, t->port, NULL, NULL, t->use_ssl, bio, NULL, t->use_ssl ? tls_update : NULL,
                              &tls, 0, backstop_s);
        if (tls.top) {
                bio = tls.top;
                guard = NULL;
        }
        if (!rctx) {
                if (tls.proxy_failed) {
                        /* 407, or 401 from some (tinyproxy) */
                        a->outcome = tls.proxy_status == 407 || tls.proxy_status == 401 ? PROXY_AUTH : PROXY_FAILED;
                        a->status = tls.proxy_status;
                        snprintf(a->detail, sizeof(a->detail), "%s", tls.proxy_why);
                        ERR_clear_error();
                } else
                        classify(a, errno, NULL);
                return;
        }
        if (!OSSL_HTTP_set1_request(rctx, path, headers, body ? content_type : NULL, req, NULL, 0, TC_HTTP_MAX_BODY, 0,
                                    0)) {
                a->outcome = FAILED;
                ERR_error_string_n(ERR_get_error(), a->detail, sizeof(a->detail));
                ERR_clear_error();
                return;
        }

        /* Request out, status line and headers in. */
        for (;;) {
                errno = 0;
                int r = OSSL_HTTP_REQ_CTX_nbio(rctx);
                if (r == 1)
                        break;
                if (r == 0) {
                        if (g.too_large) {
                                a->outcome = HEADERS_TOO_LARGE;
                                ERR_clear_error();
                                return;
                        }
                        classify(a, errno, tls.ssl);
                        if (a->outcome == ANSWERED)
                                read_error_body(rctx, bio, &g, until, ctx, reply, a);
                        return;
                }
                /* The guard's pause, not the socket's: more may be waiting
                 * (in the TLS buffer too), so no poll; the guard itself
                 * stops at the deadline or on cancellation. */
                if (g.yielded) {
                        g.yielded = false;
                        continue;
                }
                int w = wait_fd(fd, BIO_should_write(bio) ? POLLOUT : POLLIN, until, ctx);
                if (w <= 0) {
                        a->outcome = w == -ECANCELED ? CANCELLED : ANSWER_TIMEOUT;
                        return;
                }
        }
        g.headers_done = true;
        a->status = 200;
        read_body(bio, OSSL_HTTP_REQ_CTX_get_resp_len(rctx), until, ctx, reply, a);
}

/* --- messages and retries ---------------------------------------------- */

static bool transient(enum outcome o) {
        return o == NOT_FOUND || o == PROXY_NOT_FOUND || o == CONNECT_FAILED || o == CONNECT_TIMEOUT ||
               o == ANSWER_TIMEOUT || o == CLOSED;
}

/* A socket error as a message reads: "connection refused". A reset gets its
 * own words, the same whether it came while connecting or after. */
static void describe_errno(int e, char *buf, size_t len) {
        if (e == ECONNRESET || e == EPIPE) {
                snprintf(buf, len, "connection reset by the server");
                return;
        }
        snprintf(buf, len, "%s", strerror(e));
        buf[0] = (char) (buf[0] >= 'A' && buf[0] <= 'Z' ? buf[0] - 'A' + 'a' : buf[0]);
}

/* A TLS handshake that failed: the usual cause is https:// to a server that
 * speaks plain HTTP on that port (as tang servers usually do). OpenSSL reads
 * its HTTP answer as a TLS record and says "wrong version number" (3.0) or
 * "packet length too long" / "record layer failure" (later versions). */
static void describe_tls(const char *detail, char *buf, size_t len) {
        if (strstr(detail, "wrong version number") || strstr(detail, "packet length too long") ||
            strstr(detail, "record layer failure"))
                snprintf(buf, len, "TLS handshake failed: the server does not speak TLS on that port (a plain HTTP "
                         "server? try http:// instead of https://)");
        else
                snprintf(buf, len, "TLS handshake failed%s%s%s: check that the server speaks TLS on that port, or "
                         "try http://", *detail ? " (" : "", detail, *detail ? ")" : "");
}

/* Failures on the way to a proxy name it and where it came from; hint says
 * what to do. A long proxy name cuts the message short, which is fine. */
static bool describe_proxy(const struct attempt *a, const struct target *t, const struct tc_ctx *ctx, char *buf,
                           size_t len, char *hint, size_t hlen) {
        const struct tc_proxy *p = &t->proxy;
        if (!p->host)
                return false;
        char where[320], why[160];
        bool v6 = strchr(p->host, ':') != NULL;
        snprintf(where, sizeof(where), "the proxy %s%s%s:%s (%s)", v6 ? "[" : "", p->host, v6 ? "]" : "", p->port, p->var);
        switch (a->outcome) {
        case CONNECT_FAILED:
                if (a->sys_errno)
                        describe_errno(a->sys_errno, why, sizeof(why));
                else
                        snprintf(why, sizeof(why), "cannot connect");
                snprintf(buf, len, "%s: %s", where, why);
                snprintf(hint, hlen, "check %s, or list the server in no_proxy", p->var);
                return true;
        case CONNECT_TIMEOUT:
                snprintf(buf, len, "%s: no connection within %.1f s", where, (double) ctx->connect_timeout_ms / 1000);
                snprintf(hint, hlen, "check %s, or list the server in no_proxy", p->var);
                return true;
        case PROXY_NOT_FOUND:
                snprintf(buf, len, "%s: host name not found", where);
                snprintf(hint, hlen, "check %s", p->var);
                return true;
        case PROXY_FAILED:
                snprintf(buf, len, "%s refused the tunnel (%.150s); check %s and no_proxy", where, a->detail, p->var);
                return true;
        case PROXY_AUTH:
                if (p->user)
                        snprintf(buf, len, "%s refused the credentials (HTTP %ld): check the user:password in %s",
                                 where, a->status, p->var);
                else
                        snprintf(buf, len, "%s asks for credentials (HTTP %ld): give them in %s as "
                                 "http://USER:PASSWORD@HOST:PORT", where, a->status, p->var);
                return true;
        default:
                return false;
        }
}

static void describe(const struct attempt *a, const struct target *t, const struct tc_ctx *ctx, char *buf,
                     size_t len, char *hint, size_t hlen) {
        if (describe_proxy(a, t, ctx, buf, len, hint, hlen))
                return;
        switch (a->outcome) {
        case TLS_FAILED:
                describe_tls(a->detail, buf, len);
                break;
        case TLS_UNTRUSTED:
                snprintf(buf, len, "TLS certificate not trusted (%s): check the URL's host name, or the CA "
                         "certificates (SSL_CERT_FILE)", a->detail);
                break;
        case CONNECT_FAILED:
                if (a->sys_errno)
                        describe_errno(a->sys_errno, buf, len);
                else
                        snprintf(buf, len, "cannot connect");
                break;
        case NOT_FOUND:
                snprintf(buf, len, "host name not found");
                break;
        case CONNECT_TIMEOUT:
                snprintf(buf, len, "no connection within %.1f s", (double) ctx->connect_timeout_ms / 1000);
                break;
        case ANSWER_TIMEOUT:
                if (a->status > 0)
                        snprintf(buf, len, "answer (HTTP %ld) not complete within %.1f s", a->status,
                                 (double) ctx->timeout_ms / 1000);
                else
                        snprintf(buf, len, "no answer within %.1f s", (double) ctx->timeout_ms / 1000);
                break;
        case CLOSED:
                if (a->sys_errno)
                        describe_errno(a->sys_errno, buf, len);
                else
                        snprintf(buf, len, "connection closed without an answer");
                break;
        case PARTIAL:
                snprintf(buf, len, "connection closed before the end of the answer");
                break;
        case NOT_HTTP:
                snprintf(buf, len, "the answer is not HTTP");
                break;
        case REDIRECT:
                snprintf(buf, len, "answered with a redirection (HTTP 301 or 302), which is not followed: give the "
                         "URL it points to");
                break;
        default:
                snprintf(buf, len, "%s", a->detail[0] ? a->detail : "HTTP failed");
        }
}

/* Sleeps ms, waking early when cancelled; returns false if cancelled. */
static bool pause_ms(const struct tc_ctx *ctx, long ms) {
        for (long slept = 0; slept < ms; slept += 20) {
                if (tc_ctx_cancelled(ctx))
                        return false;
                nanosleep(&(struct timespec) { .tv_nsec = 20 * 1000000L }, NULL);
        }
        return !tc_ctx_cancelled(ctx);
}

/* Sleeps up to ms or until the deadline, waking early when the network
 * changes; returns false if cancelled. */
static bool wait_for_network(const struct tc_ctx *ctx, int netwatch, long ms) {
        int64_t until = tc_now_ms() + ms;
        if (until > ctx->wait_until_ms)
                until = ctx->wait_until_ms;
        if (netwatch < 0)
                return pause_ms(ctx, until - tc_now_ms());
        for (int64_t now = tc_now_ms(); now < until; now = tc_now_ms()) {
                if (tc_ctx_cancelled(ctx))
                        return false;
                /* Short slices: cancellation has no file descriptor to poll. */
                if (ctx->netwatch->wait(netwatch, until - now < 50 ? (long) (until - now) : 50) != 0)
                        break;
        }
        return !tc_ctx_cancelled(ctx);
}

/* Blocks SIGPIPE in this thread while a request runs: OpenSSL writes to
 * sockets with write(), and a server that reset the connection must not
 * kill the process. One the request raised is taken back; one pending
 * before is left alone. */
struct nosigpipe {
        sigset_t old;
        bool was_pending, blocked;
};

static void nosigpipe_begin(struct nosigpipe *s) {
        sigset_t set, pending;
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        s->blocked = pthread_sigmask(SIG_BLOCK, &set, &s->old) == 0;
        sigpending(&pending);
        s->was_pending = sigismember(&pending, SIGPIPE);
}

static void nosigpipe_end(struct nosigpipe *s) {
        sigset_t set, pending;
        if (!s->blocked)
                return;
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        sigpending(&pending);
        if (!s->was_pending && sigismember(&pending, SIGPIPE))
                while (sigtimedwait(&set, NULL, &(struct timespec) {}) < 0 && errno == EINTR)
                        ;
        pthread_sigmask(SIG_SETMASK, &s->old, NULL);
}

int tc_http_request(const struct tc_ctx *ctx, const char *url, const char *body, size_t body_len,
                    const char *content_type, struct tc_http_reply *reply, struct tc_err *err) {
        _cleanup_(target_clear) struct target t = {};
        struct attempt a = { .outcome = CANCELLED };
        char why[768];
        unsigned attempt = 0;
        int r;

        memset(reply, 0, sizeof(*reply));
        if ((r = parse_target(url, ctx, &t, err)) < 0)
                return r;
        if (!content_type)
                content_type = "application/octet-stream";

        long backoff = ctx->backoff_ms;
        /* Opened before the first attempt, so that a change while it fails
         * is not missed. Without it waiting falls back to plain pauses. */
        _cleanup_close_ int netwatch = ctx->wait_until_ms && ctx->netwatch ? ctx->netwatch->open() : -1;
        struct nosigpipe sp;
        nosigpipe_begin(&sp);
        for (;;) {
                attempt++;
                tc_http_reply_clear(reply);
                /* No attempt runs past the deadline of the whole operation. */
                int64_t now = tc_now_ms(), until = now + ctx->timeout_ms;
                int64_t connect_until = now + ctx->connect_timeout_ms;
                if (ctx->deadline_ms) {
                        until = earlier(until, ctx->deadline_ms);
                        connect_until = earlier(connect_until, ctx->deadline_ms);
                }
                connect_until = earlier(connect_until, until);
                if (tc_ctx_cancelled(ctx) || until <= now) {
                        a.outcome = CANCELLED;
                        break;
                }
                exchange(&t, body, body_len, content_type, until, connect_until, ctx, reply, &a);
                if (a.outcome == ANSWERED || tc_ctx_cancelled(ctx))
                        break;
                /* Until the boot deadline anything but an HTTP answer is worth
                 * another try: whatever stands between us and the server (a
                 * proxy, a half-configured network) may yet change. */
                if (tc_now_ms() < ctx->wait_until_ms) {
                        if (!wait_for_network(ctx, netwatch, backoff))
                                break;
                        backoff = backoff * 2 > TC_WAIT_BACKOFF_MAX_MS ? TC_WAIT_BACKOFF_MAX_MS : backoff * 2;
                        continue;
                }
                /* A server that took the connection and then said nothing is
                 * there but stuck: asking it again only multiplies the wait. */
                if (!transient(a.outcome) || attempt >= ctx->attempts || a.outcome == ANSWER_TIMEOUT)
                        break;
                if (!pause_ms(ctx, backoff))
                        break;
                backoff *= 2;
        }
        nosigpipe_end(&sp);

        /* A plain HTTP proxy answers for itself when it wants credentials:
         * 407, or 401 from some (tinyproxy); tang servers ask for none. */
        if (a.outcome == ANSWERED && (a.status == 407 || a.status == 401) && t.proxy.host && !t.use_ssl)
                a.outcome = PROXY_AUTH;
        if (a.outcome == ANSWERED) {
                reply->status = a.status;
                return 0;
        }
        tc_http_reply_clear(reply);
        if (tc_ctx_cancelled(ctx) || a.outcome == CANCELLED)
                return tc_fail(err, -ECANCELED, "%s: cancelled", url);
        if (a.outcome == TOO_LARGE)
                return tc_fail(err, -EMSGSIZE, "%s: answer larger than %d bytes", url, TC_HTTP_MAX_BODY);
        if (a.outcome == HEADERS_TOO_LARGE)
                return tc_fail(err, -EMSGSIZE, "%s: answer headers larger than %d KiB: not a tang server?", url,
                               MAX_HEADER_BYTES / 1024);
        char hint[160] = "";
        describe(&a, &t, ctx, why, sizeof(why), hint, sizeof(hint));
        if (transient(a.outcome))
                return tc_fail(err, a.outcome == ANSWER_TIMEOUT || a.outcome == CONNECT_TIMEOUT ? -ETIMEDOUT : -EHOSTUNREACH,
                               "%s unreachable: %s after %u attempt%s%s%s", url, why, attempt, attempt == 1 ? "" : "s",
                               *hint ? "; " : "", hint);
        return tc_fail(err, -EHOSTUNREACH, "%s: %s", url, why);
}
