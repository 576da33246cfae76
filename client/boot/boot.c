#include "boot.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"

long tc_parse_seconds(const char *s) {
        char *end;
        errno = 0;
        double v = strtod(s, &end);
        if (errno || end == s || *end || !(v >= 0) || v > 3600)
                return -1;
        return (long) (v * 1000);
}

/* The value of OPTION= on the kernel command line, or NULL. */
static char *cmdline_value(const char *option) {
        _cleanup_fclose_ FILE *f = fopen("/proc/cmdline", "re");
        char line[4096];
        if (!f || !fgets(line, sizeof(line), f))
                return NULL;
        size_t n = strlen(option);
        char *found = NULL, *save = NULL;
        /* The last occurrence wins, as for systemd's options. */
        for (char *w = strtok_r(line, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save))
                if (strncmp(w, option, n) == 0 && w[n] == '=')
                        found = w + n + 1;
        return found ? strdup(found) : NULL;
}

long tc_boot_wait_ms(const char *seconds) {
        if (seconds && *seconds) {
                long ms = tc_parse_seconds(seconds);
                return ms < 0 ? TC_BOOT_WAIT_DEFAULT_MS : ms;
        }
        if (access("/etc/initrd-release", F_OK) < 0)
                return 0;
        _cleanup_free_ char *v = cmdline_value("rd.tether.timeout");
        long ms = v ? tc_parse_seconds(v) : -1;
        return ms < 0 ? TC_BOOT_WAIT_DEFAULT_MS : ms;
}
