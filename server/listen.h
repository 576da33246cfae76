/* Where connections come from: our own sockets, systemd's, or inetd's. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define LISTEN_MAX 16

/* Binds addr:port (addr NULL: every address, dual-stack). Appends the
 * listening sockets to fds. Returns 0 or a negative errno with err set. */
int listen_open(const char *addr, const char *port, int *fds, size_t *n_fds, char *err, size_t errlen);

/* Sockets passed by systemd (LISTEN_PID/LISTEN_FDS), split into listening
 * ones (Accept=no) and an already connected one (Accept=yes). Returns the
 * number of fds found, 0 when not socket-activated. */
int listen_from_systemd(int *fds, size_t *n_fds, int *connected_fd);

bool fd_is_connected_socket(int fd);

/* sd_notify(3) without libsystemd; a no-op outside systemd. */
void notify_systemd(const char *state);
