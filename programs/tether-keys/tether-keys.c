/* tether-keys: administration of a Tang-format key directory. */
#include "keyset.h"
#include "host.h"
#include "ledger.h"
#include "hosts.h"
#include "cleanup.h"
#include "environment.h"
#include "harden.h"
#include "tang.h"
#include "usage.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <time.h>
#include <getopt.h>
#include <pwd.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <jose/jwk.h>

static const char *program = "tether-keys";

static const struct usage usage = {
        .prog = "tether-keys",
        .text = "Usage: tether-keys COMMAND ...\n"
                "\n"
                "  gen DIR [SIGNAME EXCNAME]  create a signing and an exchange key\n"
                "  rotate DIR                 create a new pair, then hide the advertised keys\n"
                "                             (print the new signing key's thumbprint)\n"
                "  show DIR                   print the thumbprints clients pass as \"thp\"\n"
                "  show --url URL             the same, from a live server's verified /adv\n"
                "  list DIR                   every key: state, role, curve, thumbprint, file\n"
                "  usage DIR --ledger LEDGERDIR [--json]\n"
                "                             per key and per host: recoveries, first and last,\n"
                "                             last client addresses, from tetherd's usage ledger\n"
                "  prune DIR --ledger LEDGERDIR --unused-for DURATION [--yes]\n"
                "                             delete rotated keys the ledger saw unused for\n"
                "                             DURATION (30d, 12h, 90m); a dry run without --yes\n"
                "  migrate [--from TANGDIR] [DIR]\n"
                "                             copy every key of Tang's directory (default\n"
                "                             /var/lib/tang, else /var/db/tang) into DIR (default\n"
                "                             /var/lib/tether), owned by _tether; TANGDIR is only read\n"
                "  host COMMAND DIR [NAME]    per-host exchange keys: add, list, revoke, restore,\n"
                "                             hold, allow, rotate, delete (host --help)\n"
                "\n"
                "  -h, --help                 this help (after a command: that command's)\n"
                "      --version              print the version and exit\n"
                "\n"
                "The directory format is Tang's: keys move freely between tangd and tetherd.\n",
};

static const struct usage gen_usage = {
        .prog = "tether-keys gen",
        .text = "Usage: tether-keys gen DIR [SIGNAME EXCNAME]\n\n"
                "Creates a signing and an exchange key in DIR, named after their thumbprints\n"
                "or SIGNAME.jwk and EXCNAME.jwk; an existing file is never overwritten.\n",
};

static const struct usage rotate_usage = {
        .prog = "tether-keys rotate",
        .text = "Usage: tether-keys rotate DIR\n\n"
                "Creates a new key pair in DIR, then hides the keys advertised before (still\n"
                "used for recovery), and prints the new signing key's thumbprint.\n",
};

static const struct usage show_usage = {
        .prog = "tether-keys show",
        .text = "Usage: tether-keys show DIR\n"
                "       tether-keys show --url URL\n\n"
                "Prints the thumbprints of the advertised signing keys, which clients pass as\n"
                "\"thp\": those of DIR, or (--url) those a live server's /adv is verified with.\n",
};

static const struct usage list_usage = {
        .prog = "tether-keys list",
        .text = "Usage: tether-keys list DIR\n\n"
                "Lists every key of DIR: state, role, curve, thumbprint, file.\n",
};

/* A command's options (only -h, and show's --url) and its operands, from
 * min to max of them: -1 when the command is to run (*n operands at
 * argv + optind), else the exit code. */
static int parse_args(const struct usage *u, int argc, char **argv, const char **url, int min, int max, int *n) {
        static const struct option plain[] = { { "help", no_argument, NULL, 'h' }, {} };
        static const struct option with_url[] = {
                { "help", no_argument, NULL, 'h' }, { "url", required_argument, NULL, 'u' }, {}
        };
        int c;
        while ((c = usage_getopt(u, argc, argv, "h", url ? with_url : plain)) != -1) {
                if (c == 'h')
                        return usage_help(u);
                if (c == 'u')
                        *url = optarg;
                else
                        return EXIT_USAGE;      /* usage_getopt said what */
        }
        *n = argc - optind;
        if (*n < min)
                return usage_error(u, "missing DIR, the key directory");
        if (*n > max)
                return usage_error(u, "unexpected argument '%s'", argv[optind + max]);
        return -1;
}

