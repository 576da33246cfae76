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

/* The code point of a valid sequence of n bytes that is invisible or
 * changes how the text around it is shown, or 0: the Arabic letter mark,
 * zero-width characters and directional marks (U+200B..U+200F), line and
 * paragraph separators, bidi embeddings and overrides (U+2028..U+202E), the
 * word joiner, invisible operators and bidi isolates (U+2060..U+206F) and
 * the zero-width no-break space. Text around them could be reordered or
 * hidden: "https://evil\u{202e}moc.elpmaxe" shows as another host. */
static unsigned format_char(const unsigned char *p, size_t n) {
        unsigned cp;
        if (n == 2)
                cp = (unsigned) (p[0] & 0x1f) << 6 | (p[1] & 0x3f);
        else if (n == 3)
                cp = (unsigned) (p[0] & 0x0f) << 12 | (unsigned) (p[1] & 0x3f) << 6 | (p[2] & 0x3f);
        else
                return 0;
        if (cp == 0x061c || (cp >= 0x200b && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202e) ||
            (cp >= 0x2060 && cp <= 0x206f) || cp == 0xfeff)
                return cp;
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
                unsigned cp = format_char(p, n);
                if (cp) {
                        /* "\u{202e}": 8 bytes for 2 or 3, within 4 per byte. */
                        if (o + 8 >= size)
                                break;
                        snprintf(dst + o, size - o, "\\u{%04x}", cp);
                        o += 8;
                        p += n;
                } else if (n > 0) {
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

/* A message cut to fit ends in "...", on a character boundary, so that the
 * reader knows there was more. */
static void mark_cut(char *msg, size_t len, bool cut) {
        if (!cut || len < 3)
                return;
        size_t at = len - 3;
        while (at > 0 && ((unsigned char) msg[at] & 0xc0) == 0x80)
                at--;
        memcpy(msg + at, "...", 4);
}

/* Longest message formatted before escaping. */
#define FORMAT_MAX 1024

size_t tc_vformat(char *dst, size_t size, const char *fmt, va_list ap) {
        char raw[FORMAT_MAX];
        if (size == 0)
                return 0;
        int n = vsnprintf(raw, sizeof(raw), fmt, ap);
        if (n < 0)
                raw[0] = '\0';
        size_t len = escape_into(dst, size, raw);
        mark_cut(dst, len, n >= (int) sizeof(raw) || len + 1 >= size);
        return strlen(dst);
}

size_t tc_format(char *dst, size_t size, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        size_t len = tc_vformat(dst, size, fmt, ap);
        va_end(ap);
        return len;
}

int tc_fail(struct tc_err *err, int r, const char *fmt, ...) {
        va_list ap;
        if (!err)
                return r;
        va_start(ap, fmt);
        tc_vformat(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        return r;
}

int tc_wrap(struct tc_err *err, int r, const char *fmt, ...) {
        char prefix[256], old[sizeof(err->msg)];
        va_list ap;
        if (!err)
                return r;
        va_start(ap, fmt);
        tc_vformat(prefix, sizeof(prefix), fmt, ap);
        va_end(ap);
        /* The old message is escaped already: escaping it again would
         * change nothing but cost its tail. */
        memcpy(old, err->msg, sizeof(old));
        int n = snprintf(err->msg, sizeof(err->msg), "%s: %s", prefix, old);
        mark_cut(err->msg, strlen(err->msg), n >= (int) sizeof(err->msg));
        return r;
}
