#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int tc_fail(struct tc_err *err, int r, const char *fmt, ...) {
        va_list ap;
        if (!err)
                return r;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        return r;
}

int tc_wrap(struct tc_err *err, int r, const char *fmt, ...) {
        char prefix[256], old[sizeof(err->msg)];
        va_list ap;
        if (!err)
                return r;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof(prefix), fmt, ap);
        va_end(ap);
        memcpy(old, err->msg, sizeof(old));
        char joined[sizeof(prefix) + sizeof(old) + 2];
        snprintf(joined, sizeof(joined), "%s: %s", prefix, old);
        snprintf(err->msg, sizeof(err->msg), "%.*s", (int) sizeof(err->msg) - 1, joined);
        return r;
}