static void warn_file(void *userdata, const char *file, const struct tc_err *why) {
        char line[1024];
        /* Escaped as messages are: anyone who may write the directory names
         * its files. */
        tc_format(line, sizeof(line), "%s/%s %s, skipped", (const char *) userdata, file, why->msg);
        fprintf(stderr, "%s: %s\n", program, line);
}

/* Escaped as messages are: anyone who may write the directory names its
 * files. Room for a name of NAME_MAX bytes with the dot rotation puts in
 * front, 4 bytes each escaped. */
#define SHOWN_MAX (4 * (NAME_MAX + 1) + 1)
static const char *shown(char buf[static SHOWN_MAX], const char *name) {
        tc_escape(buf, SHOWN_MAX, name);
        return buf;
}

static int load(const char *dir, struct tk_keyset **ks) {
        int r = tk_keyset_load(dir, warn_file, (void *) dir, ks);
        if (r < 0)
                fprintf(stderr, "%s: cannot read key directory %s: %s\n", program, dir, strerror(-r));
        return r;
}

static int cmd_gen(int argc, char **argv) {
        _cleanup_free_ char *sig = NULL, *exc = NULL;
        struct tc_err err = {};

        int n, r = parse_args(&gen_usage, argc, argv, NULL, 1, 3, &n);
        if (r >= 0)
                return r;
        if (n == 2)
                return usage_error(&gen_usage, "SIGNAME %s without EXCNAME: name both keys, or neither",
                                   argv[optind + 1]);
        argv += optind;
        if (tk_keygen_pair(argv[0], n == 3 ? argv[1] : NULL, n == 3 ? argv[2] : NULL, &sig, &exc, &err) < 0) {
                fprintf(stderr, "%s gen %s: %s\n", program, argv[0], err.msg);
                return EXIT_FAILURE;
        }
        printf("signing key: %s/%s\nexchange key: %s/%s\n", argv[0], sig, argv[0], exc);
        return EXIT_SUCCESS;
}

/* "NAME.jwk" without ".jwk": default key file names are the S256 thumbprints. */
static void print_rotation(const char *dir, const struct tk_rotation *rot) {
        char from[SHOWN_MAX], to[SHOWN_MAX];
        printf("signing key: %s/%s\nexchange key: %s/%s\n", dir, rot->sig, dir, rot->exc);
        for (size_t i = 0; i < rot->n_hidden; i++)
                printf("hidden: %s/%s -> %s\n", dir, shown(from, rot->hidden_from[i]), shown(to, rot->hidden_to[i]));
        printf("thumbprint to pin (thp): %.*s\n", (int) (strlen(rot->sig) - 4), rot->sig);
}

static int cmd_rotate(int argc, char **argv) {
        struct tk_rotation rot;
        struct tc_err err = {};

        int n, r = parse_args(&rotate_usage, argc, argv, NULL, 1, 1, &n);
        if (r >= 0)
                return r;
        const char *dir = argv[optind];
        if (tk_rotate_keys(dir, &rot, &err) < 0) {
                fprintf(stderr, "%s rotate %s: %s\n", program, dir, err.msg);
                return EXIT_FAILURE;
        }
        print_rotation(dir, &rot);
        tk_rotation_clear(&rot);
        return EXIT_SUCCESS;
}

static int print_signing_thumbprints(json_t *keys) {
        size_t i, n = 0;
        json_t *k;

        json_array_foreach(keys, i, k) {
                if (!jose_jwk_prm(NULL, k, true, "verify"))
                        continue;
                _cleanup_free_ char *thp = tk_thumbprint(k, "S256");
                if (!thp)
                        return -EINVAL;
                printf("%s\n", thp);
                n++;
        }
        return n > 0 ? 0 : -ENOENT;
}

