/* tether luks ...: Clevis's luks grammar over the library in luks.c. */
#include "cleanup.h"
#include "cli.h"
#include "luks.h"
#include "tether.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include <libcryptsetup.h>

#define PASSPHRASE_MAX 8192

static bool parse_int(const char *s, int max, int *out) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || *end || v < 0 || v > max)
                return false;
        *out = (int) v;
        return true;
}

static bool parse_slot(const char *s, int *slot) {
        return parse_int(s, crypt_keyslot_max(CRYPT_LUKS2) - 1, slot);
}

static bool parse_token(const char *s, int *token) {
        return parse_int(s, crypt_token_max(CRYPT_LUKS2) - 1, token);
}

/* A key file, "-" for stdin, or a terminal prompt without echo. */
static int read_passphrase(const char *keyfile, const char *device, uint8_t **out, size_t *len) {
        if (keyfile) {
                FILE *f = strcmp(keyfile, "-") == 0 ? stdin : fopen(keyfile, "re");
                if (!f)
                        return -errno;
                int r = cli_read_all(f, PASSPHRASE_MAX, out, len);
                if (f != stdin)
                        fclose(f);
                /* Like cryptsetup: a key file is used as is; from stdin one line. */
                if (r == 0 && f == stdin && *len > 0 && (*out)[*len - 1] == '\n')
                        (*len)--;
                return r;
        }
        _cleanup_fclose_ FILE *tty = fopen("/dev/tty", "r+e");
        struct termios old, noecho;
        if (!tty)
                return -ENXIO;
        tcgetattr(fileno(tty), &old);
        noecho = old;
        noecho.c_lflag &= (tcflag_t) ~ECHO;
        /* Echo off before the prompt: TCSAFLUSH drops what was typed
         * before, and an answer to the prompt must not be among it. */
        tcsetattr(fileno(tty), TCSAFLUSH, &noecho);
        fprintf(tty, "Enter existing LUKS password for %s: ", device);
        fflush(tty);
        char *buf = calloc(1, PASSPHRASE_MAX);
        bool ok = buf && fgets(buf, PASSPHRASE_MAX, tty);
        tcsetattr(fileno(tty), TCSAFLUSH, &old);
        fputc('\n', tty);
        if (!ok) {
                tc_secret_free(buf, PASSPHRASE_MAX);
                return -EIO;
        }
        *len = strcspn(buf, "\n");
        buf[*len] = '\0';   /* the line end, wiped with the rest of the tail */
        *out = (uint8_t *) buf;
        return 0;
}

/* As cryptsetup: a passphrase typed at the terminal may be mistyped. */
#define PASSPHRASE_TRIES 3

static int fail(const char *cmd, const struct tc_err *err) {
        fprintf(stderr, "tether luks %s: %s\n", cmd, err->msg);
        return EXIT_FAILURE;
}

static int usage(const char *text, bool help) {
        fputs(text, help ? stdout : stderr);
        return help ? EXIT_SUCCESS : CLI_EXIT_USAGE;
}

/* The options of the luks commands: each takes those its getopt string
 * names, with the same meaning in every command but -t: bind's token, or
 * (t_tests) the slot that unlock only tests, -1 for any. */
struct luks_opts {
        const char *usage;                 /* the command's, for its usage errors */
        const char *device, *keyfile, *name, *options, *config;
        int slot, token, existing_token;   /* -1: not given */
        bool yes, quiet, force, last_local, regen, with_thp, test;
        char **args;                       /* the operands after the options */
};

struct luks_command {
        const char *name, *summary;
        const char *optstring;
        const struct option *longopts;     /* NULL: getopt, which words errors its own way */
        bool t_tests;
        bool needs_slot, needs_config;     /* -d is needed by all */
        int n_args;                        /* operands */
        const char *usage;
        int (*run)(const struct luks_opts *o);
};

/* Fills o from argv and checks that what cmd needs is there; returns -1
 * when the command is to run, else the exit code (help, or a usage error). */
