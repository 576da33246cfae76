#include "retry.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

void tc_retry_init(struct tc_retry *r, long backoff_min_ms) {
        memset(r, 0, sizeof(*r));
        r->backoff_ms = backoff_min_ms;
}

bool tc_retry_failed(struct tc_retry *r, long backoff_max_ms, const char *msg) {
        r->next_try_ms = r->last_try_ms + r->backoff_ms;
        r->backoff_ms = r->backoff_ms * 2 > backoff_max_ms ? backoff_max_ms : r->backoff_ms * 2;
        if (strcmp(r->last_error, msg) == 0)
                return false;
        snprintf(r->last_error, sizeof(r->last_error), "%s", msg);
        return true;
}

void tc_retry_network_changed(struct tc_retry *r) {
        if (r->next_try_ms > r->last_try_ms + TC_RETRY_NETWORK_GAP_MS)
                r->next_try_ms = r->last_try_ms + TC_RETRY_NETWORK_GAP_MS;
}

void tc_retry_wake(const struct tc_retry *r, int64_t *wake_ms) {
        if (*wake_ms < 0 || r->next_try_ms < *wake_ms)
                *wake_ms = r->next_try_ms;
}

void tc_drain(int fd) {
        char buf[4096];
        while (read(fd, buf, sizeof(buf)) > 0)
                ;
}
