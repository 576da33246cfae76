/* tether: the command line, a thin shell over the client library. Clevis's
 * grammar: tether encrypt PIN CONFIG [-y] < plaintext > jwe,
 * tether decrypt < jwe > plaintext. Exit 0, 1 on failure, 2 on usage. */
#include "cleanup.h"
#include "cli.h"
#include "harden.h"
#include "tether.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define INPUT_MAX (16 * 1024 * 1024)       /* a JWE: client/proto/jwe.h TC_JWE_MAX */
#define PLAINTEXT_MAX (8 * 1024 * 1024)    /* what fits in one: TC_JWE_MAX / 2 */

static const struct usage encrypt_usage = {
        .prog = "tether encrypt",
        .text = "Usage: tether encrypt PIN CONFIG [-y] < PLAINTEXT > JWE\n\n"
              "Encrypts standard input with PIN (tang, sss, null, or any clevis-encrypt-PIN\n"
              "program in /usr/bin, /usr/local/bin or TETHER_PIN_PATH) and its JSON CONFIG,\n"
              "writing a compact JWE that "
              "`tether decrypt` and `clevis decrypt` accept.\n\n"
              "  -y          trust the tang servers' advertisements without asking\n\n"
              "  tang   {\"url\":\"http://server\", \"thp\":\"SIGNING-KEY-THUMBPRINT\"}\n"
              "         (\"adv\": a file name or the advertisement itself, instead of fetching it)\n"
              "  sss    {\"t\":2, \"pins\":{\"tang\":[{\"url\":...},{\"url\":...},{\"url\":...}]}}\n"
              "  null   {} (no protection; for tests), {\"fail\":true} cannot be decrypted\n\n"
              "Environment: TETHER_TIMEOUT, seconds allowed for each attempt at a server\n"
              "(default 10; 3 attempts when the server cannot be reached).\n",
};

/* The options every command takes: -h, --help. */
static const struct option help_option[] = { { "help", no_argument, NULL, 'h' }, {} };

static int cmd_encrypt(int argc, char **argv) {
        const char *pin = NULL, *config = NULL;
        bool yes = false;
        struct tc_ctx ctx;
        struct tc_err err = {};

        int c;

        /* Clevis's grammar puts -y after the operands: getopt finds it anywhere. */
        while ((c = usage_getopt(&encrypt_usage, argc, argv, "hy", help_option)) != -1) {
                if (c == 'h')
                        return usage_help(&encrypt_usage);
                if (c != 'y')
                        return CLI_EXIT_USAGE;  /* usage_getopt said what */
                yes = true;
        }
        if (argc - optind < 2)
                return usage_error(&encrypt_usage, "missing %s", optind == argc ? "PIN and CONFIG" : "CONFIG");
        if (argc - optind > 2)
                return usage_error(&encrypt_usage, "unexpected argument '%s' after PIN and CONFIG", argv[optind + 2]);
        pin = argv[optind];
        config = argv[optind + 1];
        if (cli_init_ctx(&ctx, yes) < 0)
                return CLI_EXIT_USAGE;

        uint8_t *pt = NULL;
        size_t pt_len = 0;
        TC_CLEANUP_SECRET(pt, pt_len);
        int r = cli_read_all(stdin, PLAINTEXT_MAX, &pt, &pt_len);
        if (r < 0) {
                if (r == -EMSGSIZE)
                        fprintf(stderr, "tether encrypt: the plaintext on standard input is larger than %d MiB, the "
                                "most tether encrypts\n", PLAINTEXT_MAX >> 20);
                else
                        fprintf(stderr, "tether encrypt: cannot read the plaintext: %s\n", strerror(-r));
                return EXIT_FAILURE;
        }
        _cleanup_free_ char *jwe = NULL;
        r = tc_encrypt(&ctx, pin, config, pt, pt_len, &jwe, &err);
        if (r < 0) {
                fprintf(stderr, "tether encrypt %s: %s\n", pin, err.msg);
                return EXIT_FAILURE;
        }
        if (cli_write_all(STDOUT_FILENO, jwe, strlen(jwe)) < 0) {
                fprintf(stderr, "tether encrypt: cannot write the JWE: %s\n", strerror(errno));
                return EXIT_FAILURE;
        }
        return EXIT_SUCCESS;
}