static int show_url(const char *url) {
        json_auto_t *jws = NULL, *payload = NULL;
        struct tc_ctx ctx;
        struct tc_err err = {};
        size_t len = strlen(url);
        _cleanup_free_ char *base = strndup(url, len && url[len - 1] == '/' ? len - 1 : len);

        if (!base)
                return EXIT_FAILURE;
        if (program_ctx_from_environment(&ctx, &err) < 0) {
                fprintf(stderr, "%s show: %s\n", program, err.msg);
                return EXIT_FAILURE;
        }
        if (tc_tang_fetch_adv(&ctx, base, NULL, &jws, &payload, &err) < 0) {
                fprintf(stderr, "%s show: %s\n", program, err.msg);
                return EXIT_FAILURE;
        }
        const char *adv_url = base;
        if (print_signing_thumbprints(json_object_get(payload, "keys")) < 0) {
                fprintf(stderr, "%s show: %s: no signing key advertised\n", program, adv_url);
                return EXIT_FAILURE;
        }
        return EXIT_SUCCESS;
}

static int cmd_show(int argc, char **argv) {
        _cleanup_(tk_keyset_freep) struct tk_keyset *ks = NULL;
        size_t n = 0;

        const char *url = NULL;
        int n_args, r = parse_args(&show_usage, argc, argv, &url, 0, 1, &n_args);
        if (r >= 0)
                return r;
        if (url && n_args > 0)
                return usage_error(&show_usage, "both DIR %s and --url given: show one or the other", argv[optind]);
        if (url && !*url)
                return usage_error(&show_usage, "--url needs a URL: tether-keys show --url http://SERVER[:PORT]");
        if (url)
                return show_url(url);
        if (n_args == 0)
                return usage_error(&show_usage, "missing DIR or --url URL");
        const char *dir = argv[optind];
        if (load(dir, &ks) < 0)
                return EXIT_FAILURE;
        for (size_t i = 0; i < ks->n_keys; i++)
                if (!ks->keys[i].hidden && ks->keys[i].role == TK_ROLE_SIGNING) {
                        printf("%s\n", ks->keys[i].thp[TK_HASH_S256]);
                        n++;
                }
        if (n == 0) {
                fprintf(stderr, "%s show: %s has no advertised signing key\n", program, dir);
                return EXIT_FAILURE;
        }
        return EXIT_SUCCESS;
}

static const char *role_name(enum tk_role role) {
        switch (role) {
        case TK_ROLE_SIGNING: return "signing";
        case TK_ROLE_EXCHANGE: return "exchange";
        default: return "other";
        }
}

static int cmd_list(int argc, char **argv) {
        _cleanup_(tk_keyset_freep) struct tk_keyset *ks = NULL;

        int n, r = parse_args(&list_usage, argc, argv, NULL, 1, 1, &n);
        if (r >= 0)
                return r;
        if (load(argv[optind], &ks) < 0)
                return EXIT_FAILURE;
        printf("%-10s  %-8s  %-5s  %-43s  %s\n", "STATE", "ROLE", "CURVE", "THUMBPRINT (S256)", "FILE");
        for (size_t i = 0; i < ks->n_keys; i++) {
                const struct tk_key *k = &ks->keys[i];
                char crv[SHOWN_MAX], file[SHOWN_MAX];
                printf("%-10s  %-8s  %-5s  %-43s  %s\n", k->hidden ? "rotated" : "advertised",
                       role_name(k->role), shown(crv, k->crv ? k->crv : "-"), k->thp[TK_HASH_S256], shown(file, k->file));
        }
        return EXIT_SUCCESS;
}


static const struct usage usage_usage = {
        .prog = "tether-keys usage",
        .text = "Usage: tether-keys usage DIR --ledger LEDGERDIR [--json]\n\n"
                "Shows, for every key of DIR and of its hosts, how often tetherd's /rec used it\n"
                "according to the usage ledger LEDGERDIR (tetherd --ledger): recoveries, first\n"
                "and last recovery, the last client addresses; then every host (state, allow\n"
                "tokens, recoveries, refused and pending requests). Keys the ledger never saw\n"
                "show 0 recoveries.\n",
};

