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
#include <signal.h>
#include <stdarg.h>
#include <termios.h>
#include <unistd.h>
/* Constants only: luks.c loads the library when a command needs it. */
#include <libcryptsetup.h>

#define PASSPHRASE_MAX 8192
/* tether luks report: no binding is stale, but a server could not be asked. */
#define EXIT_REPORT_UNREACHABLE 3

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
        return parse_int(s, TC_LUKS2_KEYSLOTS - 1, slot);
}

static bool parse_token(const char *s, int *token) {
        return parse_int(s, TC_LUKS2_TOKENS - 1, token);
}

/* One line, without its newline, as Clevis's `read -r` takes it (and
 * cryptsetup a passphrase from standard input): what follows is not read. */
static int read_line(FILE *f, uint8_t **out, size_t *len) {
        uint8_t *buf = calloc(1, PASSPHRASE_MAX);
        size_t n = 0, cap = PASSPHRASE_MAX;
        TC_CLEANUP_SECRET(buf, cap);
        int c = EOF;
        if (!buf)
                return -ENOMEM;
        while (n < PASSPHRASE_MAX && (c = getc(f)) != EOF && c != '\n')
                buf[n++] = (uint8_t) c;
        if (ferror(f))
                return -EIO;
        if (n == PASSPHRASE_MAX)
                return -EMSGSIZE;
        if (n == 0 && c == EOF)
                return -ENODATA;
        *out = TAKE_PTR(buf);
        *len = n;
        return 0;
}

/* The terminal's settings while echo is off at a prompt: a Ctrl-C or a
 * kill there must not leave the terminal without echo. */
static struct termios prompt_termios;
static volatile sig_atomic_t prompt_tty = -1;

static void restore_terminal_and_die(int sig) {
        if (prompt_tty >= 0)
                tcsetattr(prompt_tty, TCSANOW, &prompt_termios);
        signal(sig, SIG_DFL);
        raise(sig);
}

