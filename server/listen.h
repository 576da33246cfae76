/* Where connections come from: our own sockets, systemd's, or inetd's. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include "err.h"

#define LISTEN_MAX 16

/* Binds every address in addrs on port (none: every address, dual stack),
 * appending the listening sockets to fds. An IPv6 socket is dual stack
 * unless an IPv4 address is also asked for. Returns 0 or a negative errno
 * with err set; on failure fds may hold the sockets already opened. */
int listen_open(const char *const *addrs, size_t n_addrs, const char *port, int *fds, size_t *n_fds,
                struct tc_err *err);

/* Sockets passed by systemd (LISTEN_PID/LISTEN_FDS), split into listening
 * ones (Accept=no) and an already connected one (Accept=yes). Returns the
 * number of fds found, 0 when not socket-activated. */
int listen_from_systemd(int *fds, size_t *n_fds, int *connected_fd);

bool fd_is_connected_socket(int fd);

/* What standard input says about how we were started: a connection to serve
 * (inetd), nothing (a terminal, /dev/null, closed: a daemon or an operator
 * at a shell), or a filter's input (a pipe, a file), named in *what. */
enum stdin_role { STDIN_NOTHING, STDIN_CONNECTION, STDIN_FILTER };
enum stdin_role stdin_role(int fd, const char **what);

/* sd_notify(3) without libsystemd; a no-op outside systemd. */
void notify_systemd(const char *state);
