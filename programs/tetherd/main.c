/* tetherd: a Tang-compatible key server. */
#include "cleanup.h"
#include "harden.h"
#include "httpd.h"
#include "keystore.h"
#include "ledger-writer.h"
#include "listen.h"
#include "log.h"
#include "metrics.h"
#include "metrics_http.h"
#include "usage.h"
#include "version.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>

#define DEFAULT_PORT "9090"

struct options {
        const char *keydir;
        const char *addresses[LISTEN_MAX];
        size_t n_addresses;
        const char *port;
        bool listen;
        bool keygen;
        unsigned drain_ms;
        const char *metrics_address;   /* as given; NULL: no metrics */
        char metrics_host[64], metrics_port[8];
        const char *ledger;
        struct httpd_config http;
};

static void print_usage(FILE *f) {
        fputs(
                "Usage: tetherd [OPTIONS] KEYDIR\n"
                "       tetherd [-l] [-p PORT] [-e ENDPOINT] KEYDIR    (tangd's options)\n"
                "\n"
                "A Tang-compatible key server.\n"
                "\n"
                "  -a, --address ADDR        listen on ADDR (repeatable; default: every address)\n"
                "  -p, --port PORT           listen on PORT (default " DEFAULT_PORT ")\n"
                "  -l, --listen              listen on the network whatever stdin is (default\n"
                "                            when stdin is a terminal, /dev/null or closed)\n"
                "  -e, --endpoint PATH       serve under /PATH/adv, /PATH/rec\n"
                "  -t, --threads N           worker threads (default: one per core)\n"
                "      --no-keygen           do not create keys when none is advertised\n"
                "      --connection-limit N  most simultaneous connections (default 10000)\n"
                "      --timeout SECONDS     close idle connections after this (default 10)\n"
                "      --per-address-limit N most connections from one client address\n"
                "                            (default 128, 0: none)\n"
                "      --request-timeout SECONDS\n"
                "                            close a connection whose request has not fully\n"
                "                            arrived after this (default 10, 0: none)\n"
                "      --drain-timeout MS    on SIGTERM, wait this long for open requests (default 5000)\n"
                "      --metrics-address ADDR:PORT\n"
                "                            serve Prometheus metrics at /metrics there (IPv4, or\n"
                "                            [IPv6]:PORT), apart from the client port (default: none)\n"
                "      --ledger DIR          record every /rec in the usage ledger DIR (created\n"
                "                            0700 when missing; outside KEYDIR): see\n"
                "                            tether-keys usage, tether-keys prune\n"
                "  -q, --quiet               no log line per request\n"
                "  -h, --help                this help\n"
                "      --version             print the version and exit\n"
                "\n"
                "Listening modes: --address/--port; systemd socket activation (Accept=no, or\n"
                "Accept=yes for one connection); inetd (stdin is the connected socket).\n"
                "With stdin a pipe or a file and none of -a, -p, -l, tetherd refuses to start.\n", f);
}

static const struct usage usage = { .prog = "tetherd", .print = print_usage };

static bool parse_uint(const char *s, unsigned max, unsigned *out) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(s, &end, 10);
        if (errno || !*s || *end || v > max)
                return false;
        *out = (unsigned) v;
        return true;
}

/* "invalid --timeout '2.5': whole seconds from 0 to 86400 (0: none)" */
static bool parse_number(const char *opt, const char *arg, unsigned min, unsigned max, const char *unit,
                         const char *zero, unsigned *out) {
        unsigned v;
        if (parse_uint(arg, max, &v) && v >= min) {
                *out = v;
                return true;
        }
        usage_error(&usage, "invalid %s '%s': whole %s from %u to %u%s%s%s", opt, arg, unit, min, max,
                    zero ? " (0: " : "", zero ? zero : "", zero ? ")" : "");
        return false;
}

