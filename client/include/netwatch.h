/* Waiting for the network to change: at boot a server is unreachable until
 * an address and a route appear, and the moment they do is the moment to
 * try again, not the end of some fixed pause. */
#pragma once

#include "ctx.h"

/* A netlink socket subscribed to link, address and route changes, or -errno. */
int tc_netwatch_open(void);
/* Waits up to ms for a change. Returns 1 on a change (events drained), 0 on
 * timeout, -errno on error. */
int tc_netwatch_wait(int fd, long ms);

/* The two above, for tc_ctx.netwatch. */
extern const struct tc_netwatch_ops tc_boot_netwatch;
