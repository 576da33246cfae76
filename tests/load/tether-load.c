/* tether-load: the load driver of tests/load/run.py.
 *
 *   tether-load churn  --url URL --keydir DIR [--seconds N] [--clients N] [--rotate-ms N] [--keep-hidden]
 *   tether-load reboot --url URL --server-pid PID [--clients N] [--stack-kb N]
 *
 * Exit status: 0 when every check held, 1 when one failed, 2 when the run
 * itself could not be set up. Loopback URLs only. */
#include "load.h"

#include <stdio.h>
#include <string.h>

static int usage(void) {
        fprintf(stderr,
                "Usage: tether-load churn  --url URL --keydir DIR [--seconds N] [--clients N] [--rotate-ms N]\n"
                "                          [--keep-hidden]\n"
                "       tether-load reboot --url URL --server-pid PID [--clients N] [--stack-kb N]\n");
        return 2;
}

int main(int argc, char **argv) {
        if (argc < 2)
                return usage();
        if (strcmp(argv[1], "churn") == 0)
                return load_churn_main(argc - 1, argv + 1);
        if (strcmp(argv[1], "reboot") == 0)
                return load_reboot_main(argc - 1, argv + 1);
        return usage();
}