static bool same_address(const char *a, const char *b) {
        unsigned char x[16], y[16];
        if (strcmp(a, b) == 0)
                return true;
        for (int family = AF_INET; family; family = family == AF_INET ? AF_INET6 : 0)
                if (inet_pton(family, a, x) == 1 && inet_pton(family, b, y) == 1)
                        return memcmp(x, y, family == AF_INET ? 4 : 16) == 0;
        return false;
}

static int parse_options(int argc, char **argv, struct options *o) {
        enum { OPT_NO_KEYGEN = 256, OPT_CONN_LIMIT, OPT_TIMEOUT, OPT_DRAIN, OPT_PER_ADDRESS, OPT_REQUEST_TIMEOUT,
               OPT_VERSION, OPT_METRICS_ADDRESS, OPT_LEDGER };
        static const struct option longopts[] = {
                { "address", required_argument, NULL, 'a' },
                { "port", required_argument, NULL, 'p' },
                { "listen", no_argument, NULL, 'l' },
                { "endpoint", required_argument, NULL, 'e' },
                { "threads", required_argument, NULL, 't' },
                { "no-keygen", no_argument, NULL, OPT_NO_KEYGEN },
                { "connection-limit", required_argument, NULL, OPT_CONN_LIMIT },
                { "timeout", required_argument, NULL, OPT_TIMEOUT },
                { "drain-timeout", required_argument, NULL, OPT_DRAIN },
                { "per-address-limit", required_argument, NULL, OPT_PER_ADDRESS },
                { "request-timeout", required_argument, NULL, OPT_REQUEST_TIMEOUT },
                { "metrics-address", required_argument, NULL, OPT_METRICS_ADDRESS },
                { "ledger", required_argument, NULL, OPT_LEDGER },
                { "quiet", no_argument, NULL, 'q' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, OPT_VERSION },
                {}
        };
        unsigned port;
        int c;

        while ((c = usage_getopt(&usage, argc, argv, "a:p:le:t:qh", longopts)) != -1) {
                switch (c) {
                case 'a':
                        if (o->n_addresses == LISTEN_MAX) {
                                usage_error(&usage, "at most %d addresses (-a)", LISTEN_MAX);
                                return -EINVAL;
                        }
                        for (size_t i = 0; i < o->n_addresses; i++)
                                if (same_address(o->addresses[i], optarg)) {
                                        usage_error(&usage, "address %s given twice (-a); give each address once", optarg);
                                        return -EINVAL;
                                }
                        o->addresses[o->n_addresses++] = optarg;
                        o->listen = true;
                        break;
                case 'p':
                        if (!parse_uint(optarg, 65535, &port) || port == 0) {
                                usage_error(&usage, "invalid port '%s': a whole number from 1 to 65535", optarg);
                                return -EINVAL;
                        }
                        o->port = optarg;
                        o->listen = true;
                        break;
                case 'l':
                        o->listen = true;
                        break;
                case 'e': {
                        /* Stored without surrounding slashes: "/tang/" == "tang". */
                        while (*optarg == '/')
                                optarg++;
                        size_t len = strlen(optarg);
                        while (len && optarg[len - 1] == '/')
                                optarg[--len] = '\0';
                        o->http.prefix = len ? optarg : NULL;
                        break;
                }
                case 't':
                        if (!parse_number("--threads", optarg, 1, 1024, "numbers", NULL, &o->http.threads))
                                return -EINVAL;
                        break;
                case OPT_NO_KEYGEN:
                        o->keygen = false;
                        break;
                case OPT_CONN_LIMIT:
                        if (!parse_number("--connection-limit", optarg, 1, 1000000, "numbers of connections", NULL,
                                          &o->http.connection_limit))
                                return -EINVAL;
                        break;
                case OPT_TIMEOUT:
                        if (!parse_number("--timeout", optarg, 0, 86400, "seconds", NULL, &o->http.timeout_s))
                                return -EINVAL;
                        break;
                case OPT_DRAIN:
                        if (!parse_number("--drain-timeout", optarg, 0, 600000, "milliseconds", NULL, &o->drain_ms))
                                return -EINVAL;
                        break;
                case OPT_PER_ADDRESS:
                        if (!parse_number("--per-address-limit", optarg, 0, 1000000, "numbers of connections", "no limit",
                                          &o->http.per_address_limit))
                                return -EINVAL;
                        break;
                case OPT_REQUEST_TIMEOUT:
                        if (!parse_number("--request-timeout", optarg, 0, 86400, "seconds", "none",
                                          &o->http.request_timeout_s))
                                return -EINVAL;
                        break;
                case OPT_METRICS_ADDRESS: {
                        struct tc_err err = {};
                        if (metrics_http_parse_address(optarg, o->metrics_host, sizeof(o->metrics_host),
                                                       o->metrics_port, sizeof(o->metrics_port), &err) < 0) {
                                usage_error(&usage, "%s", err.msg);
                                return -EINVAL;
                        }
                        o->metrics_address = optarg;
                        break;
                }
                case OPT_LEDGER:
                        if (!*optarg) {
                                usage_error(&usage, "--ledger needs a directory, e.g. --ledger /var/lib/tether-ledger");
                                return -EINVAL;
                        }
                        o->ledger = optarg;
                        break;
                case 'q':
                        o->http.log_requests = false;
                        break;
                case 'h':
                        exit(usage_help(&usage));
                case OPT_VERSION:
                        exit(usage_version("tetherd"));
                default:        /* usage_getopt said what */
                        return -EINVAL;
                }
        }
        if (optind == argc) {
                usage_error(&usage, "missing KEYDIR, the key directory");
                return -EINVAL;
        }
        if (optind < argc - 1) {
                usage_error(&usage, "unexpected argument '%s' after KEYDIR %s", argv[optind + 1], argv[optind]);
                return -EINVAL;
        }
        o->keydir = argv[optind];
        return 0;
}

