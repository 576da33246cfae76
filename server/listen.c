#include "listen.h"
#include "cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

/* Binds and listens on one address. v6only matters for IPv6 only, and must
 * be set before bind(): afterwards the kernel refuses to change it. */
static int open_one(const struct addrinfo *ai, bool v6only, const char *what, struct tc_err *err) {
        int one = 1, v6 = v6only;
        _cleanup_close_ int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0)
                return tc_fail(err, -errno, "cannot create a socket for %s: %s", what, strerror(errno));
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        /* Accepted sockets inherit this: each answer goes out at once. */
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (ai->ai_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6, sizeof(v6)) < 0)
                return tc_fail(err, -errno, "cannot set IPV6_V6ONLY on %s: %s", what, strerror(errno));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 4096) < 0)
                return tc_fail(err, -errno, "cannot listen on %s: %s", what, strerror(errno));
        return TAKE_FD(fd);
}

static int add_fd(int fd, int *fds, size_t *n_fds, struct tc_err *err) {
        if (*n_fds >= LISTEN_MAX) {
                close(fd);
                return tc_fail(err, -E2BIG, "too many listening sockets (at most %d)", LISTEN_MAX);
        }
        fds[(*n_fds)++] = fd;
        return 0;
}

static void describe(const char *addr, const char *port, char *what, size_t len) {
        bool v6 = addr && strchr(addr, ':');
        snprintf(what, len, "%s%s%s:%s", v6 ? "[" : "", addr ? addr : "*", v6 ? "]" : "", port);
}

/* No address asked for: one dual-stack socket for every address, whatever
 * net.ipv6.bindv6only says; IPv4 only where the host has no IPv6. */
static int open_wildcard(const char *port, int *fds, size_t *n_fds, struct tc_err *err) {
        struct sockaddr_in6 any6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_ANY_INIT,
                                     .sin6_port = htons((uint16_t) atoi(port)) };
        struct sockaddr_in any4 = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY),
                                    .sin_port = any6.sin6_port };
        struct addrinfo ai6 = { .ai_family = AF_INET6, .ai_socktype = SOCK_STREAM,
                                .ai_addr = (struct sockaddr *) &any6, .ai_addrlen = sizeof(any6) };
        struct addrinfo ai4 = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM,
                                .ai_addr = (struct sockaddr *) &any4, .ai_addrlen = sizeof(any4) };
        char what[64];

        describe(NULL, port, what, sizeof(what));
        int fd = open_one(&ai6, false, what, err);
        /* Only a missing IPv6 stack falls back: a port in use on [::] must
         * not quietly become an IPv4-only server. */
        if (fd == -EAFNOSUPPORT || fd == -EADDRNOTAVAIL)
                fd = open_one(&ai4, false, what, err);
        if (fd < 0)
                return fd;
        return add_fd(fd, fds, n_fds, err);
}

static int resolve(const char *addr, const char *port, struct addrinfo **ret, struct tc_err *err) {
        struct addrinfo hints = { .ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM };
        char what[300];

        describe(addr, port, what, sizeof(what));
        errno = 0;
        int r = getaddrinfo(addr, port, &hints, ret);
        if (r == 0)
                return 0;
        int e = errno;
        *ret = NULL;
        return tc_fail(err, r == EAI_SYSTEM && e ? -e : -EINVAL, "cannot resolve %s: %s", what,
                       r == EAI_SYSTEM && e ? strerror(e) : gai_strerror(r));
}

int listen_open(const char *const *addrs, size_t n_addrs, const char *port, int *fds, size_t *n_fds,
                struct tc_err *err) {
        struct addrinfo *res[LISTEN_MAX] = {};
        bool any_ipv4 = false;
        int r = 0;

        if (n_addrs == 0)
                return open_wildcard(port, fds, n_fds, err);
        if (n_addrs > LISTEN_MAX)
                return tc_fail(err, -E2BIG, "too many addresses (at most %d)", LISTEN_MAX);
        for (size_t i = 0; i < n_addrs && r == 0; i++) {
                r = resolve(addrs[i], port, &res[i], err);
                for (const struct addrinfo *ai = res[i]; ai; ai = ai->ai_next)
                        any_ipv4 |= ai->ai_family == AF_INET;
        }
        /* "::" alone serves IPv4 too (dual stack); next to an IPv4 address on
         * the same port it must not, or that address's bind finds the port
         * taken. A v4-mapped address cannot be IPv6-only. */
        for (size_t i = 0; i < n_addrs && r == 0; i++) {
                char what[300];
                describe(addrs[i], port, what, sizeof(what));
                for (const struct addrinfo *ai = res[i]; ai && r == 0; ai = ai->ai_next) {
                        bool mapped = ai->ai_family == AF_INET6 &&
                                IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *) ai->ai_addr)->sin6_addr);
                        int fd = open_one(ai, any_ipv4 && !mapped, what, err);
                        r = fd < 0 ? fd : add_fd(fd, fds, n_fds, err);
                }
        }
        for (size_t i = 0; i < n_addrs; i++)
                if (res[i])
                        freeaddrinfo(res[i]);
        return r;
}

bool fd_is_connected_socket(int fd) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int listening = 0;
        socklen_t l = sizeof(listening);

        if (getpeername(fd, (struct sockaddr *) &ss, &len) < 0)
                return false;
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &l) == 0 && listening)
                return false;
        return true;
}

enum stdin_role stdin_role(int fd, const char **what) {
        struct stat st;

        *what = NULL;
        if (fstat(fd, &st) < 0)
                return STDIN_NOTHING;   /* closed */
        if (S_ISCHR(st.st_mode))
                return STDIN_NOTHING;   /* a terminal, /dev/null */
        if (S_ISSOCK(st.st_mode)) {
                if (fd_is_connected_socket(fd))
                        return STDIN_CONNECTION;
                *what = "an unconnected socket";
        } else if (S_ISFIFO(st.st_mode))
                *what = "a pipe";
        else if (S_ISREG(st.st_mode))
                *what = "a regular file";
        else
                *what = "neither a terminal nor a socket";
        return STDIN_FILTER;
}

int listen_from_systemd(int *fds, size_t *n_fds, int *connected_fd) {
        const char *pid = getenv("LISTEN_PID"), *n = getenv("LISTEN_FDS");
        int count = 0;

        *connected_fd = -1;
        if (!pid || !n || atol(pid) != (long) getpid())
                return 0;
        count = atoi(n);
        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_FDNAMES");
        for (int fd = 3; fd < 3 + count; fd++) {
                (void) fcntl(fd, F_SETFD, FD_CLOEXEC);
                if (fd_is_connected_socket(fd)) {
                        if (*connected_fd < 0)
                                *connected_fd = fd;
                        continue;
                }
                if (*n_fds < LISTEN_MAX)
                        fds[(*n_fds)++] = fd;
        }
        return count;
}

void notify_systemd(const char *state) {
        const char *path = getenv("NOTIFY_SOCKET");
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        size_t len;

        if (!path || (path[0] != '/' && path[0] != '@') || (len = strlen(path)) >= sizeof(sa.sun_path))
                return;
        memcpy(sa.sun_path, path, len);
        if (sa.sun_path[0] == '@')
                sa.sun_path[0] = '\0';   /* abstract namespace */
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return;
        (void) sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *) &sa,
                      (socklen_t) (offsetof(struct sockaddr_un, sun_path) + len));
}
