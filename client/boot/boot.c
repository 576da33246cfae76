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

void tc_boot_policy_for(const char *env_seconds, bool initrd, const char *cmdline_timeout, struct tc_boot_policy *p) {
        *p = (struct tc_boot_policy) {};
        if (env_seconds && *env_seconds) {
                long ms = tc_parse_seconds(env_seconds);
                p->wait_ms = ms < 0 ? TC_BOOT_WAIT_DEFAULT_MS : ms;
                return;
        }
        if (!initrd)
                return;
        /* The wait before the prompt is the user's choice only: by default
         * the prompt comes at once and the agent behind it does the waiting. */
        long ms = cmdline_timeout ? tc_parse_seconds(cmdline_timeout) : -1;
        if (ms > 0)
                p->wait_ms = ms;
        else
                p->limit_ms = TC_BOOT_TRY_MS;
}

void tc_boot_policy(const char *env_seconds, struct tc_boot_policy *p) {
        bool initrd = access("/etc/initrd-release", F_OK) >= 0;
        _cleanup_free_ char *v = initrd && !(env_seconds && *env_seconds) ? cmdline_value("rd.tether.timeout") : NULL;
        tc_boot_policy_for(env_seconds, initrd, v, p);
}