static void raise_fd_limit(unsigned want) {
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return;
        rlim_t target = (rlim_t) want + 64;
        if (rl.rlim_cur >= target)
                return;
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > target ? target : rl.rlim_max;
        (void) setrlimit(RLIMIT_NOFILE, &rl);
}

/* "[::]:9090 (IPv6 only), 0.0.0.0:9090": what the start-up line names. */
static void describe_sockets(const int *fds, size_t n, char *buf, size_t len) {
        size_t used = 0;
        buf[0] = '\0';
        for (size_t i = 0; i < n && used < len; i++) {
                struct sockaddr_storage ss;
                socklen_t sl = sizeof(ss);
                char host[INET6_ADDRSTRLEN] = "?";
                unsigned port = 0;
                int v6only = 0;
                socklen_t ol = sizeof(v6only);
                bool v6 = false;
                if (getsockname(fds[i], (struct sockaddr *) &ss, &sl) == 0) {
                        if (ss.ss_family == AF_INET) {
                                const struct sockaddr_in *a = (const struct sockaddr_in *) &ss;
                                inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
                                port = ntohs(a->sin_port);
                        } else if (ss.ss_family == AF_INET6) {
                                const struct sockaddr_in6 *a = (const struct sockaddr_in6 *) &ss;
                                inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
                                port = ntohs(a->sin6_port);
                                v6 = true;
                                (void) getsockopt(fds[i], IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &ol);
                        }
                }
                int k = snprintf(buf + used, len - used, "%s%s%s%s:%u%s", i ? ", " : "", v6 ? "[" : "", host,
                                 v6 ? "]" : "", port, v6 && v6only ? " (IPv6 only)" : "");
                if (k < 0)
                        break;
                used += (size_t) k;
        }
}