static const struct usage prune_usage = {
        .prog = "tether-keys prune",
        .text = "Usage: tether-keys prune DIR --ledger LEDGERDIR --unused-for DURATION [--yes]\n\n"
                "Deletes the rotated keys of DIR and of its hosts that no request used for\n"
                "DURATION (30d, 12h, 90m, 45s) and that were rotated at least DURATION ago,\n"
                "according to the usage ledger LEDGERDIR. Without --yes, only prints what it\n"
                "would delete and why. Never an advertised key, nor a revoked host's keys\n"
                "(host delete removes those). Refused when the ledger is younger than DURATION.\n"
                "The ledger only sees machines that unlocked: see tether-keys(8).\n",
};

/* "30d", "12h", "90m", "45s" into milliseconds; false when not one. */
static bool parse_duration(const char *s, int64_t *ms) {
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno || end == s || v <= 0 || !end[0] || end[1] || s[0] == '-' || s[0] == '+')
                return false;
        int64_t unit;
        switch (end[0]) {
        case 's': unit = 1000; break;
        case 'm': unit = 60 * 1000; break;
        case 'h': unit = 3600 * 1000; break;
        case 'd': unit = 86400 * 1000; break;
        default: return false;
        }
        if (v > INT64_MAX / unit / 2)
                return false;
        *ms = v * unit;
        return true;
}

static int64_t ms_of(const json_t *obj, const char *name) {
        json_t *v = json_object_get(obj, name);
        return json_is_integer(v) ? (int64_t) json_integer_value(v) : -1;
}

static int load_ledger(const char *cmd, const char *dir, struct tk_ledger_state *st) {
        struct tc_err err = {};
        _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) {
                int e = errno;
                fprintf(stderr, "%s %s: ledger directory %s: %s%s\n", program, cmd, dir, strerror(e),
                        e == ENOENT ? " (tetherd --ledger DIR creates it; is this the directory tetherd was given?)"
                                    : "");
                return -e;
        }
        int r = tk_ledger_load(dfd, tc_realtime_ms(), st, &err);
        if (r < 0)
                fprintf(stderr, "%s %s: ledger directory %s: %s%s\n", program, cmd, dir, err.msg,
                        r == -ENOENT ? "; start tetherd with --ledger DIR to keep one" : "");
        return r;
}

/* Options of usage and prune: -1 to run (DIR at argv[optind]), else the exit code. */
struct ledger_args {
        const char *ledger, *unused_for;
        bool json, yes;
};

static int parse_ledger_args(const struct usage *u, bool prune, int argc, char **argv, struct ledger_args *a) {
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "ledger", required_argument, NULL, 'l' },
                { "json", no_argument, NULL, 'j' },
                { "unused-for", required_argument, NULL, 'u' },
                { "yes", no_argument, NULL, 'y' },
                {}
        };
        int c;
        while ((c = usage_getopt(u, argc, argv, "h", options)) != -1) {
                switch (c) {
                case 'h': return usage_help(u);
                case 'l': a->ledger = optarg; break;
                case 'j':
                        if (prune)
                                return usage_error(u, "unrecognized option '--json'");
                        a->json = true;
                        break;
                case 'u':
                        if (!prune)
                                return usage_error(u, "unrecognized option '--unused-for'");
                        a->unused_for = optarg;
                        break;
                case 'y':
                        if (!prune)
                                return usage_error(u, "unrecognized option '--yes'");
                        a->yes = true;
                        break;
                default: return EXIT_USAGE;
                }
        }
        if (argc - optind < 1)
                return usage_error(u, "missing DIR, the key directory");
        if (argc - optind > 1)
                return usage_error(u, "unexpected argument '%s'", argv[optind + 1]);
        if (!a->ledger || !*a->ledger)
                return usage_error(u, "missing --ledger LEDGERDIR, the directory tetherd --ledger writes");
        if (prune && !a->unused_for)
                return usage_error(u, "missing --unused-for DURATION (such as 30d, 12h or 90m)");
        return -1;
}

