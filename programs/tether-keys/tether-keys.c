/* tether-keys: administration of a Tang-format key directory. */
#include "keyset.h"
#include "host.h"
#include "cleanup.h"
#include "environment.h"
#include "harden.h"
#include "tang.h"
#include "usage.h"

#include <errno.h>
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
