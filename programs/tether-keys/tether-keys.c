/* tether-keys: administration of a Tang-format key directory. */
#include "keyset.h"
#include "cleanup.h"
#include "environment.h"
#include "harden.h"
#include "tang.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <jose/jwk.h>

#define EXIT_USAGE 2

static const char *program = "tether-keys";

static void usage(FILE *f) {
        fprintf(f,
                "Usage: %s COMMAND ...\n"
                "\n"
                "  gen DIR [SIGNAME EXCNAME]  create a signing and an exchange key\n"
                "  rotate DIR                 create a new pair, then hide the advertised keys\n"
                "                             (print the new signing key's thumbprint)\n"
                "  show DIR                   print the thumbprints clients pass as \"thp\"\n"
                "  show --url URL             the same, from a live server's verified /adv\n"
                "  list DIR                   every key: state, role, curve, thumbprint, file\n"
                "\n"
                "The directory format is Tang's: keys move freely between tangd and tetherd.\n",
                program);
}

static bool is_help(const char *arg) {
        return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
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

        if (argc != 2 && argc != 4) {
                fprintf(stderr, "%s gen: expected DIR [SIGNAME EXCNAME]\n", program);
                return EXIT_USAGE;
        }
        if (tk_keygen_pair(argv[1], argc == 4 ? argv[2] : NULL, argc == 4 ? argv[3] : NULL,
                           &sig, &exc, &err) < 0) {
                fprintf(stderr, "%s gen %s: %s\n", program, argv[1], err.msg);
                return EXIT_FAILURE;
        }
        printf("signing key: %s/%s\nexchange key: %s/%s\n", argv[1], sig, argv[1], exc);
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

        if (argc != 2) {
                fprintf(stderr, "%s rotate: expected DIR\n", program);
                return EXIT_USAGE;
        }
        if (tk_rotate_keys(argv[1], &rot, &err) < 0) {
                fprintf(stderr, "%s rotate %s: %s\n", program, argv[1], err.msg);
                return EXIT_FAILURE;
        }
        print_rotation(argv[1], &rot);
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

        if (argc == 3 && strcmp(argv[1], "--url") == 0)
                return show_url(argv[2]);
        if (argc == 2 && strncmp(argv[1], "--url=", 6) == 0 && argv[1][6])
                return show_url(argv[1] + 6);
        /* Not a key directory named "--url". */
        if (argc == 2 && strncmp(argv[1], "--url", 5) == 0 && (argv[1][5] == '\0' || argv[1][5] == '=')) {
                fprintf(stderr, "%s show: --url needs a URL: %s show --url http://SERVER[:PORT]\n", program, program);
                return EXIT_USAGE;
        }
        if (argc != 2) {
                fprintf(stderr, "%s show: expected DIR or --url URL\n", program);
                return EXIT_USAGE;
        }
        if (load(argv[1], &ks) < 0)
                return EXIT_FAILURE;
        for (size_t i = 0; i < ks->n_keys; i++)
                if (!ks->keys[i].hidden && ks->keys[i].role == TK_ROLE_SIGNING) {
                        printf("%s\n", ks->keys[i].thp[TK_HASH_S256]);
                        n++;
                }
        if (n == 0) {
                fprintf(stderr, "%s show: %s has no advertised signing key\n", program, argv[1]);
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

        if (argc != 2) {
                fprintf(stderr, "%s list: expected DIR\n", program);
                return EXIT_USAGE;
        }
        if (load(argv[1], &ks) < 0)
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

int main(int argc, char **argv) {
        static const struct {
                const char *name;
                int (*run)(int argc, char **argv);
        } commands[] = {
                { "gen", cmd_gen },
                { "rotate", cmd_rotate },
                { "show", cmd_show },
                { "list", cmd_list },
        };

        int r = tk_harden_process();
        if (r < 0)
                fprintf(stderr, "%s: cannot disable core dumps: %s\n", program, strerror(-r));
        /* Fresh keys must never be readable by others, not even briefly. */
        umask(0337);
        if (argc < 2 || is_help(argv[1])) {
                usage(argc < 2 ? stderr : stdout);
                return argc < 2 ? EXIT_USAGE : EXIT_SUCCESS;
        }
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (strcmp(argv[1], commands[i].name) == 0) {
                        if (argc > 2 && is_help(argv[2])) {
                                usage(stdout);
                                return EXIT_SUCCESS;
                        }
                        return commands[i].run(argc - 1, argv + 1);
                }
        fprintf(stderr, "%s: unknown command '%s'\n", program, argv[1]);
        usage(stderr);
        return EXIT_USAGE;
}
