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

static void encrypt_help(FILE *f) {
        fputs("Usage: tether encrypt PIN CONFIG [-y] < PLAINTEXT > JWE\n\n"
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
              "(default 10; 3 attempts when the server cannot be reached).\n", f);
}

static int cmd_encrypt(int argc, char **argv) {
        const char *pin = NULL, *config = NULL;
        bool yes = false;
        struct tc_ctx ctx;
        struct tc_err err = {};

        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "-y") == 0)
                        yes = true;
                else if (cli_is_help(argv[i])) {
                        encrypt_help(stdout);
                        return EXIT_SUCCESS;
                } else if (!pin)
                        pin = argv[i];
                else if (!config)
                        config = argv[i];
                else {
                        encrypt_help(stderr);
                        return CLI_EXIT_USAGE;
                }
        }
        if (!pin || !config) {
                encrypt_help(stderr);
                return CLI_EXIT_USAGE;
        }
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

static void decrypt_help(FILE *f) {
        fputs("Usage: tether decrypt < JWE > PLAINTEXT\n\n"
              "Decrypts a compact JWE made by `tether encrypt` or `clevis encrypt`, asking\n"
              "its tang servers (sss: all at once, done as soon as enough have answered).\n"
              "Nothing is written unless decryption succeeds.\n\n"
              "Environment: TETHER_TIMEOUT, seconds allowed for each attempt at a server\n"
              "(default 10; 3 attempts when the server cannot be reached). The whole\n"
              "decryption may take 3 times that plus 1.75 s.\n", f);
}

static int cmd_decrypt(int argc, char **argv) {
        struct tc_ctx ctx;
        struct tc_err err = {};

        if (argc > 1) {
                bool help = cli_is_help(argv[1]);
                decrypt_help(help ? stdout : stderr);
                return help ? EXIT_SUCCESS : CLI_EXIT_USAGE;
        }
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
};

static void usage(FILE *f) {
        fputs("Usage: tether COMMAND [OPTIONS]\n\nCommands:\n", f);
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
        fputs("\n`tether COMMAND -h` explains each. Clevis-compatible: JWEs move freely between\n"
              "tether and clevis.\n", f);
}

int main(int argc, char **argv) {
        int r = tk_harden_process();
        if (r < 0)
                fprintf(stderr, "tether: cannot disable core dumps: %s\n", strerror(-r));
        if (argc < 2 || cli_is_help(argv[1])) {
                usage(argc < 2 ? stderr : stdout);
                return argc < 2 ? CLI_EXIT_USAGE : EXIT_SUCCESS;
        }
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (strcmp(argv[1], commands[i].name) == 0)
                        return commands[i].run(argc - 1, argv + 1);
        fprintf(stderr, "tether: unknown command \"%s\"\n\n", argv[1]);
        usage(stderr);
        return CLI_EXIT_USAGE;
}