static int parse_opts(const struct luks_command *cmd, int argc, char **argv, struct luks_opts *o) {
        const char *u = cmd->usage;
        int c;

        *o = (struct luks_opts) { .usage = u, .slot = -1, .token = -1, .existing_token = -1 };
        optind = 1;
        while ((c = cmd->longopts ? getopt_long(argc, argv, cmd->optstring, cmd->longopts, NULL)
                                  : getopt(argc, argv, cmd->optstring)) != -1) {
                switch (c) {
                case 'h': return usage(u, true);
                case 'y': o->yes = true; break;
                case 'q': o->quiet = true; break;
                case 'f': o->force = true; break;
                case 'P': o->last_local = true; break;
                case 'r': o->regen = true; break;
                case 'p': o->with_thp = true; break;
                case 'd': o->device = optarg; break;
                case 'k': o->keyfile = optarg; break;
                case 'n': o->name = optarg; break;
                case 'o': o->options = optarg; break;
                case 'c': o->config = optarg; break;
                case 's': if (!parse_slot(optarg, &o->slot)) return usage(u, false); break;
                case 'e': if (!parse_token(optarg, &o->existing_token)) return usage(u, false); break;
                case 't':
                        o->test = cmd->t_tests;
                        if (cmd->t_tests ? strcmp(optarg, "-1") != 0 && !parse_slot(optarg, &o->slot)
                                         : !parse_token(optarg, &o->token))
                                return usage(u, false);
                        break;
                default: return usage(u, false);
                }
        }
        if (!o->device || (cmd->needs_slot && o->slot < 0) || (cmd->needs_config && !o->config) ||
            argc - optind != cmd->n_args)
                return usage(u, false);
        o->args = argv + optind;
        return -1;
}

/* ------------------------------------------------------------ bind */

static const char bind_usage[] =
        "Usage: tether luks bind [-y] [-f] [-s SLOT] [-k KEYFILE|-] [-t TOKEN] [-e TOKEN] -d DEV PIN CONFIG\n\n"
        "Binds a LUKS2 device: checks the existing passphrase once, adds a keyslot\n"
        "(PBKDF2, 1000 iterations) for a fresh random 256-bit key, and stores that key\n"
        "encrypted with PIN as a clevis token.\n\n"
        "  -d DEV      the LUKS2 device or image\n"
        "  -s SLOT     the keyslot to use (default: the first free one)\n"
        "  -t TOKEN    the token id to use (default: the first free one)\n"
        "  -k KEYFILE  read the existing passphrase from KEYFILE (- for stdin)\n"
        "  -e TOKEN    prove access with an existing binding instead of a passphrase\n"
        "  -y          trust the tang servers' advertisements without asking\n"
        "  -f          do not ask (accepted for Clevis compatibility)\n";

