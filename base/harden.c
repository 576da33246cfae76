#include "harden.h"

#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <sys/prctl.h>
#include <sys/resource.h>

void tk_erase_free(void *p) {
        if (!p)
                return;
        /* The usable size, not the requested one: realloc may have left an
         * older, longer secret in the tail. */
        explicit_bzero(p, malloc_usable_size(p));
        free(p);
}

int tk_harden_process(void) {
        struct rlimit none = { 0, 0 }, cur;
        int r = 0;

        json_set_alloc_funcs(malloc, tk_erase_free);
        /* Under systemd's SystemCallFilter=~@resources setrlimit() fails,
         * and LimitCORE=0 has done it already. */
        if (setrlimit(RLIMIT_CORE, &none) < 0 && (getrlimit(RLIMIT_CORE, &cur) < 0 || cur.rlim_cur != 0))
                r = -errno;
        if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
                r = -errno;
        return r;
}
