/* tetherd's HTTP layer in-process: the raw bytes of one connection go to a
 * real libmicrohttpd daemon running server/httpd.c (inetd mode, over a
 * socketpair), with the keys of tests/fuzz/keys/. This is where request
 * framing is decided (Content-Length, Transfer-Encoding, the body cap, the
 * request deadline's bookkeeping), which server-request does not reach.
 *
 * Input: the bytes a client sends. Properties: everything the server sends
 * is HTTP/1.x responses with a status it can give, and a first request with
 * both Content-Length and Transfer-Encoding, with a head of a shape other
 * parsers read differently (bare CR or LF, NUL, obs-fold, whitespace before a
 * colon), or with a control character in its request line, is never
 * answered with success.
 * AddressSanitizer watches httpd.c's callbacks. */
#include "fuzz.h"

#include "httpd.h"
#include "keystore.h"
#include "log.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct keystore *ks;
static const struct httpd_config cfg = {
        .threads = 1,
        .connection_limit = 4,
        .timeout_s = 1,
        .per_address_limit = 2,
        .request_timeout_s = 1,
        .log_requests = false,
};

static void quiet(const char *fmt, ...) {
        (void) fmt;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        (void) argc, (void) argv;
        if (keystore_open(FUZZ_KEYDIR, false, quiet, &ks) < 0) {
                fprintf(stderr, "http-framing: cannot load the keys of %s\n", FUZZ_KEYDIR);
                abort();
        }
        /* The daemon's log (MHD's errors among it) would drown libFuzzer's
         * output; FUZZ_HTTP_LOG=1 keeps it. */
        if (!getenv("FUZZ_HTTP_LOG")) {
                int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
                FUZZ_ASSERT(fd >= 0);
                log_set_fd(fd);
        }
        return 0;
}

/* Sends data while reading what comes back, until the server closes or
 * nothing moves either way for 200 ms. The client does not half-close:
 * libmicrohttpd stops reading at end of input and then holds an unfinished
 * request until its idle timeout, which would cost each such input seconds
 * (the deadline tests in tests/integration/test_routes.py cover liveness).
 *
 * Under libFuzzer, -timeout is a SIGALRM every timeout/2 + 1 seconds,
 * installed without SA_RESTART: poll(), send() and recv() here fail with
 * EINTR whenever it lands on this thread, which says nothing about the
 * server, so each call is retried within the same 8 s bound. Sending never
 * blocks (MSG_DONTWAIT): a server that stops reading leaves the exchange
 * quiet rather than stuck in send(). */
static size_t exchange(int fd, const uint8_t *data, size_t size, char *out, size_t out_size) {
        size_t sent = 0, got = 0;
        int64_t start = tc_now_ms(), now = start, quiet_since = start;
        const int64_t end = start + 8000;       /* under run.sh's -timeout=10 */

        for (; now < end; now = tc_now_ms()) {
                /* No progress either way: the server waits for more (or
                 * will not read more before its deadline). */
                if (now - quiet_since >= 200)
                        return got;
                struct pollfd p = { .fd = fd, .events = POLLIN | (sent < size ? POLLOUT : 0) };
                int wait_ms = end - now < 50 ? (int) (end - now) : 50;
                if (poll(&p, 1, wait_ms) < 0) {
                        FUZZ_ASSERT(errno == EINTR);
                        continue;
                }
                if (p.revents & POLLOUT && sent < size) {
                        ssize_t n = send(fd, data + sent, size - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
                        if (n >= 0) {
                                sent += (size_t) n;
                                quiet_since = tc_now_ms();
                        } else if (errno != EINTR && errno != EAGAIN) {
                                sent = size;    /* hung up: read what it said */
                                quiet_since = tc_now_ms();
                        }
                }
                if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
                        ssize_t n = recv(fd, out + got, out_size - 1 - got, MSG_DONTWAIT);
                        if (n < 0 && (errno == EINTR || errno == EAGAIN))
                                continue;
                        if (n <= 0)
                                return got;     /* closed, or reset */
                        got += (size_t) n;
                        if (got == out_size - 1)
                                return got;
                        quiet_since = tc_now_ms();
                }
        }
        /* Sending a quarter MiB must not take this long. */
        FUZZ_ASSERT(!"the exchange did not end within 8 s");
        return got;
}

/* The first request's header block: up to the first blank line, if that
 * one is unambiguous (CRLF only). 0 if there is none. */