static const struct usage decrypt_usage = {
        .prog = "tether decrypt",
        .text = "Usage: tether decrypt < JWE > PLAINTEXT\n\n"
              "Decrypts a compact JWE made by `tether encrypt` or `clevis encrypt`, asking\n"
              "its tang servers (sss: all at once, done as soon as enough have answered).\n"
              "Nothing is written unless decryption succeeds.\n\n"
              "Environment: TETHER_TIMEOUT, seconds allowed for each attempt at a server\n"
              "(default 10; 3 attempts when the server cannot be reached). The whole\n"
              "decryption may take 3 times that plus 1.75 s.\n",
};

static int cmd_decrypt(int argc, char **argv) {
        struct tc_ctx ctx;
        struct tc_err err = {};

        int c = usage_getopt(&decrypt_usage, argc, argv, "h", help_option);
        if (c != -1)
                return c == 'h' ? usage_help(&decrypt_usage) : CLI_EXIT_USAGE;  /* usage_getopt said what */
        if (optind < argc)
                return usage_error(&decrypt_usage, "unexpected argument '%s': the JWE is read from standard input",
                                   argv[optind]);
        if (cli_init_ctx(&ctx, false) < 0)
                return CLI_EXIT_USAGE;
        /* Run with nothing redirected, it would seem to hang: it waits for
         * a JWE typed or pasted, which it still takes. */
        if (isatty(STDIN_FILENO))
                fputs("tether decrypt: reading a JWE from standard input (the terminal); end it with Ctrl-D, or run "
                      "tether decrypt < FILE\n", stderr);
        _cleanup_free_ uint8_t *in = NULL;
        uint8_t *pt = NULL;
        size_t in_len = 0, pt_len = 0;
        TC_CLEANUP_SECRET(pt, pt_len);
        int r = cli_read_all(stdin, INPUT_MAX, &in, &in_len);
        if (r < 0) {
                if (r == -EMSGSIZE)
                        fprintf(stderr, "tether decrypt: the input on standard input is larger than %d MiB, the most a "
                                "JWE may be\n", INPUT_MAX >> 20);
                else
                        fprintf(stderr, "tether decrypt: cannot read the JWE: %s\n", strerror(-r));
                return EXIT_FAILURE;
        }
        r = tc_decrypt(&ctx, (const char *) in, in_len, &pt, &pt_len, &err);
        if (r < 0) {
                fprintf(stderr, "tether decrypt: %s\n", err.msg);
                return EXIT_FAILURE;
        }
        r = cli_write_all(STDOUT_FILENO, pt, pt_len);
        if (r < 0) {
                fprintf(stderr, "tether decrypt: cannot write the plaintext: %s\n", strerror(-r));
                return EXIT_FAILURE;
        }
        return EXIT_SUCCESS;
}

static const struct cli_command commands[] = {
        { "encrypt", "encrypt standard input with a pin (tang, sss, null)", cmd_encrypt },
        { "decrypt", "decrypt a JWE from standard input", cmd_decrypt },
        { "luks", "bind LUKS2 volumes: bind, unbind, list, pass, unlock, regen, report, edit", cli_luks },
        { "boot", "check: will this host's volumes unlock by themselves at the next boot?", cli_boot },
};

static void print_usage(FILE *f) {
        fputs("Usage: tether COMMAND [OPTIONS]\n\nCommands:\n", f);
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
        fputs("\n  -h, --help  this help; `tether COMMAND -h` explains each command\n"
              "  --version   print the version and exit\n\n"
              "Clevis-compatible: JWEs move freely between tether and clevis.\n", f);
}

static const struct usage usage = { .prog = "tether", .print = print_usage };

int main(int argc, char **argv) {
        int r = tk_harden_process();
        if (r < 0)
                fprintf(stderr, "tether: cannot disable core dumps: %s\n", strerror(-r));
        if (argc < 2)
                return usage_error(&usage, "missing COMMAND");
        if (usage_is_help(argv[1]))
                return usage_help(&usage);
        if (usage_is_version(argv[1]))
                return usage_version("tether");
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (strcmp(argv[1], commands[i].name) == 0)
                        return commands[i].run(argc - 1, argv + 1);
        if (argv[1][0] == '-')
                return usage_error(&usage, "unrecognized option '%s'", argv[1]);
        return usage_error(&usage, "unknown command '%s'", argv[1]);
}