static void on_fatal_signals(void (*handler)(int)) {
        static const int fatal[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
        for (size_t i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++)
                signal(fatal[i], handler);
}

/* Where read_passphrase() reads from, for messages. */
static const char *passphrase_source(const char *keyfile) {
        if (keyfile)
                return strcmp(keyfile, "-") == 0 ? "standard input" : keyfile;
        return isatty(STDIN_FILENO) ? "the terminal" : "standard input";
}

static const char *passphrase_error(const char *keyfile, int r) {
        bool file = keyfile && strcmp(keyfile, "-") != 0;
        if (r == -EMSGSIZE)
                return file ? "larger than 8 KiB, the most a passphrase may be here" : "no newline in the first 8 KiB";
        return r == -ENODATA ? "it is empty" : strerror(-r);
}

/* A key file (all of it, as cryptsetup --key-file); "-": the first line of
 * standard input; none: a prompt without echo if standard input is a
 * terminal, else its first line, as Clevis reads it. */
static int read_passphrase(const char *keyfile, const char *device, uint8_t **out, size_t *len) {
        if (keyfile && strcmp(keyfile, "-") != 0) {
                _cleanup_fclose_ FILE *f = fopen(keyfile, "re");
                if (!f)
                        return -errno;
                setvbuf(f, NULL, _IONBF, 0);
                return cli_read_all(f, PASSPHRASE_MAX, out, len);
        }
        /* Unbuffered: the passphrase goes only into the wiped buffer, and
         * what follows its line stays unread, as `read -r` leaves it. */
        if (keyfile || !isatty(STDIN_FILENO)) {
                setvbuf(stdin, NULL, _IONBF, 0);
                return read_line(stdin, out, len);
        }
        _cleanup_fclose_ FILE *tty = fopen("/dev/tty", "r+e");
        struct termios noecho;
        if (!tty)
                return -ENXIO;
        /* No stdio buffer: the passphrase goes only into the wiped one. */
        setvbuf(tty, NULL, _IONBF, 0);
        bool restore = tcgetattr(fileno(tty), &prompt_termios) == 0;
        if (restore) {
                noecho = prompt_termios;
                noecho.c_lflag &= (tcflag_t) ~ECHO;
                prompt_tty = fileno(tty);
                on_fatal_signals(restore_terminal_and_die);
                /* Echo off before the prompt: TCSAFLUSH drops what was typed
                 * before, and an answer to the prompt must not be among it. */
                tcsetattr(fileno(tty), TCSAFLUSH, &noecho);
        }
        fprintf(tty, "Enter existing LUKS password for %s: ", device);
        int r = read_line(tty, out, len);
        if (restore) {
                tcsetattr(fileno(tty), TCSAFLUSH, &prompt_termios);
                on_fatal_signals(SIG_DFL);
                prompt_tty = -1;
        }
        fputc('\n', tty);
        return r;
}

struct passphrase_from {
        const char *keyfile, *device;
};

/* tc_luks_passphrase_fn: for regen and edit, read as bind reads it. */
static int ask_passphrase(void *data, uint8_t **pass, size_t *len, struct tc_err *err) {
        const struct passphrase_from *p = data;
        int r = read_passphrase(p->keyfile, p->device, pass, len);
        return r < 0 ? tc_fail(err, r, "cannot read it from %s: %s", passphrase_source(p->keyfile), passphrase_error(p->keyfile, r))
                     : 0;
}

/* As cryptsetup: a passphrase typed at the terminal may be mistyped. */
#define PASSPHRASE_TRIES 3

static int fail(const char *cmd, const struct tc_err *err) {
        fprintf(stderr, "tether luks %s: %s\n", cmd, err->msg);
        return EXIT_FAILURE;
}

/* The options of the luks commands: each takes those its getopt string
 * names, with the same meaning in every command but -t: bind's token, or
 * (t_tests) the slot that unlock only tests, -1 for any. */
struct luks_opts {
        const char *device, *keyfile, *name, *options, *config;
        int slot, token, existing_token;   /* -1: not given */
        bool yes, quiet, force, last_local, regen, with_thp, test, json;
        char **args;                       /* the operands after the options */
};

struct luks_command {
        const char *name, *summary;
        const char *optstring;
        const struct option *longopts;     /* NULL: short options only */
        bool t_tests;
        bool needs_slot, needs_config;     /* -d is needed by all */
        int n_args;                        /* operands */
        const char *arg_names;             /* their names, "PIN and CONFIG" */
        const char *usage;
        int (*run)(const struct luks_opts *o);
};

/* "invalid -s SLOT 'x': a number from 0 to 31" */
static int bad_number(const struct usage *u, const char *what, const char *arg, int max, const char *or) {
        return usage_error(u, "invalid %s '%s': a number from 0 to %d%s", what, arg, max, or);
}

/* Fills o from argv and checks that what cmd needs is there; returns -1
 * when the command is to run, else the exit code (help, or a usage error
 * that says what was wrong). */
static int parse_opts(const struct luks_command *cmd, int argc, char **argv, struct luks_opts *o) {
        char prog[32];
        int c;

        snprintf(prog, sizeof(prog), "tether luks %s", cmd->name);
        const struct usage u = { .prog = prog, .text = cmd->usage };
        const int max_slot = TC_LUKS2_KEYSLOTS - 1, max_token = TC_LUKS2_TOKENS - 1;

        *o = (struct luks_opts) { .slot = -1, .token = -1, .existing_token = -1 };
        optind = 1;
        while ((c = usage_getopt(&u, argc, argv, cmd->optstring, cmd->longopts)) != -1) {
                switch (c) {
                case 'h': return usage_help(&u);
                case 'y': o->yes = true; break;
                case 'q': o->quiet = true; break;
                case 'f': o->force = true; break;
                case 'P': o->last_local = true; break;
                case 'r': o->regen = true; break;
                case 'p': o->with_thp = true; break;
                case 'J': o->json = true; break;
                case 'd': o->device = optarg; break;
                case 'k': o->keyfile = optarg; break;
                case 'n': o->name = optarg; break;
                case 'o': o->options = optarg; break;
                case 'c': o->config = optarg; break;
                case 's':
                        if (!parse_slot(optarg, &o->slot))
                                return bad_number(&u, "-s SLOT", optarg, max_slot, "");
                        break;
                case 'e':
                        if (!parse_token(optarg, &o->existing_token))
                                return bad_number(&u, "-e TOKEN", optarg, max_token, "");
                        break;
                case 't':
                        o->test = cmd->t_tests;
                        if (cmd->t_tests && strcmp(optarg, "-1") != 0 && !parse_slot(optarg, &o->slot))
                                return bad_number(&u, "-t SLOT", optarg, max_slot, ", or -1 for any");
                        if (!cmd->t_tests && !parse_token(optarg, &o->token))
                                return bad_number(&u, "-t TOKEN", optarg, max_token, "");
                        break;
                default: return CLI_EXIT_USAGE;  /* usage_getopt said what */
                }
        }
        int n = argc - optind;
        if (!o->device)
                return usage_error(&u, "missing -d DEV, the LUKS2 device");
        if (cmd->needs_slot && o->slot < 0)
                return usage_error(&u, "missing -s SLOT, the binding's keyslot");
        if (cmd->needs_config && !o->config)
                return usage_error(&u, "missing -c CONFIG, the new configuration");
        if (n > cmd->n_args)
                return usage_error(&u, "unexpected argument '%s'", argv[optind + cmd->n_args]);
        if (n < cmd->n_args)
                return usage_error(&u, "missing %s", n == 0 ? cmd->arg_names : strrchr(cmd->arg_names, ' ') + 1);
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
        "  -k KEYFILE  read the existing passphrase from KEYFILE (-: the first line of\n"
        "              standard input); without -k, from the terminal or, if standard\n"
        "              input is not one, its first line\n"
        "  -e TOKEN    prove access with an existing token instead of a passphrase: a\n"
        "              clevis binding, or one libcryptsetup opens (luks2-keyring)\n"
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
        /* Typed at the terminal, a passphrase may be mistyped: 3 tries, as
         * cryptsetup gives. One from a file or standard input is what it is. */
        bool typed = !keyfile && o.auth.existing_token < 0 && isatty(STDIN_FILENO);
        for (int tries = 1;; tries++) {
                if (o.auth.existing_token < 0) {
                        r = read_passphrase(keyfile, device, &pass, &pass_len);
                        if (r < 0) {
                                fprintf(stderr, "tether luks bind: cannot read the existing passphrase from %s: %s\n",
                                        passphrase_source(keyfile), passphrase_error(keyfile, r));
                                return EXIT_FAILURE;
                        }
                        o.auth.passphrase = pass;
                        o.auth.passphrase_len = pass_len;
                }
                r = tc_luks_bind(&ctx, device, &o, &err);
                if (r >= 0)
                        return EXIT_SUCCESS;
                if (r != -EKEYREJECTED || !typed || tries == PASSPHRASE_TRIES)
                        break;
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
        "Usage: tether luks regen -d DEV -s SLOT [-q] [-y] [-k KEYFILE|-]\n\n"
        "Re-encrypts SLOT's key to its servers' current keys (after a key rotation).\n"
        "The new keys are used without asking when a signing key the binding already\n"
        "trusts vouches for them (tang's /adv/THP, served for rotated keys too);\n"
        "otherwise they are shown for confirmation, as at bind time. The keyslot is\n"
        "not touched; the token is replaced in one header write.\n\n"
        "If a server no longer has the binding's key (HTTP 404), the slot gets a new\n"
        "key, given a passphrase that opens the volume, read as bind reads it.\n\n"
        "  -q          never ask: refuse keys that no trusted key vouches for\n"
        "  -y          trust the servers' new keys even if no trusted key vouches for them\n"
        "  -k KEYFILE  the passphrase, if needed, from KEYFILE (-: standard input)\n";

static const char edit_usage[] =
        "Usage: tether luks edit -d DEV -s SLOT -c CONFIG [-f] [-y] [-q] [-k KEYFILE|-]\n\n"
        "Re-binds SLOT with a new configuration for the same pin (for example a\n"
        "server added to an sss policy), in one header write. A server the binding\n"
        "already uses is trusted as regen trusts it.\n\n"
        "  -f          rebind even if CONFIG is the binding's configuration\n"
        "  -y          trust new servers' keys without asking\n"
        "  -q          never ask: refuse a server whose keys would need the question\n"
        "  -k KEYFILE  the passphrase, if needed (as for regen), from KEYFILE\n";

static const char report_usage[] =
        "Usage: tether luks report -d DEV [-s SLOT] [--json] [-q] [-r [-y]]\n\n"
        "Asks each tang server of every binding of DEV (of SLOT's only, with -s)\n"
        "about the keys the binding uses; one line per server, naming DEV and slot:\n"
        "key current, key rotated (still recoverable: the server still has it), key\n"
        "deleted (dead: the server no longer has it), or unreachable (and why).\n"
        "Exit 0: every key current; 1: a binding is stale (rotated or deleted) or\n"
        "invalid, or DEV cannot be read; 3: none stale, but a server unreachable.\n\n"
        "  -s SLOT  only SLOT's binding\n"
        "  --json   print the report as one JSON object instead\n"
        "  -q       print only what is not current, and no hint\n"
        "  -r       with -s: regenerate SLOT's binding if it is stale, as tether luks\n"
        "           regen does (with -q never asking)\n"
        "  -y       with -r: trust new keys that no trusted key vouches for\n";

static const struct option report_longopts[] = {
        { "json", no_argument, NULL, 'J' },
        { "help", no_argument, NULL, 'h' },
        {}
};

/* What the terminal prompt says first when regen has to ask. */
static const char regen_warning[] =
        "WARNING: no signing key this binding trusted vouches for the keys the server\n"
        "serves now: it was replaced, its old keys deleted, or someone is in between.\n"
        "Check the thumbprints below with tether-keys show (or tang-show-keys) on the\n"
        "server.";

/* The binding itself proves access; -k (clevis #492), standard input or
 * the terminal give the passphrase only when the binding's key is gone,
 * as Clevis then asks for it. */
static int regen_edit(const struct luks_opts *a, bool edit) {
        struct tc_ctx ctx;
        struct tc_err err = {};
        struct passphrase_from from = { .keyfile = a->keyfile, .device = a->device };
        struct tc_luks_rebind_opts o = { .config = a->config, .force = a->force, .passphrase = ask_passphrase,
                                         .passphrase_data = &from };
        if (cli_init_ctx(&ctx, a->yes) < 0)
                return CLI_EXIT_USAGE;
        /* -q: never ask; keys that no trusted key vouches for are refused. */
        if (a->quiet)
                ctx.trust = NULL;
        if (!edit)
                ctx.trust_data = (void *) regen_warning;
        int r = tc_luks_rebind(&ctx, a->device, a->slot, &o, &err);
        if (r < 0)
                return fail(edit ? "edit" : "regen", &err);
        /* Done, with something the user should know (where the binding is). */
        if (r > 0)
                fprintf(stderr, "tether luks %s: %s\n", edit ? "edit" : "regen", err.msg);
        return EXIT_SUCCESS;
}

static int cmd_regen(const struct luks_opts *a) {
        return regen_edit(a, false);
}

static int cmd_edit(const struct luks_opts *a) {
        return regen_edit(a, true);
}

/* "DEV slot N" (or "DEV token T" for a token of no keyslot): every line
 * names its binding, so lines of many devices can be merged and grepped. */
static int print_report_line(const char *device, const struct tc_luks_report_binding *b, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static int print_report_line(const char *device, const struct tc_luks_report_binding *b, const char *fmt, ...) {
        _cleanup_free_ char *text = NULL, *line = NULL;
        va_list ap;
        va_start(ap, fmt);
        int n = vasprintf(&text, fmt, ap);
        va_end(ap);
        if (n < 0)
                text = NULL; /* undefined after a failure, and freed on return */
        if (!text || (b->slot >= 0 ? asprintf(&line, "%s slot %d: %s", device, b->slot, text)
                                   : asprintf(&line, "%s token %d: %s", device, b->token, text)) < 0) {
                line = NULL;
                return -ENOMEM;
        }
        /* URLs and errors come from the header: anyone could have written them. */
        _cleanup_free_ char *shown = tc_escape_dup(line);
        if (!shown)
                return -ENOMEM;
        printf("%s\n", shown);
        return 0;
}

/* "signing key THP, exchange key THP": the keys the server no longer advertises. */
static char *unadvertised_keys(const struct tc_luks_report_server *s) {
        size_t len = 1;
        for (size_t i = 0; i < s->n_keys; i++)
                len += strlen(s->keys[i].thp) + sizeof(", exchange key ");
        char *out = calloc(1, len);
        for (size_t i = 0; out && i < s->n_keys; i++)
                if (!s->keys[i].advertised)
                        snprintf(out + strlen(out), len - strlen(out), "%s%s key %s", out[0] ? ", " : "",
                                 s->keys[i].signing ? "signing" : "exchange", s->keys[i].thp);
        return out;
}

static int print_report_server(const char *device, const struct tc_luks_report_binding *b,
                               const struct tc_luks_report_server *s, bool quiet) {
        _cleanup_free_ char *keys = NULL;
        switch (s->state) {
        case TC_REPORT_CURRENT:
                return quiet ? 0 : print_report_line(device, b, "tang %s: key current", s->url);
        case TC_REPORT_ROTATED:
        case TC_REPORT_DELETED:
                if (!(keys = unadvertised_keys(s)))
                        return -ENOMEM;
                /* With its exchange key still advertised, the binding
                 * recovers whatever became of the signing keys it pinned
                 * (a host's binding after a shared rotation and a prune):
                 * "the server still has it" would be a guess, maybe false. */
                return print_report_line(device, b, "tang %s: %s: %s", s->url,
                                         s->state != TC_REPORT_ROTATED ? "key deleted, dead (server no longer has it)"
                                         : s->kid_advertised
                                                 ? "key rotated, still recoverable (its exchange key is still advertised)"
                                                 : "key rotated, still recoverable (server still has it)",
                                         keys);
        case TC_REPORT_REVOKED:
                return print_report_line(device, b, "tang %s: host revoked: %s", s->url, s->error ? s->error : "?");
        default:
                return print_report_line(device, b, "tang %s: unreachable: %s", s->url, s->error ? s->error : "?");
        }
}

static int print_report(const char *device, const struct tc_luks_report *rep, bool quiet, bool hint) {
        for (size_t i = 0; i < rep->n; i++) {
                const struct tc_luks_report_binding *b = &rep->bindings[i];
                int r = 0;
                if (b->state == TC_REPORT_INVALID)
                        r = print_report_line(device, b, "invalid: %s", b->error ? b->error : "?");
                else if (b->n_servers == 0 && !quiet)
                        r = print_report_line(device, b, "%s: nothing to check (no tang server)", b->pin ? b->pin : "?");
                for (size_t j = 0; r >= 0 && j < b->n_servers; j++)
                        r = print_report_server(device, b, &b->servers[j], quiet);
                if (r < 0) {
                        fprintf(stderr, "tether luks report: out of memory\n");
                        return r;
                }
                if (tc_luks_report_stale(b->state) && b->slot >= 0 && hint)
                        fprintf(stderr, "tether luks report: to re-encrypt slot %d to the keys its servers advertise "
                                "now, run tether luks regen -d %s -s %d\n", b->slot, device, b->slot);
        }
        return 0;
}

static int print_report_json(const char *device, const struct tc_luks_report *rep) {
        json_auto_t *j = tc_luks_report_json(device, rep);
        _cleanup_free_ char *text = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        if (!text) {
                fprintf(stderr, "tether luks report: out of memory\n");
                return -ENOMEM;
        }
        printf("%s\n", text);
        return 0;
}

/* Clevis's exit status: 1 for a stale binding (report || alert); an
 * unreachable server alone is 3, so a script can tell "regen" from
 * "network". */
static int report_status(const struct tc_luks_report *rep) {
        enum tc_report_state worst = TC_REPORT_UNCHECKED;
        for (size_t i = 0; i < rep->n; i++)
                if (rep->bindings[i].state > worst)
                        worst = rep->bindings[i].state;
        /* Revoked: it no longer unlocks through that server, which no
         * regen changes; as bad as a deleted key. */
        if (tc_luks_report_stale(worst) || worst == TC_REPORT_REVOKED || worst == TC_REPORT_INVALID)
                return EXIT_FAILURE;
        return worst == TC_REPORT_UNREACHABLE ? EXIT_REPORT_UNREACHABLE : EXIT_SUCCESS;
}

static int cmd_report(const struct luks_opts *a) {
        static const struct usage u = { .prog = "tether luks report", .text = report_usage };
        struct tc_ctx ctx;
        struct tc_err err = {};
        _cleanup_(tc_luks_report_clear) struct tc_luks_report rep = {};
        const char *device = a->device;
        int slot = a->slot;
        /* One question per binding (its trust, its passphrase) over a whole
         * device would be a dialogue no script can hold: one slot at a time. */
        if (a->regen && slot < 0)
                return usage_error(&u, "-r regenerates one binding: give -s SLOT (the stale slots are those "
                                   "tether luks report -d %s names)", device);
        if (a->regen && a->json)
                return usage_error(&u, "--json only reports: give -r without --json");
        if (cli_init_ctx(&ctx, false) < 0)
                return CLI_EXIT_USAGE;
        if (tc_luks_report(&ctx, device, slot, &rep, &err) < 0)
                return fail("report", &err);
        if ((a->json ? print_report_json(device, &rep) : print_report(device, &rep, a->quiet, !a->quiet && !a->regen)) < 0)
                return EXIT_FAILURE;
        if (fflush(stdout) != 0) {
                fprintf(stderr, "tether luks report: cannot write the report: %s\n", strerror(errno));
                return EXIT_FAILURE;
        }
        if (!a->regen || !tc_luks_report_stale(rep.bindings[0].state))
                return report_status(&rep);
        ctx.trust_all = a->yes;
        ctx.trust_data = (void *) regen_warning;
        if (a->quiet)
                ctx.trust = NULL;
        struct passphrase_from from = { .device = device };
        struct tc_luks_rebind_opts o = { .passphrase = ask_passphrase, .passphrase_data = &from };
        int r = tc_luks_rebind(&ctx, device, slot, &o, &err);
        if (r < 0)
                return fail("report", &err);
        if (r > 0)
                fprintf(stderr, "tether luks report: %s\n", err.msg);
        printf("%s slot %d: regenerated\n", device, slot);
        return EXIT_SUCCESS;
}

static const struct luks_command luks_commands[] = {
        { .name = "bind", .summary = "bind a LUKS2 device to a pin", .optstring = "hyfd:s:k:t:e:", .n_args = 2,
          .arg_names = "PIN and CONFIG",
          .usage = bind_usage, .run = cmd_bind },
        { .name = "unbind", .summary = "remove a binding", .optstring = "hfd:s:", .longopts = unbind_longopts,
          .needs_slot = true, .usage = unbind_usage, .run = cmd_unbind },
        { .name = "list", .summary = "list the bindings of a device", .optstring = "hpd:s:", .usage = list_usage,
          .run = cmd_list },
        { .name = "pass", .summary = "print a binding's passphrase", .optstring = "hd:s:", .needs_slot = true,
          .usage = pass_usage, .run = cmd_pass },
        { .name = "unlock", .summary = "open a device with its bindings", .optstring = "hd:n:t:o:", .t_tests = true,
          .usage = unlock_usage, .run = cmd_unlock },
        { .name = "regen", .summary = "rebind to the servers' current keys", .optstring = "hqyd:s:k:",
          .needs_slot = true, .usage = regen_usage, .run = cmd_regen },
        { .name = "report", .summary = "report the state of the server keys bindings use", .optstring = "hqryd:s:",
          .longopts = report_longopts, .usage = report_usage, .run = cmd_report },
        { .name = "edit", .summary = "change a binding's configuration", .optstring = "hqyfd:s:c:k:", .needs_slot = true,
          .needs_config = true, .usage = edit_usage, .run = cmd_edit },
};

static void print_luks_usage(FILE *f) {
        fputs("Usage: tether luks COMMAND [OPTIONS]\n\nCommands:\n", f);
        for (size_t i = 0; i < ELEMENTSOF(luks_commands); i++)
                fprintf(f, "  %-8s %s\n", luks_commands[i].name, luks_commands[i].summary);
        fputs("\n`tether luks COMMAND -h` explains each.\n", f);
}

int cli_luks(int argc, char **argv) {
        static const struct usage u = { .prog = "tether luks", .print = print_luks_usage };
        if (argc < 2)
                return usage_error(&u, "missing COMMAND");
        if (usage_is_help(argv[1]))
                return usage_help(&u);
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
        if (argv[1][0] == '-')
                return usage_error(&u, "unrecognized option '%s'", argv[1]);
        return usage_error(&u, "unknown command '%s'", argv[1]);
}