static const char *text_or_dash(const json_t *obj, const char *name) {
        const char *s = json_string_value(json_object_get(obj, name));
        return s ? s : "-";
}

/* "a,b,c" of a report entry's last_addresses, "-" for none. */
static const char *addresses(const json_t *entry, char buf[static 256]) {
        size_t j;
        json_t *a;
        buf[0] = '\0';
        json_array_foreach(json_object_get(entry, "last_addresses"), j, a) {
                size_t used = strlen(buf);
                snprintf(buf + used, 256 - used, "%s%s", j ? "," : "", json_string_value(a));
        }
        return *buf ? buf : "-";
}

static void print_usage_text(const json_t *report) {
        size_t i;
        json_t *k;
        char shown_file[SHOWN_MAX], shown_host[SHOWN_MAX], addrs[256];
        const json_t *led = json_object_get(report, "ledger");
        printf("ledger %s since %s, %" JSON_INTEGER_FORMAT " record(s)\n\n", json_string_value(json_object_get(led, "dir")),
               json_string_value(json_object_get(led, "started")), json_integer_value(json_object_get(led, "records")));
        printf("%-10s  %-8s  %-12s  %-43s  %10s  %-20s  %-20s  %-20s  %-30s  %s\n", "STATE", "ROLE", "HOST",
               "THUMBPRINT (S256)", "RECOVERIES", "FIRST RECOVERY", "LAST RECOVERY", "CREATED", "LAST ADDRESSES", "FILE");
        json_array_foreach(json_object_get(report, "keys"), i, k) {
                const char *file = json_string_value(json_object_get(k, "file"));
                const char *host = json_string_value(json_object_get(k, "host"));
                printf("%-10s  %-8s  %-12s  %-43s  %10" JSON_INTEGER_FORMAT "  %-20s  %-20s  %-20s  %-30s  %s\n",
                       json_string_value(json_object_get(k, "state")), text_or_dash(k, "role"),
                       host ? shown(shown_host, host) : "-", json_string_value(json_object_get(k, "thp")),
                       json_integer_value(json_object_get(k, "recoveries")),
                       text_or_dash(k, "first_recovery"), text_or_dash(k, "last_recovery"), text_or_dash(k, "created"),
                       addresses(k, addrs), file ? shown(shown_file, file) : "-");
        }
        json_t *hosts = json_object_get(report, "hosts");
        if (json_array_size(hosts)) {
                printf("\n%-32s  %-8s  %6s  %10s  %-20s  %8s  %8s  %s\n", "HOST", "STATE", "ALLOW", "RECOVERIES",
                       "LAST RECOVERY", "REFUSED", "PENDING", "LAST ADDRESSES");
                json_array_foreach(hosts, i, k)
                        printf("%-32s  %-8s  %6" JSON_INTEGER_FORMAT "  %10" JSON_INTEGER_FORMAT "  %-20s  %8"
                               JSON_INTEGER_FORMAT "  %8" JSON_INTEGER_FORMAT "  %s\n",
                               shown(shown_host, json_string_value(json_object_get(k, "host"))),
                               json_string_value(json_object_get(k, "state")),
                               json_integer_value(json_object_get(k, "allow_tokens")),
                               json_integer_value(json_object_get(k, "recoveries")),
                               text_or_dash(k, "last_recovery"),
                               json_integer_value(json_object_get(k, "refused_total")),
                               json_integer_value(json_object_get(k, "pending")), addresses(k, addrs));
        }
        json_int_t unknown = 0;
        const char *name;
        json_t *v;
        json_object_foreach(json_object_get(report, "unknown_key"), name, v)
                unknown += json_integer_value(v);
        if (unknown)
                printf("\n%" JSON_INTEGER_FORMAT " request(s) named a key this server does not have\n", unknown);
}