static size_t first_head(const uint8_t *data, size_t size) {
        const uint8_t *end = memmem(data, size, "\r\n\r\n", 4);
        if (!end)
                return 0;
        size_t len = (size_t) (end - data) + 2;
        for (size_t i = 0; i < len; i++)
                if ((data[i] == '\n' && (i == 0 || data[i - 1] != '\r')) ||
                    (data[i] == '\r' && data[i + 1] != '\n') || data[i] == '\0')
                        return 0;
        return len;
}

static bool has_header(const uint8_t *data, size_t size, const char *name) {
        size_t len = strlen(name);
        for (size_t i = 0; i + len + 2 < size; i++)
                if (data[i] == '\n' && strncasecmp((const char *) data + i + 1, name, len) == 0 &&
                    data[i + 1 + len] == ':')
                        return true;
        return false;
}

/* Whether the first request's head (up to the first blank line, as
 * libmicrohttpd finds it: a line end is LF, with or without CR) has a shape
 * other parsers read differently: a bare CR or LF, a NUL, a folded line,
 * whitespace before a header's colon. */
static bool odd_head(const uint8_t *data, size_t size) {
        size_t end = size;
        for (size_t i = 0; i + 1 < size; i++)
                if (data[i] == '\n' && (data[i + 1] == '\n' || (data[i + 1] == '\r' && i + 2 < size && data[i + 2] == '\n'))) {
                        end = i + 1;
                        break;
                }
        if (end == size)
                return false;       /* no whole head: nothing is answered with success anyway */
        bool in_name = false;
        for (size_t i = 0; i < end; i++) {
                uint8_t c = data[i];
                if (c == '\0' || (c == '\r' && (i + 1 >= size || data[i + 1] != '\n')) ||
                    (c == '\n' && (i == 0 || data[i - 1] != '\r')))
                        return true;
                if (c == '\n' && i + 1 < end) {
                        if (data[i + 1] == ' ' || data[i + 1] == '\t')
                                return true;
                        in_name = true;
                } else if (in_name && c == ':') {
                        if (data[i - 1] == ' ' || data[i - 1] == '\t')
                                return true;
                        in_name = false;
                }
        }
        return false;
}

/* Whether the first request line (after any empty lines, which
 * libmicrohttpd skips) holds a control character other than its line end:
 * in the target it would reach routing and logs, and a NUL there hides the
 * rest of the target from libmicrohttpd's strings. */
static bool odd_request_line(const uint8_t *data, size_t size) {
        size_t i = 0;
        while (i < size && (data[i] == '\r' || data[i] == '\n'))
                i++;
        for (; i < size && data[i] != '\n'; i++)
                if ((data[i] < 0x20 && data[i] != '\r') || data[i] == 0x7f)
                        return true;
        return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static char out[1 << 20];
        struct httpd *h = NULL;
        int sv[2];

        if (size > 256 * 1024)
                return 0;
        FUZZ_ASSERT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        if (httpd_start(&cfg, NULL, ks, -1, sv[1], -1, &h, NULL) < 0) {
                close(sv[0]);
                close(sv[1]);
                return 0;
        }
        size_t got = exchange(sv[0], data, size, out, sizeof(out));
        close(sv[0]);
        httpd_stop(h, 0);
        out[got] = '\0';

        /* Only whole status lines, with statuses tetherd gives. */
        unsigned responses = 0, first = 0;
        for (const char *p = out; (p = strstr(p, "HTTP/1.")); p += 8) {
                FUZZ_ASSERT(p[8] == ' ' && isdigit((unsigned char) p[9]));
                unsigned status = (unsigned) strtoul(p + 9, NULL, 10);
                FUZZ_ASSERT(status == 100 || (status >= 200 && status < 600));
                if (responses++ == 0)
                        first = status;
        }
        FUZZ_ASSERT(got == 0 || memcmp(out, "HTTP/1.", 7) == 0);
        /* A first request with both framings is never served. */
        size_t head = first_head(data, size);
        if (responses > 0 && head > 0 && has_header(data, head, "Content-Length") &&
            has_header(data, head, "Transfer-Encoding"))
                FUZZ_ASSERT(first >= 400 || first == 100);
        /* Nor one whose head has an ambiguous shape, or whose request line
         * holds a control character. */
        if (responses > 0 && (odd_head(data, size) || odd_request_line(data, size)))
                FUZZ_ASSERT(first >= 400 || first == 100);
        return 0;
}
