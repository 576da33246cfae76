/* tether-askpass: a systemd password agent answering disk passphrase
 * questions for volumes with tether/clevis bindings; with --cryptroot, the
 * same for Debian's cryptroot (initramfs-tools), through its passfifo. A
 * shell over the client library's agents (client/include/askpass.h,
 * passfifo.h): options, logging, signals. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "askpass.h"
#include "boot.h"
#include "environment.h"
#include "passfifo.h"
#include "usage.h"

static struct tc_ctx ctx;

static void on_signal(int sig) {
        (void) sig;
        tc_ctx_cancel(&ctx);
}

/* To the journal with a priority when systemd runs us, else plain. */
static void log_event(void *data, enum tc_agent_event e, const char *msg) {
        bool journal = *(bool *) data;
        int priority = e == TC_AGENT_RETRYING || e == TC_AGENT_REFUSED || e == TC_AGENT_BAD_QUESTION ? 4 : 6;
        if (journal)
                fprintf(stderr, "<%d>%s\n", priority, msg);
        else
                fprintf(stderr, "tether-askpass: %s\n", msg);
}

/* --cryptroot: the volumes from crypttab and cryptopts=, then the agent. */
static int run_cryptroot(struct tc_passfifo_opts *po, const struct tc_agent_opts *o, const char *crypttab,
                         const char *cmdline) {
        struct tc_crypt_volumes volumes = {};
        struct tc_err err = {};
        /* A volume not read here is still answered when it is asked for
         * (its askpass names it): say why, and go on. */
        if (tc_crypt_volumes_read(crypttab, cmdline, &volumes, &err) < 0)
                o->report(o->report_data, TC_AGENT_BAD_QUESTION, err.msg);
        po->volumes = &volumes;
        po->backoff_min_ms = o->backoff_min_ms;
        po->backoff_max_ms = o->backoff_max_ms;
        po->linger_ms = o->linger_ms;
        po->report = o->report;
        po->report_data = o->report_data;
        int r = tc_passfifo_run(&ctx, po, &err);
        tc_crypt_volumes_clear(&volumes);
        if (r < 0) {
                fprintf(stderr, "tether-askpass: %s\n", err.msg);
                return 1;
        }
        return 0;
}

static const struct usage usage = {
        .prog = "tether-askpass",
        .text = "Usage: tether-askpass [-d DIR] [--retry-max SECONDS] [--linger SECONDS]\n"
                "       tether-askpass --cryptroot [--fifo PATH] [--crypttab PATH] [--cmdline PATH] ...\n"
                "Answers systemd's disk passphrase questions for volumes bound with tether or\n"
                "Clevis, trying unreachable servers again until the question is answered or\n"
                "withdrawn. Exits when no question is left.\n"
                "With --cryptroot (Debian's initramfs-tools), recovers the keys of the volumes\n"
                "cryptroot will ask for, all at once, and writes each into cryptroot's askpass\n"
                "FIFO when that volume is asked for; the prompt stays usable meanwhile.\n"
                "  -d, --dir DIR          questions directory (default " TC_ASK_DIR ")\n"
                "      --cryptroot        answer cryptroot's askpass instead\n"
                "      --fifo PATH        its FIFO (default " TC_PASSFIFO ")\n"
                "      --crypttab PATH    the volumes to unlock (default " TC_CRYPTROOT_CRYPTTAB ")\n"
                "      --cmdline PATH     where cryptopts= are read (default /proc/cmdline)\n"
                "      --retry-max S      longest pause between tries (default 8)\n"
                "      --linger S         stay after an answer, for a re-ask (default 60)\n"
                "  -h, --help             this help\n"
                "      --version          print the version and exit\n",
};

int main(int argc, char **argv) {
        enum { OPT_RETRY_MAX = 256, OPT_LINGER, OPT_VERSION, OPT_CRYPTROOT, OPT_FIFO, OPT_CRYPTTAB, OPT_CMDLINE };
        static const struct option options[] = {
                { "dir", required_argument, NULL, 'd' },
                { "cryptroot", no_argument, NULL, OPT_CRYPTROOT },
                { "fifo", required_argument, NULL, OPT_FIFO },
                { "crypttab", required_argument, NULL, OPT_CRYPTTAB },
                { "cmdline", required_argument, NULL, OPT_CMDLINE },
                { "retry-max", required_argument, NULL, OPT_RETRY_MAX },
                { "linger", required_argument, NULL, OPT_LINGER },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, OPT_VERSION },
                {},
        };
        bool journal = getenv("JOURNAL_STREAM") != NULL;
        struct tc_agent_opts o = {
                .backoff_min_ms = 500,
                .backoff_max_ms = 8000,
                .linger_ms = 60000,
                .report = log_event,
                .report_data = &journal,
        };
        struct tc_passfifo_opts po = {};
        const char *crypttab = TC_CRYPTROOT_CRYPTTAB, *cmdline = "/proc/cmdline";
        bool cryptroot = false, cryptroot_only = false;
        struct tc_err err = {};
        int c;

        while ((c = usage_getopt(&usage, argc, argv, "d:h", options)) >= 0) {
                long ms;
                switch (c) {
                case 'd':
                        o.dir = optarg;
                        break;
                case OPT_CRYPTROOT:
                        cryptroot = true;
                        break;
                case OPT_FIFO:
                        po.fifo = optarg;
                        cryptroot_only = true;
                        break;
                case OPT_CRYPTTAB:
                        crypttab = optarg;
                        cryptroot_only = true;
                        break;
                case OPT_CMDLINE:
                        cmdline = optarg;
                        cryptroot_only = true;
                        break;
                case OPT_RETRY_MAX:
                case OPT_LINGER:
                        ms = tc_parse_seconds(optarg);
                        if (ms < 0 || (c == OPT_RETRY_MAX && ms == 0))
                                return usage_error(&usage, "--%s: not a number of seconds%s: %s",
                                                   c == OPT_RETRY_MAX ? "retry-max" : "linger",
                                                   c == OPT_RETRY_MAX ? " above 0" : "", optarg);
                        *(c == OPT_RETRY_MAX ? &o.backoff_max_ms : &o.linger_ms) = ms;
                        break;
                case 'h':
                        return usage_help(&usage);
                case OPT_VERSION:
                        return usage_version("tether-askpass");
                default:        /* usage_getopt said what */
                        return EXIT_USAGE;
                }
        }
        if (optind != argc)
                return usage_error(&usage, "unexpected argument '%s'", argv[optind]);
        if (cryptroot_only && !cryptroot)
                return usage_error(&usage, "--fifo, --crypttab and --cmdline go with --cryptroot");
        if (cryptroot && o.dir)
                return usage_error(&usage, "--dir is for systemd's questions, not with --cryptroot");
        if (o.backoff_min_ms > o.backoff_max_ms)
                o.backoff_min_ms = o.backoff_max_ms;
        if (program_ctx_from_environment(&ctx, &err) < 0) {
                fprintf(stderr, "tether-askpass: %s\n", err.msg);
                return EXIT_USAGE;
        }
        /* The agent paces its own retries. */
        ctx.attempts = 1;
        struct sigaction sa = { .sa_handler = on_signal };
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        if (cryptroot)
                return run_cryptroot(&po, &o, crypttab, cmdline);
        if (tc_agent_run(&ctx, &o, &err) < 0) {
                fprintf(stderr, "tether-askpass: %s\n", err.msg);
                return 1;
        }
        return 0;
}