/* The host keys of dir; a host that cannot be read is skipped with a
 * warning (its keys then show as "gone"). */
static int load_hosts(const char *cmd, const char *dir, struct tk_hosts **hosts) {
        int r = tk_hosts_load(dir, NULL, warn_file, (void *) dir, hosts);
        if (r < 0)
                fprintf(stderr, "%s %s: cannot read the hosts of %s: %s\n", program, cmd, dir, strerror(-r));
        return r;
}

static int cmd_usage(int argc, char **argv) {
        _cleanup_(tk_keyset_freep) struct tk_keyset *ks = NULL;
        _cleanup_(tk_hosts_freep) struct tk_hosts *hosts = NULL;
        struct ledger_args a = {};
        struct tk_ledger_state st = {};

        int r = parse_ledger_args(&usage_usage, false, argc, argv, &a);
        if (r >= 0)
                return r;
        const char *dir = argv[optind];
        if (load(dir, &ks) < 0 || load_hosts("usage", dir, &hosts) < 0 || load_ledger("usage", a.ledger, &st) < 0)
                return EXIT_FAILURE;
        json_auto_t *report = tk_ledger_report(ks, hosts, st.agg, a.ledger);
        tk_ledger_state_clear(&st);
        if (!report) {
                fprintf(stderr, "%s usage: out of memory\n", program);
                return EXIT_FAILURE;
        }
        if (a.json) {
                json_dumpf(report, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
                putchar('\n');
        } else
                print_usage_text(report);
        return EXIT_SUCCESS;
}

struct prune_count {
        size_t remove, failed;
};

/* Carries out (with --yes) or prints a plan for the keys of path (the key
 * directory or a host's directory, host its name or NULL). */
static int prune_keys(const char *path, const char *host, const struct tk_prune_item *items, size_t n, bool yes,
                      struct prune_count *c) {
        char of_host[TK_HOST_NAME_MAX + 16] = "";
        if (host)
                snprintf(of_host, sizeof(of_host), ", host %s", host);
        _cleanup_close_ int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) {
                fprintf(stderr, "%s prune: %s: %s\n", program, path, strerror(errno));
                return -errno;
        }
        size_t n_deleted = 0;
        for (size_t i = 0; i < n; i++) {
                char file[SHOWN_MAX];
                const struct tk_key *k = items[i].key;
                if (!items[i].remove) {
                        printf("keep: %s/%s (%s %s%s): %s\n", path, shown(file, k->file), role_name(k->role),
                               k->thp[TK_HASH_S256], of_host, items[i].why);
                        continue;
                }
                c->remove++;
                if (!yes) {
                        printf("would delete: %s/%s (%s %s%s): %s\n", path, shown(file, k->file), role_name(k->role),
                               k->thp[TK_HASH_S256], of_host, items[i].why);
                        continue;
                }
                /* Only the file the plan judged: the same inode, still hidden. */
                struct stat s;
                if (fstatat(dfd, k->file, &s, AT_SYMLINK_NOFOLLOW) < 0 || s.st_ino != k->id.ino ||
                    s.st_dev != k->id.dev || k->file[0] != '.') {
                        fprintf(stderr, "%s prune: %s/%s changed since it was read: left alone\n", program, path,
                                shown(file, k->file));
                        c->failed++;
                        continue;
                }
                if (unlinkat(dfd, k->file, 0) < 0) {
                        fprintf(stderr, "%s prune: cannot delete %s/%s: %s\n", program, path, shown(file, k->file),
                                strerror(errno));
                        c->failed++;
                        continue;
                }
                n_deleted++;
                printf("deleted: %s/%s (%s %s%s): %s\n", path, shown(file, k->file), role_name(k->role),
                       k->thp[TK_HASH_S256], of_host, items[i].why);
        }
        if (n_deleted)
                (void) fsync(dfd);
        return 0;
}

/* Plans and prunes the rotated keys of one key set: -1 when the ledger
 * cannot judge (said why). */
