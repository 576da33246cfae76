#include "err.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The length of the valid UTF-8 sequence at p that is not a control
 * character (C1, U+0080..U+009F, included: some terminals obey them), or 0. */
static size_t printable_utf8(const unsigned char *p) {
        if (p[0] >= 0x20 && p[0] < 0x7f)
                return 1;
        if (p[0] == 0xc2)
                return p[1] >= 0xa0 && p[1] <= 0xbf ? 2 : 0;
        if (p[0] > 0xc2 && p[0] <= 0xdf)
                return (p[1] & 0xc0) == 0x80 ? 2 : 0;
        if (p[0] >= 0xe0 && p[0] <= 0xef) {
                unsigned char lo = p[0] == 0xe0 ? 0xa0 : 0x80, hi = p[0] == 0xed ? 0x9f : 0xbf;
                return p[1] >= lo && p[1] <= hi && (p[2] & 0xc0) == 0x80 ? 3 : 0;
        }
        if (p[0] >= 0xf0 && p[0] <= 0xf4) {
                unsigned char lo = p[0] == 0xf0 ? 0x90 : 0x80, hi = p[0] == 0xf4 ? 0x8f : 0xbf;
                return p[1] >= lo && p[1] <= hi && (p[2] & 0xc0) == 0x80 && (p[3] & 0xc0) == 0x80 ? 4 : 0;
        }
        return 0;
}

/* Returns the length written (without the NUL); a sequence or escape that
 * does not fit is left out whole. */
static size_t escape_into(char *dst, size_t size, const char *src) {
        const unsigned char *p = (const unsigned char *) src;
        size_t o = 0;
        if (size == 0)
                return 0;
        while (*p) {
                size_t n = printable_utf8(p);
                if (n > 0) {
                        if (o + n >= size)
                                break;
                        memcpy(dst + o, p, n);
                        o += n;
                        p += n;
                } else {
                        if (o + 4 >= size)
                                break;
                        snprintf(dst + o, size - o, "\\x%02x", *p++);
                        o += 4;
                }
        }
        dst[o] = '\0';
        return o;
}

size_t tc_escape(char *dst, size_t size, const char *src) {
        return escape_into(dst, size, src);
}

char *tc_escape_dup(const char *src) {
        size_t size = strlen(src) * 4 + 1;
        char *dst = malloc(size);
        if (dst)
                escape_into(dst, size, src);
        return dst;
}

int tc_fail(struct tc_err *err, int r, const char *fmt, ...) {
        char raw[sizeof(err->msg)];
        va_list ap;
        if (!err)
                return r;
        va_start(ap, fmt);
        vsnprintf(raw, sizeof(raw), fmt, ap);
        va_end(ap);
        escape_into(err->msg, sizeof(err->msg), raw);
        return r;
}

int tc_wrap(struct tc_err *err, int r, const char *fmt, ...) {
        char raw[256], prefix[sizeof(raw)], old[sizeof(err->msg)];
        va_list ap;
        if (!err)
                return r;
        va_start(ap, fmt);
        vsnprintf(raw, sizeof(raw), fmt, ap);
        va_end(ap);
        /* The old message is escaped already: escaping it again would
         * change nothing but cost its tail. */
        escape_into(prefix, sizeof(prefix), raw);
        memcpy(old, err->msg, sizeof(old));
        char joined[sizeof(prefix) + sizeof(old) + 2];
        snprintf(joined, sizeof(joined), "%s: %s", prefix, old);
        snprintf(err->msg, sizeof(err->msg), "%.*s", (int) sizeof(err->msg) - 1, joined);
        return r;
}
