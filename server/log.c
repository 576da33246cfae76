#include "log.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int log_fd = STDERR_FILENO;

void log_set_fd(int fd) {
        log_fd = fd;
}

void log_line(const char *fmt, ...) {
        char buf[1024];
        va_list ap;

        va_start(ap, fmt);
        int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
        va_end(ap);
        if (n < 0)
                return;
        if ((size_t) n > sizeof(buf) - 2)
                n = sizeof(buf) - 2;
        buf[n++] = '\n';
        (void) !write(log_fd, buf, (size_t) n);
}

char *log_sanitize(char *dst, size_t size, const char *src, bool keep_spaces) {
        size_t i = 0, j = 0;

        assert(size >= 4);
        for (; src[i] && j < size - 4; i++) {
                unsigned char c = (unsigned char) src[i];
                dst[j++] = (c > 0x20 && c < 0x7f) || (c == ' ' && keep_spaces) ? (char) c : '?';
        }
        if (src[i])
                memcpy(dst + j, "...", 3), j += 3;
        dst[j] = '\0';
        return dst;
}
