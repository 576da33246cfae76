/* tether-askpass: a systemd password agent answering disk passphrase
 * questions for volumes with tether/clevis bindings. A shell over the
 * client library's agent (client/include/askpass.h): options, logging, signals. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "askpass.h"
#include "boot.h"
#include "environment.h"
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

static const struct usage usage = {
        .prog = "tether-askpass",
        .text = "Usage: tether-askpass [-d DIR] [--retry-max SECONDS] [--linger SECONDS]\n"
                "Answers systemd's disk passphrase questions for volumes bound with tether or\n"
                "Clevis, trying unreachable servers again until the question is answered or\n"
                "withdrawn. Exits when no question is left.\n"
                "  -d, --dir DIR          questions directory (default " TC_ASK_DIR ")\n"
                "      --retry-max S      longest pause between tries (default 8)\n"
                "      --linger S         stay after an answer, for a re-ask (default 60)\n"
                "  -h, --help             this help\n"
                "      --version          print the version and exit\n",
};

int main(int argc, char **argv) {
        enum { OPT_RETRY_MAX = 256, OPT_LINGER, OPT_VERSION };
        static const struct option options[] = {
                { "dir", required_argument, NULL, 'd' },
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
        struct tc_err err = {};
        int c;

        while ((c = usage_getopt(&usage, argc, argv, "d:h", options)) >= 0) {
                long ms;
                switch (c) {
                case 'd':
                        o.dir = optarg;
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
        if (tc_agent_run(&ctx, &o, &err) < 0) {
                fprintf(stderr, "tether-askpass: %s\n", err.msg);
                return 1;
        }
        return 0;
}
