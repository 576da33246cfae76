#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/crypto.h>

int64_t tc_now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t tc_realtime_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void tc_secret_free(void *p, size_t len) {
        if (!p)
                return;
        OPENSSL_cleanse(p, len);
        free(p);
}

int tc_secret_grow(uint8_t **buf, size_t len, size_t *cap, size_t max) {
        size_t want = *cap ? *cap * 2 : 4096;
        if (want > max)
                return -EMSGSIZE;
        /* Not realloc(): it could leave a copy of the secret in freed memory. */
        uint8_t *nb = malloc(want);
        if (!nb)
                return -ENOMEM;
        if (len > 0)
                memcpy(nb, *buf, len);
        tc_secret_free(*buf, *cap);
        *buf = nb;
        *cap = want;
        return 0;
}

bool tc_has_suffix(const char *s, const char *suffix) {
        size_t n = strlen(s), m = strlen(suffix);
        return n >= m && memcmp(s + n - m, suffix, m) == 0;
}