/* -f is accepted for Clevis compatibility and changes nothing. */
static int cmd_bind(const struct luks_opts *a) {
        struct tc_ctx ctx;
        struct tc_err err = {};
        const char *device = a->device, *keyfile = a->keyfile;
        struct tc_luks_bind_opts o = { .pin = a->args[0], .config = a->args[1], .slot = a->slot, .token = a->token,
                                       .auth = { .existing_token = a->existing_token } };
        if (cli_init_ctx(&ctx, a->yes) < 0)
                return CLI_EXIT_USAGE;

        uint8_t *pass = NULL;
        size_t pass_len = 0;
        TC_CLEANUP_SECRET(pass, pass_len);
        int r;
        for (int tries = 1;; tries++) {
                if (o.auth.existing_token < 0) {
                        r = read_passphrase(keyfile, device, &pass, &pass_len);
                        if (r == -EMSGSIZE) {
                                fprintf(stderr, "tether luks bind: the existing passphrase in %s is larger than %d "
                                        "bytes, the most a passphrase may be here\n",
                                        strcmp(keyfile, "-") == 0 ? "standard input" : keyfile, PASSPHRASE_MAX);
                                return EXIT_FAILURE;
                        }
                        if (r < 0) {
                                fprintf(stderr, "tether luks bind: cannot read the existing passphrase%s%s: %s\n",
                                        keyfile ? " from " : "", keyfile ? keyfile : " (no terminal; use -k)",
                                        strerror(-r));
                                return EXIT_FAILURE;
                        }
                        o.auth.passphrase = pass;
                        o.auth.passphrase_len = pass_len;
                }
                r = tc_luks_bind(&ctx, device, &o, &err);
                if (r >= 0)
                        return EXIT_SUCCESS;
                if (r != -EKEYREJECTED || keyfile || o.auth.existing_token >= 0 || tries == PASSPHRASE_TRIES)
                        break;
                /* Typed at the terminal: another try, as cryptsetup gives. */
                fprintf(stderr, "tether luks bind: %s; try again\n", err.msg);
                tc_secret_free(TAKE_PTR(pass), pass_len);
                pass_len = 0;
        }
        /* cryptsetup uses a key file's bytes exactly: a newline an editor
         * or echo added is part of the passphrase. */
        if (r == -EKEYREJECTED && keyfile && strcmp(keyfile, "-") != 0 && pass_len > 0 && pass[pass_len - 1] == '\n')
                fprintf(stderr, "tether luks bind: %s; the key file %s ends with a newline, which is part of the "
                        "passphrase (cryptsetup uses a key file's bytes exactly): if the passphrase has none, remove "
                        "it (truncate -s -1 %s) or write the file with printf '%%s' instead of echo\n",
                        err.msg, keyfile, keyfile);
        else
                fail("bind", &err);
        return EXIT_FAILURE;
}

/* ------------------------------------------------------------ unbind */

static const char unbind_usage[] =
        "Usage: tether luks unbind -d DEV -s SLOT [-f] [--remove-last-passphrase]\n\n"
        "Removes the binding in SLOT: its keyslot, then its token. Refuses a keyslot\n"
        "that is not a binding unless -f, and never removes the last keyslot.\n\n"
        "  -f                        remove SLOT even if it is not a binding\n"
        "  --remove-last-passphrase  remove SLOT even if it is the last keyslot that\n"
        "                            opens without a server (passphrase, key file,\n"
        "                            tpm2): the volume then opens only while a tang\n"
        "                            server answers\n";

static const struct option unbind_longopts[] = {
        { "remove-last-passphrase", no_argument, NULL, 'P' },
        { "help", no_argument, NULL, 'h' },
        {}
};

static int cmd_unbind(const struct luks_opts *a) {
        struct tc_err err = {};
        unsigned flags = (a->force ? TC_LUKS_UNBIND_FORCE : 0) | (a->last_local ? TC_LUKS_UNBIND_LAST_LOCAL : 0);
        return tc_luks_unbind(a->device, a->slot, flags, &err) < 0 ? fail("unbind", &err) : EXIT_SUCCESS;
}

/* ------------------------------------------------------------ list */

static const char list_usage[] =
        "Usage: tether luks list -d DEV [-s SLOT] [-p]\n\n"
        "Prints each binding as SLOT: PIN 'CONFIG', as clevis luks list does, with\n"
        "the whole configuration (every pin of an sss policy, nested ones too).\n\n"
        "  -p   add each tang server's signing-key thumbprint (\"thp\"), so that the\n"
        "       printed configuration binds again without asking\n";

