/* How the password agents (askpass.c for systemd's questions, passfifo.c for
 * cryptroot's askpass) pace their tries of a volume whose servers are
 * unreachable: a backoff that doubles up to a bound, cut short as soon as
 * the network changes, and each new error reported once. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* After the network changes, a volume is tried again no sooner than this
 * after its last try: address, route and link events come in bursts. */
#define TC_RETRY_NETWORK_GAP_MS 200

struct tc_retry {
        long backoff_ms;                 /* the pause after the next failure */
        int64_t last_try_ms, next_try_ms; /* tc_now_ms() times; the caller sets last_try_ms */
        char last_error[512];            /* reported once, not on every retry */
};

void tc_retry_init(struct tc_retry *r, long backoff_min_ms);
/* The try at last_try_ms failed with msg: the next is due backoff_ms later,
 * and the backoff doubles, up to backoff_max_ms. True if msg is not the
 * last failure's (worth reporting). */
bool tc_retry_failed(struct tc_retry *r, long backoff_max_ms, const char *msg);
/* The network changed: due TC_RETRY_NETWORK_GAP_MS after the last try, if
 * not sooner. */
void tc_retry_network_changed(struct tc_retry *r);
/* Lowers *wake_ms (-1: none yet) to r's next try. */
void tc_retry_wake(const struct tc_retry *r, int64_t *wake_ms);

/* Reads a non-blocking fd (inotify, eventfd, netlink) until it is empty:
 * only that something happened matters. */
void tc_drain(int fd);
