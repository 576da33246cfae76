#include "http.h"
#include "cleanup.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <curl/curl.h>

struct transfer {
        struct tc_http_reply *reply;
        const struct tc_ctx *ctx;
        bool too_large;
};

static size_t collect(char *data, size_t size, size_t nmemb, void *userdata) {
        struct transfer *t = userdata;
        struct tc_http_reply *reply = t->reply;
        size_t n = size * nmemb;

        if (reply->len + n > TC_HTTP_MAX_BODY) {
                t->too_large = true;
                return 0;   /* makes curl fail with CURLE_WRITE_ERROR */
        }
        char *nb = realloc(reply->body, reply->len + n + 1);
        if (!nb)
                return 0;
        memcpy(nb + reply->len, data, n);
        reply->body = nb;
        reply->len += n;
        reply->body[reply->len] = '\0';
        return n;
}

static int progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
        struct transfer *t = userdata;
        (void) dltotal, (void) dlnow, (void) ultotal, (void) ulnow;
        return tc_ctx_cancelled(t->ctx) ? 1 : 0;
}

void tc_http_reply_clear(struct tc_http_reply *reply) {
        free(reply->body);
        memset(reply, 0, sizeof(*reply));
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* Errors worth another attempt: the server was not there (yet), as at boot
 * while the network comes up. */
static bool transient(CURLcode cr) {
        return cr == CURLE_COULDNT_CONNECT || cr == CURLE_COULDNT_RESOLVE_HOST || cr == CURLE_COULDNT_RESOLVE_PROXY ||
               cr == CURLE_OPERATION_TIMEDOUT || cr == CURLE_GOT_NOTHING || cr == CURLE_SEND_ERROR ||
               cr == CURLE_RECV_ERROR;
}

/* A socket error as a message reads: "connection refused". A reset gets its
 * own words, the same whether curl saw it while connecting or after. */
static void describe_errno(long os_errno, char *buf, size_t len) {
        if (os_errno == ECONNRESET) {
                snprintf(buf, len, "connection reset by the server");
                return;
        }
        snprintf(buf, len, "%s", strerror((int) os_errno));
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

static void describe(CURL *curl, CURLcode cr, const char *detail, const struct tc_ctx *ctx, char *buf, size_t len) {
        long os_errno = 0;
        curl_easy_getinfo(curl, CURLINFO_OS_ERRNO, &os_errno);
        switch (cr) {
        case CURLE_SSL_CONNECT_ERROR:
                describe_tls(detail, buf, len);
                break;
        case CURLE_COULDNT_CONNECT:
                if (os_errno)
                        describe_errno(os_errno, buf, len);
                else
                        snprintf(buf, len, "cannot connect");
                break;
        case CURLE_COULDNT_RESOLVE_HOST:
                snprintf(buf, len, "host name not found");
                break;
        case CURLE_OPERATION_TIMEDOUT: {
                curl_off_t connected = 0;
                long status = 0;
                curl_easy_getinfo(curl, CURLINFO_CONNECT_TIME_T, &connected);
                curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
                if (connected == 0)
                        snprintf(buf, len, "no connection within %.1f s", (double) ctx->connect_timeout_ms / 1000);
                else if (status > 0)
                        snprintf(buf, len, "answer (HTTP %ld) not complete within %.1f s", status,
                                 (double) ctx->timeout_ms / 1000);
                else
                        snprintf(buf, len, "no answer within %.1f s", (double) ctx->timeout_ms / 1000);
                break;
        }
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
                /* curl's own text ("Failure when receiving data from the
                 * peer") hides the cause, usually a server that reset us. */
                if (os_errno)
                        describe_errno(os_errno, buf, len);
                else
                        snprintf(buf, len, "%s", curl_easy_strerror(cr));
                break;
        case CURLE_PARTIAL_FILE:
                snprintf(buf, len, "connection closed before the end of the answer");
                break;
        case CURLE_COULDNT_RESOLVE_PROXY:
                snprintf(buf, len, "proxy host name not found (check http_proxy)");
                break;
        case CURLE_UNSUPPORTED_PROTOCOL:
        case CURLE_WEIRD_SERVER_REPLY: {
                /* Both also mean a URL scheme curl will not use. */
                curl_off_t connected = 0;
                curl_easy_getinfo(curl, CURLINFO_CONNECT_TIME_T, &connected);
                snprintf(buf, len, "%s", connected > 0 ? "the answer is not HTTP" : curl_easy_strerror(cr));
                break;
        }
        case CURLE_GOT_NOTHING:
                snprintf(buf, len, "connection closed without an answer");
                break;
        default:
                snprintf(buf, len, "%s", curl_easy_strerror(cr));
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

/* No attempt runs past the deadline of the whole operation: curl's progress
 * callback, which sees it, may come only once a second. Returns false when
 * no time is left. */
static bool cap_by_deadline(CURL *curl, const struct tc_ctx *ctx) {
        long timeout = ctx->timeout_ms, connect = ctx->connect_timeout_ms;
        if (tc_ctx_cancelled(ctx))
                return false;
        if (ctx->deadline_ms) {
                int64_t left = ctx->deadline_ms - tc_now_ms();
                if (left <= 0)
                        return false;
                if (left < timeout)
                        timeout = (long) left;
                if (left < connect)
                        connect = (long) left;
        }
        curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout);
        curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, connect);
        return true;
}

int tc_http_request(const struct tc_ctx *ctx, const char *url, const char *body, size_t body_len,
                    const char *content_type, struct tc_http_reply *reply, struct tc_err *err) {
        struct curl_slist *headers = NULL;
        char ct[128], why[512], detail[CURL_ERROR_SIZE] = "";
        struct transfer t = { .reply = reply, .ctx = ctx };
        CURLcode cr = CURLE_OK;
        unsigned attempt = 0;
        int r = 0;

        memset(reply, 0, sizeof(*reply));
        pthread_once(&curl_once, curl_init_once);
        CURL *curl = curl_easy_init();
        if (!curl)
                return tc_fail(err, -ENOMEM, "cannot initialize HTTP");
        curl_easy_setopt(curl, CURLOPT_URL, url);
        curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, detail);
        curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, &t);
        curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, progress);
        curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &t);
        curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
        if (body) {
                snprintf(ct, sizeof(ct), "Content-Type: %s", content_type ? content_type : "application/octet-stream");
                headers = curl_slist_append(headers, ct);
                /* Tang never answers Expect: 100-continue; don't wait for it. */
                headers = curl_slist_append(headers, "Expect:");
                curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
                curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
                curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long) body_len);
        }

        long backoff = ctx->backoff_ms;
        /* Opened before the first attempt, so that a change while it fails
         * is not missed. Without it waiting falls back to plain pauses. */
        _cleanup_close_ int netwatch = ctx->wait_until_ms && ctx->netwatch ? ctx->netwatch->open() : -1;
        for (;;) {
                attempt++;
                tc_http_reply_clear(reply);
                if (!cap_by_deadline(curl, ctx)) {
                        cr = CURLE_ABORTED_BY_CALLBACK;
                        break;
                }
                cr = curl_easy_perform(curl);
                if (cr == CURLE_OK || tc_ctx_cancelled(ctx))
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
                if (!transient(cr) || attempt >= ctx->attempts)
                        break;
                /* A server that took the connection and then said nothing is
                 * there but stuck: asking it again only multiplies the wait. */
                curl_off_t connected = 0;
                curl_easy_getinfo(curl, CURLINFO_CONNECT_TIME_T, &connected);
                if (cr == CURLE_OPERATION_TIMEDOUT && connected > 0)
                        break;
                if (!pause_ms(ctx, backoff))
                        break;
                backoff *= 2;
        }

        if (cr == CURLE_OK)
                curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply->status);
        else {
                if (tc_ctx_cancelled(ctx))
                        r = tc_fail(err, -ECANCELED, "%s: cancelled", url);
                else if (t.too_large)
                        r = tc_fail(err, -EMSGSIZE, "%s: answer larger than %d bytes", url, TC_HTTP_MAX_BODY);
                else {
                        describe(curl, cr, detail, ctx, why, sizeof(why));
                        if (transient(cr))
                                r = tc_fail(err, cr == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -EHOSTUNREACH,
                                            "%s unreachable: %s after %u attempt%s", url, why, attempt,
                                            attempt == 1 ? "" : "s");
                        else
                                r = tc_fail(err, -EHOSTUNREACH, "%s: %s", url, why);
                }
                tc_http_reply_clear(reply);
        }
        curl_slist_free_all(headers);
        curl_easy_cleanup(curl);
        return r;
}