static int prune_keyset(const char *path, const char *host, const struct tk_keyset *ks, const struct tk_hosts *hosts,
                        const struct ledger_args *a, const json_t *agg, int64_t now, int64_t window,
                        struct prune_count *c) {
        struct tk_prune_item *items = NULL;
        struct tc_err err = {};
        size_t n = 0;
        int r = tk_ledger_prune_plan(ks, hosts, agg, now, window, &items, &n, &err);
        if (r < 0) {
                char started[32];
                fprintf(stderr, "%s prune: ledger %s (started %s): %s\n", program, a->ledger,
                        tk_ledger_iso_time(ms_of(agg, "started_ms"), started), err.msg);
                return r;
        }
        r = prune_keys(path, host, items, n, a->yes, c);
        tk_prune_plan_free(items);
        if (r < 0)
                c->failed++;
        return 0;
}

static int cmd_prune(int argc, char **argv) {
        _cleanup_(tk_keyset_freep) struct tk_keyset *ks = NULL;
        _cleanup_(tk_hosts_freep) struct tk_hosts *hosts = NULL;
        struct ledger_args a = {};
        struct tk_ledger_state st = {};
        struct prune_count c = {};
        int64_t window;

        int r = parse_ledger_args(&prune_usage, true, argc, argv, &a);
        if (r >= 0)
                return r;
        if (!parse_duration(a.unused_for, &window))
                return usage_error(&prune_usage, "invalid --unused-for '%s': a number and a unit, s, m, h or d "
                                   "(such as 30d, 12h, 90m)", a.unused_for);
        const char *dir = argv[optind];
        if (load(dir, &ks) < 0 || load_hosts("prune", dir, &hosts) < 0 || load_ledger("prune", a.ledger, &st) < 0)
                return EXIT_FAILURE;
        int64_t now = tc_realtime_ms();
        r = prune_keyset(dir, NULL, ks, hosts, &a, st.agg, now, window, &c);
        for (size_t i = 0; r >= 0 && i < hosts->n; i++) {
                const struct tk_host *h = &hosts->hosts[i];
                if (h->state == TK_HOST_REVOKED) {
                        /* Its keys unlock nothing now; restore would bring
                         * them back as they were, so prune leaves them to
                         * host delete. */
                        size_t n_rotated = tk_keyset_count(h->ks, TK_ROLE_EXCHANGE, true);
                        if (n_rotated)
                                printf("not judged: %s (%zu rotated key(s), host %s): the host is revoked; prune "
                                       "leaves its keys alone: tether-keys host delete %s %s removes them\n",
                                       h->dir, n_rotated, h->name, dir, h->name);
                        continue;
                }
                r = prune_keyset(h->dir, h->name, h->ks, NULL, &a, st.agg, now, window, &c);
        }
        tk_ledger_state_clear(&st);
        if (r < 0)
                return EXIT_FAILURE;
        if (!a.yes)
                printf("%zu key(s) would be deleted; nothing was: run again with --yes to delete them\n", c.remove);
        return c.failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* Where Debian's tang keeps its keys, then Fedora's. */
static const char *const tang_dirs[] = { "/var/lib/tang", "/var/db/tang" };
#define TETHER_DIR "/var/lib/tether"
#define TETHER_USER "_tether"

static const char *find_tang_dir(void) {
        struct stat st;
        for (size_t i = 0; i < ELEMENTSOF(tang_dirs); i++)
                if (stat(tang_dirs[i], &st) == 0 && S_ISDIR(st.st_mode))
                        return tang_dirs[i];
        return NULL;
}

static void print_names(const char *what, const char *dir, char **names, size_t n) {
        char name[SHOWN_MAX];
        for (size_t i = 0; i < n; i++)
                printf("%s: %s/%s\n", what, dir, shown(name, names[i]));
}

static const struct usage migrate_usage = {
        .prog = "tether-keys migrate",
        .text = "Usage: tether-keys migrate [--from TANGDIR] [DIR]\n\n"
                "Copies the keys of an installed Tang (TANGDIR: /var/lib/tang, else /var/db/tang)\n"
                "into DIR (" TETHER_DIR "), advertised and rotated alike, and checks that\n"
                "DIR then serves the same thumbprints. TANGDIR is left unchanged.\n",
};

static int cmd_migrate(int argc, char **argv) {
        static const struct option options[] = {
                { "from", required_argument, NULL, 'f' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        const char *src = NULL, *dst = TETHER_DIR;
        uid_t uid = (uid_t) -1;
        gid_t gid = (gid_t) -1;
        struct tk_migration m;
        struct tc_err err = {};
        int c;

        while ((c = usage_getopt(&migrate_usage, argc, argv, "f:h", options)) != -1) {
                if (c == 'h')
                        return usage_help(&migrate_usage);
                if (c != 'f')
                        return EXIT_USAGE;      /* usage_getopt said what */
                src = optarg;
        }
        if (argc - optind > 1)
                return usage_error(&migrate_usage, "unexpected argument '%s'", argv[optind + 1]);
        if (optind < argc)
                dst = argv[optind];
        if (!src && !(src = find_tang_dir())) {
                fprintf(stderr, "%s migrate: no Tang key directory at %s or %s: give it with --from TANGDIR\n",
                        program, tang_dirs[0], tang_dirs[1]);
                return EXIT_FAILURE;
        }
        /* The files go to the user tetherd.service runs as; without it (not
         * installed), to the owner of DIR, as the other commands do. */
        struct passwd *pw = getpwnam(TETHER_USER);
        if (pw) {
                uid = pw->pw_uid;
                gid = pw->pw_gid;
        }
        if (tk_migrate(src, dst, uid, gid, warn_file, (void *) src, &m, &err) < 0) {
                fprintf(stderr, "%s migrate: %s\n", program, err.msg);
                return EXIT_FAILURE;
        }
        if (m.n_stale)
                printf("removed: %zu temporary file%s (.tether-new-*.tmp) an interrupted run had left in %s\n",
                       m.n_stale, m.n_stale == 1 ? "" : "s", dst);
        print_names("copied", dst, m.copied, m.n_copied);
        print_names("already there", dst, m.present, m.n_present);
        printf("%s serves the keys of %s: %zu advertised, %zu rotated, the same thumbprints; %s is unchanged.\n"
               "Next, switch the servers (both listen on port 80):\n"
               "  systemctl disable --now tangd.socket\n"
               "  systemctl enable --now tetherd.socket\n"
               "To go back: systemctl disable --now tetherd.socket tetherd.service; "
               "systemctl enable --now tangd.socket\n",
               dst, src, m.n_advertised, m.n_rotated, src);
        if (strcmp(dst, TETHER_DIR) != 0)
                printf("tetherd.service serves %s: point it at %s (systemctl edit tetherd.service).\n",
                       TETHER_DIR, dst);
        tk_migration_clear(&m);
        return EXIT_SUCCESS;
}

int main(int argc, char **argv) {
        static const struct {
                const char *name;
                int (*run)(int argc, char **argv);
        } commands[] = {
                { "gen", cmd_gen },
                { "rotate", cmd_rotate },
                { "show", cmd_show },
                { "list", cmd_list },
                { "migrate", cmd_migrate },
                { "host", cmd_host },
                { "usage", cmd_usage },
                { "prune", cmd_prune },
        };

        int r = tk_harden_process();
        if (r < 0)
                fprintf(stderr, "%s: cannot disable core dumps: %s\n", program, strerror(-r));
        /* Fresh keys must never be readable by others, not even briefly. */
        umask(0337);
        if (argc < 2)
                return usage_error(&usage, "missing COMMAND");
        if (usage_is_help(argv[1]))
                return usage_help(&usage);
        if (usage_is_version(argv[1]))
                return usage_version(program);
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (strcmp(argv[1], commands[i].name) == 0)
                        return commands[i].run(argc - 1, argv + 1);
        if (argv[1][0] == '-')
                return usage_error(&usage, "unrecognized option '%s'", argv[1]);
        return usage_error(&usage, "unknown command '%s'", argv[1]);
}
