#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/crypto.h>

int64_t tc_now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void tc_secret_free(void *p, size_t len) {
        if (!p)
                return;
        OPENSSL_cleanse(p, len);
        free(p);
}

bool tc_has_suffix(const char *s, const char *suffix) {
        size_t n = strlen(s), m = strlen(suffix);
        return n >= m && memcmp(s + n - m, suffix, m) == 0;
}
