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
#include <sys/un.h>

static int open_one(const struct addrinfo *ai, char *err, size_t errlen, const char *what) {
        int one = 1;
        _cleanup_close_ int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0) {
                snprintf(err, errlen, "cannot create a socket for %s: %s", what, strerror(errno));
                return -errno;
        }
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        /* Accepted sockets inherit this: each answer goes out at once. */
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
                int e = errno;
                snprintf(err, errlen, "cannot listen on %s: %s", what, strerror(e));
                return -e;
        }
        return TAKE_FD(fd);
}

int listen_open(const char *addr, const char *port, int *fds, size_t *n_fds, char *err, size_t errlen) {
        struct addrinfo hints = { .ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM };
        struct addrinfo *res = NULL;
        char what[300];
        int r;

        snprintf(what, sizeof(what), "%s%s%s:%s", addr && strchr(addr, ':') ? "[" : "", addr ? addr : "*",
                 addr && strchr(addr, ':') ? "]" : "", port);
        if (!addr) {
                /* One dual-stack socket for every address; IPv4 only where IPv6 is off. */
                struct sockaddr_in6 any6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_ANY_INIT };
                struct addrinfo ai6 = { .ai_family = AF_INET6, .ai_socktype = SOCK_STREAM,
                                        .ai_addr = (struct sockaddr *) &any6, .ai_addrlen = sizeof(any6) };
                any6.sin6_port = htons((uint16_t) atoi(port));
                r = open_one(&ai6, err, errlen, what);
                if (r >= 0) {
                        if (*n_fds >= LISTEN_MAX) {
                                close(r);
                                snprintf(err, errlen, "too many listening sockets");
                                return -E2BIG;
                        }
                        fds[(*n_fds)++] = r;
                        return 0;
                }
                hints.ai_family = AF_INET;
        }
        r = getaddrinfo(addr, port, &hints, &res);
        if (r != 0) {
                snprintf(err, errlen, "cannot resolve %s: %s", what, gai_strerror(r));
                return -EINVAL;
        }
        r = 0;
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
                if (*n_fds >= LISTEN_MAX) {
                        snprintf(err, errlen, "too many listening sockets");
                        r = -E2BIG;
                        break;
                }
                int fd = open_one(ai, err, errlen, what);
                if (fd < 0) {
                        r = fd;
                        break;
                }
                if (ai->ai_family == AF_INET6) {
                        int one = 1;
                        (void) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
                }
                fds[(*n_fds)++] = fd;
        }
        freeaddrinfo(res);
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