static void log_adapter(const char *fmt, ...) {
        char buf[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        log_line("%s", buf);
}

/* The key directory cannot be opened: say who tetherd runs as, whose the
 * directory is and what to do. The usual case is Tang's directory (owner
 * _tang, mode 0750) given to tetherd.service, which runs as _tether. */
static void explain_key_dir_denied(const char *shown_dir, const char *keydir) {
        uid_t uid = geteuid();
        struct passwd *pw = getpwuid(uid);
        char user[64], owner[384] = "", shown_user[256];
        struct stat st;

        snprintf(user, sizeof(user), "%s", pw ? pw->pw_name : "?");
        log_sanitize(shown_user, sizeof(shown_user), user, false);
        /* Under PrivateUsers=, owners outside the namespace show as the
         * overflow uid: naming that "owner" would mislead. */
        if (stat(keydir, &st) == 0 && st.st_uid != 65534) {
                struct passwd *ow = getpwuid(st.st_uid);
                char name[64], shown_owner[256];
                snprintf(name, sizeof(name), "%s", ow ? ow->pw_name : "?");
                log_sanitize(shown_owner, sizeof(shown_owner), name, false);
                snprintf(owner, sizeof(owner), ", owned by %s (uid %u) with mode %04o", shown_owner,
                         (unsigned) st.st_uid, (unsigned) (st.st_mode & 07777));
        }
        fprintf(stderr, "tetherd: key directory %s: permission denied: tetherd runs as user %s (uid %u), which may "
                "not read it%s. If it is Tang's key directory, copy its keys into tetherd's own as root with "
                "`tether-keys migrate --from %s` (into /var/lib/tether, owned by _tether; see tether-keys(8)) "
                "and serve that; otherwise make the directory and its keys readable by %s\n",
                shown_dir, shown_user, (unsigned) uid, owner, shown_dir, shown_user);
}

/* Who watches the answered requests (the metrics, the usage ledger): the
 * HTTP front takes one observer, fanned out here. */
#define OBSERVERS_MAX 4
struct observers {
        size_t n;
        struct {
                request_observer_fn fn;
                void *data;
        } o[OBSERVERS_MAX];
};

static void observers_add(struct observers *obs, request_observer_fn fn, void *data) {
        assert(obs->n < OBSERVERS_MAX);
        obs->o[obs->n].fn = fn;
        obs->o[obs->n++].data = data;
}

static void observe_all(void *userdata, const struct request_record *r) {
        const struct observers *obs = userdata;
        for (size_t i = 0; i < obs->n; i++)
                obs->o[i].fn(obs->o[i].data, r);
}

/* --metrics-address: its socket (bound before anything else starts, so that
 * a port in use stops tetherd at once) and its counters. */
static int metrics_open(const struct options *o, int *fd, struct metrics **m) {
        const char *addr = o->metrics_host;
        size_t n = 0;
        struct tc_err err = {};
        int r = listen_open(&addr, 1, o->metrics_port, fd, &n, &err);
        if (r < 0) {
                fprintf(stderr, "tetherd: --metrics-address %s: %s\n", o->metrics_address, err.msg);
                return r;
        }
        r = metrics_new(TETHER_VERSION, m);
        if (r < 0)
                fprintf(stderr, "tetherd: cannot set up the metrics: %s\n", strerror(-r));
        return r;
}

static int run(struct options *o) {
        int listen_fds[LISTEN_MAX], conn_fd = -1;
        size_t n_listen = 0;
        struct httpd *daemons[LISTEN_MAX] = {};
        size_t n_daemons = 0;
        _cleanup_(metrics_freep) struct metrics *metrics = NULL;
        _cleanup_(keystore_closep) struct keystore *ks = NULL;
        _cleanup_(metrics_http_stopp) struct metrics_http *metrics_http = NULL;
        struct observers observers = {};
        _cleanup_close_ int metrics_fd = -1;
        _cleanup_(httpd_limits_freep) struct httpd_limits *limits = NULL;
        _cleanup_(ledger_closep) struct ledger *ledger = NULL;
        struct tc_err err = {};
        struct stat st;
        int r = 0;
        /* The path as messages show it: a name with control characters
         * must not write escape sequences to a terminal or split a log line. */
        char shown_dir[PATH_MAX];
        log_sanitize(shown_dir, sizeof(shown_dir), o->keydir, true);

        if (stat(o->keydir, &st) < 0) {
                if (errno == EACCES)
                        explain_key_dir_denied(shown_dir, o->keydir);
                else
                        fprintf(stderr, "tetherd: key directory %s: %s\n", shown_dir, strerror(errno));
                return EXIT_FAILURE;
        }
        if (!S_ISDIR(st.st_mode)) {
                fprintf(stderr, "tetherd: key directory %s: not a directory; give the key directory, "
                        "e.g. /var/lib/tether\n", shown_dir);
                return EXIT_FAILURE;
        }

        /* Where connections come from. */
        int activated = listen_from_systemd(listen_fds, &n_listen, &conn_fd);
        if (activated == 0 && !o->listen) {
                const char *what;
                switch (stdin_role(STDIN_FILENO, &what)) {
                case STDIN_CONNECTION:
                        conn_fd = STDIN_FILENO;
                        break;
                case STDIN_FILTER:
                        /* Started in a pipeline or with socat's pipes option: nobody
                         * asked for a listener on every interface. */
                        fprintf(stderr, "tetherd: standard input is %s; the inetd mode needs a connected socket: "
                                "give -l, -a or -p to listen on the network, or start tetherd with a socket as "
                                "standard input (inetd, systemd, socat without its pipes option)\n", what);
                        return EXIT_USAGE;
                case STDIN_NOTHING:
                        break;
                }
        }
        bool inetd = conn_fd >= 0 && n_listen == 0;
        if (activated == 0 && !inetd) {
                r = listen_open(o->addresses, o->n_addresses, o->port ? o->port : DEFAULT_PORT,
                                listen_fds, &n_listen, &err);
                if (r < 0) {
                        fprintf(stderr, "tetherd: %s\n", err.msg);
                        return EXIT_FAILURE;
                }
        }
        if (n_listen == 0 && !inetd) {
                fprintf(stderr, "tetherd: no socket to serve on\n");
                return EXIT_FAILURE;
        }
        if (o->metrics_address && inetd) {
                fprintf(stderr, "tetherd: --metrics-address needs a tetherd that listens: started by inetd (or "
                        "systemd's Accept=yes), each connection has a process of its own; drop the option or "
                        "let tetherd listen (-a, -p, Accept=no)\n");
                return EXIT_USAGE;
        }
        if (o->metrics_address && metrics_open(o, &metrics_fd, &metrics) < 0)
                return EXIT_FAILURE;

        /* Signals are handled in this thread only, through a signalfd. */
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        pthread_sigmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        _cleanup_close_ int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
        if (sfd < 0) {
                fprintf(stderr, "tetherd: cannot set up signal handling: %s\n", strerror(errno));
                return EXIT_FAILURE;
        }
        _cleanup_close_ int closed_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (closed_fd < 0) {
                fprintf(stderr, "tetherd: cannot create an eventfd: %s\n", strerror(errno));
                return EXIT_FAILURE;
        }

        r = keystore_open(o->keydir, o->keygen, log_adapter, &ks);
        if (r == -EACCES)
                explain_key_dir_denied(shown_dir, o->keydir);
        else if (r < 0)
                fprintf(stderr, "tetherd: key directory %s: %s\n", shown_dir, strerror(-r));
        if (r < 0)
                return EXIT_FAILURE;
        if (metrics) {
                r = metrics_http_start(TAKE_FD(metrics_fd), metrics, ks, &metrics_http, &err);
                if (r < 0) {
                        fprintf(stderr, "tetherd: --metrics-address %s: %s\n", o->metrics_address, err.msg);
                        return EXIT_FAILURE;
                }
                observers_add(&observers, metrics_observe, metrics);
        }

        if (o->ledger) {
                r = ledger_open(o->ledger, o->keydir, &ledger, &err);
                if (r < 0) {
                        fprintf(stderr, "tetherd: %s\n", err.msg);
                        return EXIT_FAILURE;
                }
                observers_add(&observers, ledger_observe, ledger);
        }
        if (observers.n) {
                o->http.observe = observe_all;
                o->http.observe_data = &observers;
        }

        /* The limits are global: one count across every socket. */
        raise_fd_limit(o->http.connection_limit + (unsigned) n_listen);
        r = httpd_limits_new(o->http.connection_limit, o->http.per_address_limit, &limits);
        if (r < 0)
                tc_fail(&err, r, "cannot start the HTTP server: %s", strerror(-r));
        if (r >= 0 && inetd)
                r = httpd_start(&o->http, NULL, ks, -1, conn_fd, closed_fd, &daemons[n_daemons++], &err);
        for (size_t i = 0; i < n_listen && r >= 0; i++) {
                r = httpd_start(&o->http, limits, ks, listen_fds[i], -1, -1, &daemons[n_daemons], &err);
                if (r >= 0)
                        n_daemons++;
        }
        if (r < 0) {
                fprintf(stderr, "tetherd: %s\n", err.msg);
                for (size_t i = 0; i < n_daemons; i++)
                        httpd_stop(daemons[i], 0);
                return EXIT_FAILURE;
        }
        if (!inetd) {
                char where[LISTEN_MAX * 64];
                describe_sockets(listen_fds, n_listen, where, sizeof(where));
                log_line("tetherd: serving %s on %s, %u thread(s) each", shown_dir, where, o->http.threads);
        }
        if (metrics)
                log_line("tetherd: metrics at http://%s%s%s:%s/metrics", strchr(o->metrics_host, ':') ? "[" : "",
                         o->metrics_host, strchr(o->metrics_host, ':') ? "]" : "", o->metrics_port);
        notify_systemd("READY=1");

        for (bool done = false; !done;) {
                struct pollfd p[3] = {
                        { .fd = sfd, .events = POLLIN },
                        { .fd = keystore_watch_fd(ks), .events = POLLIN },
                        { .fd = closed_fd, .events = POLLIN },
                };
                if (poll(p, 3, keystore_housekeep(ks)) < 0 && errno != EINTR)
                        break;
                if (p[1].revents & POLLIN)
                        keystore_refresh(ks, false);
                if (p[2].revents & POLLIN)
                        done = true;   /* inetd: our one connection is closed */
                if (p[0].revents & POLLIN) {
                        struct signalfd_siginfo si;
                        if (read(sfd, &si, sizeof(si)) != sizeof(si))
                                continue;
                        if (si.ssi_signo == SIGHUP) {
                                notify_systemd("RELOADING=1");
                                keystore_refresh(ks, true);
                                notify_systemd("READY=1");
                        } else
                                done = true;
                }
        }
        notify_systemd("STOPPING=1");
        for (size_t i = 0; i < n_daemons; i++)
                httpd_stop(daemons[i], inetd ? 0 : o->drain_ms);
        return EXIT_SUCCESS;
}

int main(int argc, char **argv) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        struct options o = {
                .keygen = true,
                .drain_ms = 5000,
                .http = {
                        .threads = cores > 0 ? (unsigned) cores : 1,
                        .connection_limit = 10000,
                        .timeout_s = 10,
                        .per_address_limit = 128,
                        .request_timeout_s = 10,
                        .log_requests = true,
                },
        };

        int r = tk_harden_process();
        if (r < 0)
                fprintf(stderr, "tetherd: cannot disable core dumps: %s\n", strerror(-r));
        /* Keys created by the server are never readable by others. */
        umask(0337);
        /* parse_options() said what was wrong, with the usage. */
        if (parse_options(argc, argv, &o) < 0)
                return EXIT_USAGE;
        return run(&o);
}