static int cmd_list(const struct luks_opts *a) {
        struct tc_err err = {};
        _cleanup_(tc_luks_bindings_clear) struct tc_luks_bindings b = {};
        const char *device = a->device;
        int slot = a->slot;
        if (tc_luks_list(device, a->with_thp, &b, &err) < 0)
                return fail("list", &err);
        int rc = EXIT_SUCCESS;
        bool any = false;
        for (size_t i = 0; i < b.n; i++) {
                const struct tc_luks_binding *x = &b.items[i];
                if (x->malformed) {
                        fprintf(stderr, "tether luks list: %s: token %d is not a valid clevis token (%s); remove it with cryptsetup token remove --token-id %d %s\n",
                                device, x->token, x->malformed, x->token, device);
                        rc = EXIT_FAILURE;
                        continue;
                }
                if (slot >= 0 && x->slot != slot)
                        continue;
                _cleanup_free_ char *cfg = x->config ? json_dumps(x->config, JSON_COMPACT) : NULL;
                if (x->slot < 0 || !x->slot_active) {
                        fprintf(stderr, "tether luks list: %s: token %d is an orphan (%s); remove it with cryptsetup token remove --token-id %d %s\n",
                                device, x->token, x->slot < 0 ? "assigned to no keyslot" : "its keyslot is not in use", x->token,
                                device);
                        rc = EXIT_FAILURE;
                        continue;
                }
                /* Both come from the header: anyone could have written them. */
                _cleanup_free_ char *pin = tc_escape_dup(x->pin ? x->pin : "unknown");
                _cleanup_free_ char *shown = tc_escape_dup(cfg ? cfg : "{}");
                printf("%d: %s '%s'\n", x->slot, pin ? pin : "?", shown ? shown : "?");
                any = true;
        }
        if (fflush(stdout) != 0) {
                fprintf(stderr, "tether luks list: cannot write the list: %s\n", strerror(errno));
                return EXIT_FAILURE;
        }
        if (!any && slot >= 0) {
                fprintf(stderr, "tether luks list: %s: slot %d is not a tether/clevis binding\n", device, slot);
                return EXIT_FAILURE;
        }
        return rc;
}

/* ------------------------------------------------------------ pass */

static const char pass_usage[] =
        "Usage: tether luks pass -d DEV -s SLOT\n\n"
        "Prints the passphrase of SLOT's binding (no newline), after checking that it\n"
        "opens that slot.\n";

