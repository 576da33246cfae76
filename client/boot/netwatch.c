#include "netwatch.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

int tc_netwatch_open(void) {
        int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);
        if (fd < 0)
                return -errno;
        struct sockaddr_nl sa = {
                .nl_family = AF_NETLINK,
                .nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE |
                             RTMGRP_IPV6_ROUTE,
        };
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

int tc_netwatch_wait(int fd, long ms) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int n = poll(&p, 1, (int) (ms < 0 ? 0 : ms));
        if (n < 0)
                return errno == EINTR ? 0 : -errno;
        if (n == 0)
                return 0;
        char buf[8192];
        /* What changed does not matter, only that something did. An overrun
         * (ENOBUFS) also means changes. */
        while (recv(fd, buf, sizeof(buf), 0) > 0 || errno == ENOBUFS)
                ;
        return 1;
}

const struct tc_netwatch_ops tc_boot_netwatch = {
        .open = tc_netwatch_open,
        .wait = tc_netwatch_wait,
};