static int cmd_pass(const struct luks_opts *a) {
        struct tc_ctx ctx;
        struct tc_err err = {};
        if (cli_init_ctx(&ctx, false) < 0)
                return CLI_EXIT_USAGE;
        uint8_t *key = NULL;
        size_t len = 0;
        TC_CLEANUP_SECRET(key, len);
        if (tc_luks_pass(&ctx, a->device, a->slot, &key, &len, &err) < 0)
                return fail("pass", &err);
        int r = cli_write_all(STDOUT_FILENO, key, len);
        if (r < 0)
                fprintf(stderr, "tether luks pass: cannot write the passphrase: %s\n", strerror(-r));
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* ------------------------------------------------------------ unlock */

static const char unlock_usage[] =
        "Usage: tether luks unlock -d DEV [-n NAME] [-t SLOT] [-o OPTIONS]\n\n"
        "Opens DEV as /dev/mapper/NAME (default luks-UUID) with the first binding that\n"
        "works; the bindings are tried at once. With -t, only tests SLOT's binding\n"
        "(any binding with -t -1) without activating. -o takes cryptsetup's open\n"
        "flags: discard, readonly.\n";

static int cmd_unlock(const struct luks_opts *a) {
        uint32_t flags = 0;
        struct tc_ctx ctx;
        struct tc_err err = {};
        const char *device = a->device, *name = a->name;
        for (char *o = a->options ? strdupa(a->options) : NULL, *tok; o && (tok = strsep(&o, ","));) {
                if (strcmp(tok, "discard") == 0 || strcmp(tok, "allow-discards") == 0)
                        flags |= CRYPT_ACTIVATE_ALLOW_DISCARDS;
                else if (strcmp(tok, "readonly") == 0 || strcmp(tok, "read-only") == 0)
                        flags |= CRYPT_ACTIVATE_READONLY;
                else if (*tok) {
                        fprintf(stderr, "tether luks unlock: unknown option \"%s\"\n", tok);
                        return CLI_EXIT_USAGE;
                }
        }
        if (cli_init_ctx(&ctx, false) < 0)
                return CLI_EXIT_USAGE;
        _cleanup_free_ char *default_name = NULL;
        if (!a->test && !name) {
                _cleanup_free_ char *uuid = NULL;
                /* The library's message: a missing or unreadable device is
                 * not "not a LUKS device". */
                if (tc_luks_uuid(device, &uuid, &err) < 0)
                        return fail("unlock", &err);
                if (asprintf(&default_name, "luks-%s", uuid) < 0) {
                        default_name = NULL; /* undefined after a failed asprintf, and freed on return */
                        fprintf(stderr, "tether luks unlock: out of memory\n");
                        return EXIT_FAILURE;
                }
                name = default_name;
        }
        int r = tc_luks_unlock(&ctx, device, a->test ? NULL : name, a->slot, flags, &err);
        if (r < 0)
                return fail("unlock", &err);
        return EXIT_SUCCESS;
}

/* ------------------------------------------------------------ regen, edit, report */

static const char regen_usage[] =
        "Usage: tether luks regen -d DEV -s SLOT [-q] [-y]\n\n"
        "Re-encrypts SLOT's key to its servers' current keys (after a key rotation).\n"
        "The new keys are used without asking when a signing key the binding already\n"
        "trusts vouches for them (tang's /adv/THP, served for rotated keys too);\n"
        "otherwise they are shown for confirmation, as at bind time. The keyslot is\n"
        "not touched; the token is replaced in one header write.\n\n"
        "  -q   never ask: refuse keys that no trusted key vouches for\n"
        "  -y   trust the servers' new keys even if no trusted key vouches for them\n";

static const char edit_usage[] =
        "Usage: tether luks edit -d DEV -s SLOT -c CONFIG [-y]\n\n"
        "Re-binds SLOT with a new configuration for the same pin (for example a\n"
        "server added to an sss policy), in one header write.\n";

static const char report_usage[] =
        "Usage: tether luks report -d DEV -s SLOT [-q] [-r [-y]]\n\n"
        "Reports the tang keys SLOT's binding uses that its servers no longer\n"
        "advertise (rotated away). Exit 1 with -q when there are any; -r regenerates\n"
        "the binding when there are, as tether luks regen does (-q: never asking,\n"
        "-y: trusting new keys that no trusted key vouches for).\n";

/* What the terminal prompt says first when regen has to ask. */
static const char regen_warning[] =
        "WARNING: no signing key this binding trusted vouches for the keys the server\n"
        "serves now: it was replaced, its old keys deleted, or someone is in between.\n"
        "Check the thumbprints below with tether-keys show (or tang-show-keys) on the\n"
        "server.";

/* -k is accepted and not used, as clevis #492 asks: the binding itself
 * proves access. */
static int regen_edit(const struct luks_opts *a, bool edit) {
        struct tc_ctx ctx;
        struct tc_err err = {};
        if (!edit && a->config)
                return usage(a->usage, false);
        if (cli_init_ctx(&ctx, a->yes) < 0)
                return CLI_EXIT_USAGE;
        /* -q: never ask; keys that no trusted key vouches for are refused. */
        if (a->quiet)
                ctx.trust = NULL;
        if (!edit)
                ctx.trust_data = (void *) regen_warning;
        return tc_luks_rebind(&ctx, a->device, a->slot, a->config, &err) < 0 ? fail(edit ? "edit" : "regen", &err)
                                                                             : EXIT_SUCCESS;
}

static int cmd_regen(const struct luks_opts *a) {
        return regen_edit(a, false);
}

static int cmd_edit(const struct luks_opts *a) {
        return regen_edit(a, true);
}

static int cmd_report(const struct luks_opts *a) {
        struct tc_ctx ctx;
        struct tc_err err = {};
        _cleanup_(tc_luks_report_clear) struct tc_luks_report rep = {};
        const char *device = a->device;
        int slot = a->slot;
        bool quiet = a->quiet;
        if (cli_init_ctx(&ctx, false) < 0)
                return CLI_EXIT_USAGE;
        if (tc_luks_report(&ctx, device, slot, &rep, &err) < 0)
                return fail("report", &err);
        for (size_t i = 0; i < rep.n_stale; i++) {
                _cleanup_free_ char *line = tc_escape_dup(rep.stale[i]);  /* names the header's URL */
                printf("%s\n", line ? line : "?");
        }
        if (rep.n_stale == 0) {
                if (!quiet)
                        printf("%s slot %d: every key is still advertised\n", device, slot);
                return EXIT_SUCCESS;
        }
        if (a->regen) {
                ctx.trust_all = a->yes;
                ctx.trust_data = (void *) regen_warning;
                if (quiet)
                        ctx.trust = NULL;
                if (tc_luks_rebind(&ctx, device, slot, NULL, &err) < 0)
                        return fail("report", &err);
                printf("%s slot %d: regenerated\n", device, slot);
                return EXIT_SUCCESS;
        }
        if (!quiet)
                fprintf(stderr, "tether luks report: to re-encrypt slot %d to the keys its servers advertise now, run "
                        "tether luks regen -d %s -s %d\n", slot, device, slot);
        return quiet ? EXIT_FAILURE : EXIT_SUCCESS;
}

static const struct luks_command luks_commands[] = {
        { .name = "bind", .summary = "bind a LUKS2 device to a pin", .optstring = "hyfd:s:k:t:e:", .n_args = 2,
          .usage = bind_usage, .run = cmd_bind },
        { .name = "unbind", .summary = "remove a binding", .optstring = "hfd:s:", .longopts = unbind_longopts,
          .needs_slot = true, .usage = unbind_usage, .run = cmd_unbind },
        { .name = "list", .summary = "list the bindings of a device", .optstring = "hpd:s:", .usage = list_usage,
          .run = cmd_list },
        { .name = "pass", .summary = "print a binding's passphrase", .optstring = "hd:s:", .needs_slot = true,
          .usage = pass_usage, .run = cmd_pass },
        { .name = "unlock", .summary = "open a device with its bindings", .optstring = "hd:n:t:o:", .t_tests = true,
          .usage = unlock_usage, .run = cmd_unlock },
        { .name = "regen", .summary = "rebind to the servers' current keys", .optstring = "hqyd:s:c:k:",
          .needs_slot = true, .usage = regen_usage, .run = cmd_regen },
        { .name = "report", .summary = "report rotated keys a binding still uses", .optstring = "hqryd:s:",
          .needs_slot = true, .usage = report_usage, .run = cmd_report },
        { .name = "edit", .summary = "change a binding's configuration", .optstring = "hqyd:s:c:k:", .needs_slot = true,
          .needs_config = true, .usage = edit_usage, .run = cmd_edit },
};

int cli_luks(int argc, char **argv) {
        if (argc < 2 || cli_is_help(argv[1])) {
                FILE *f = argc < 2 ? stderr : stdout;
                fputs("Usage: tether luks COMMAND [OPTIONS]\n\nCommands:\n", f);
                for (size_t i = 0; i < ELEMENTSOF(luks_commands); i++)
                        fprintf(f, "  %-8s %s\n", luks_commands[i].name, luks_commands[i].summary);
                return argc < 2 ? CLI_EXIT_USAGE : EXIT_SUCCESS;
        }
        /* --help after a subcommand, as after tether's own commands. */
        for (int i = 2; i < argc; i++)
                if (strcmp(argv[i], "--help") == 0)
                        argv[i] = "-h";
        for (size_t i = 0; i < ELEMENTSOF(luks_commands); i++)
                if (strcmp(argv[1], luks_commands[i].name) == 0) {
                        struct luks_opts o;
                        int r = parse_opts(&luks_commands[i], argc - 1, argv + 1, &o);
                        return r >= 0 ? r : luks_commands[i].run(&o);
                }
        fprintf(stderr, "tether luks: unknown command \"%s\"\n", argv[1]);
        return CLI_EXIT_USAGE;
}
