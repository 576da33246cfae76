/* tether boot check: the verdict of client/boot/bootcheck.c, one line per
 * volume (its bindings and problems indented below it), or --json. */
#include "bootcheck.h"
#include "cleanup.h"
#include "cli.h"
#include "tether.h"

#include <errno.h>
#include <jansson.h>
#include <string.h>
#include <unistd.h>
#include <sys/utsname.h>

/* Reading the initramfs (decompressing it) may take this long. */
#define INITRAMFS_READ_MS 120000

static const char check_usage[] =
        "Usage: tether boot check [--json] [--initramfs FILE] [--crypttab FILE] [--cmdline FILE]\n"
        "                         [--root DEVICE | --no-root] [--tokendir DIR]\n\n"
        "Says whether each volume the next boot opens (the root's, and /etc/crypttab's)\n"
        "will unlock by itself: bound, each binding decrypting now (servers reachable,\n"
        "keys still there), the installed initramfs (dracut or initramfs-tools) holding\n"
        "tether and the network it needs, the kernel command line and crypttab options.\n"
        "Exit status 0: every volume unlocks unattended; 1: the next boot would stop at\n"
        "a passphrase prompt (each problem is named with its fix).\n\n"
        "  --json            the same as one JSON object, for fleet tooling\n"
        "  --initramfs FILE  the image the next boot uses (default:\n"
        "                    /boot/initrd.img-RELEASE or /boot/initramfs-RELEASE.img)\n"
        "  --crypttab FILE   default /etc/crypttab\n"
        "  --cmdline FILE    the kernel command line (default /proc/cmdline: the running\n"
        "                    one; the next boot's comes from the boot loader)\n"
        "  --root DEVICE     the root's LUKS device (default: the one under /)\n"
        "  --no-root         the root is not encrypted\n"
        "  --tokendir DIR    libcryptsetup's token plugin directory (default " TETHER_TOKENDIR ")\n\n"
        "Environment: TETHER_TIMEOUT, seconds allowed for each attempt at a server.\n";

enum { OPT_JSON = 256, OPT_INITRAMFS, OPT_CRYPTTAB, OPT_CMDLINE, OPT_ROOT, OPT_NO_ROOT, OPT_TOKENDIR };

static const struct option check_options[] = {
        { "json", no_argument, NULL, OPT_JSON },
        { "initramfs", required_argument, NULL, OPT_INITRAMFS },
        { "crypttab", required_argument, NULL, OPT_CRYPTTAB },
        { "cmdline", required_argument, NULL, OPT_CMDLINE },
        { "root", required_argument, NULL, OPT_ROOT },
        { "no-root", no_argument, NULL, OPT_NO_ROOT },
        { "tokendir", required_argument, NULL, OPT_TOKENDIR },
        { "help", no_argument, NULL, 'h' },
        {}
};

static const char *kind_name(enum tc_initramfs_kind k) {
        return k == TC_INITRAMFS_DRACUT ? "dracut" : k == TC_INITRAMFS_TOOLS ? "initramfs-tools" : "unknown";
}

static const char *stage_name(enum tc_bc_stage s) {
        return s == TC_BC_INITRAMFS ? "initramfs" : s == TC_BC_AFTER_BOOT ? "after-boot" : "not-at-boot";
}

static const char *verdict_name(enum tc_bc_verdict v) {
        static const char *const names[] = { [TC_BC_UNATTENDED] = "unattended", [TC_BC_PROMPT] = "prompt",
                                             [TC_BC_OTHER] = "other", [TC_BC_SKIPPED] = "skipped" };
        return names[v];
}

/* Names and messages hold what crypttab and headers hold: escaped. */
static void put(const char *s) {
        _cleanup_free_ char *e = tc_escape_dup(s ? s : "");
        fputs(e ? e : "?", stdout);
}

static void print_volume(const struct tc_bc_volume *v) {
        put(v->name);
        fputs(" (", stdout);
        put(v->device);
        if (v->root)
                fputs(", root", stdout);
        if (v->line)
                printf(", crypttab line %u", v->line);
        printf(", %s): ", v->stage == TC_BC_INITRAMFS ? "opened in the initramfs"
                          : v->stage == TC_BC_AFTER_BOOT ? "opened after boot" : "not opened at boot");
        switch (v->verdict) {
        case TC_BC_UNATTENDED: fputs("unlocks unattended", stdout); break;
        case TC_BC_PROMPT: fputs("STOPS AT A PASSPHRASE PROMPT", stdout); break;
        case TC_BC_OTHER: fputs("opened without tether: ", stdout); put(v->note); break;
        case TC_BC_SKIPPED: fputs("skipped: ", stdout); put(v->note); break;
        }
        fputc('\n', stdout);
        for (size_t k = 0; k < v->n_bindings; k++) {
                const struct tc_bc_binding *b = &v->bindings[k];
                printf("  token %d, slot %d: ", b->token, b->slot);
                put(b->pin);
                if (b->servers) {
                        fputc(' ', stdout);
                        put(b->servers);
                }
                fputs(": ", stdout);
                if (b->r == 0)
                        fputs("decrypts now, and its key opens the slot", stdout);
                else
                        put(b->error);
                fputc('\n', stdout);
        }
        for (size_t k = 0; k < v->n_problems; k++) {
                fputs("  problem: ", stdout);
                put(v->problems[k]);
                fputc('\n', stdout);
        }
}

static int print_text(const struct tc_boot_check *c, const char *cmdline) {
        size_t prompts = 0;
        if (c->n == 0) {
                printf("tether boot check: no encrypted root and nothing in crypttab: nothing to unlock\n");
                return EXIT_SUCCESS;
        }
        for (size_t i = 0; i < c->n; i++) {
                print_volume(&c->volumes[i]);
                prompts += c->volumes[i].verdict == TC_BC_PROMPT;
        }
        fputs("initramfs ", stdout);
        put(c->initramfs);
        if (c->initramfs_error) {
                fputs(": unreadable: ", stdout);
                put(c->initramfs_error);
        } else
                printf(": %s, tether %s, network %s", kind_name(c->kind), c->tether_in_image ? "in it" : "NOT in it",
                       c->network_in_image ? "in it" : "not in it");
        printf("; kernel command line checked: %s (the next boot's comes from the boot loader)\n",
               cmdline ? cmdline : "none");
        if (c->unattended)
                printf("tether boot check: every volume the next boot opens unlocks unattended\n");
        else
                printf("tether boot check: the next boot would stop at a passphrase prompt (%zu volume%s)\n", prompts,
                       prompts == 1 ? "" : "s");
        return c->unattended ? EXIT_SUCCESS : EXIT_FAILURE;
}

static json_t *str_or_null(const char *s) {
        return s ? json_string(s) : json_null();
}

static json_t *volume_json(const struct tc_bc_volume *v) {
        json_t *bindings = json_array(), *problems = json_array();
        for (size_t k = 0; k < v->n_bindings; k++) {
                const struct tc_bc_binding *b = &v->bindings[k];
                json_array_append_new(bindings, json_pack("{s:i, s:i, s:s, s:o, s:b, s:b, s:o}", "token", b->token,
                                                          "slot", b->slot, "pin", b->pin, "servers",
                                                          str_or_null(b->servers), "network", b->network, "decrypts",
                                                          b->r == 0, "error", str_or_null(b->error)));
        }
        for (size_t k = 0; k < v->n_problems; k++)
                json_array_append_new(problems, json_string(v->problems[k]));
        return json_pack("{s:s, s:s, s:o, s:b, s:s, s:s, s:o, s:o, s:o}", "name", v->name, "device", v->device,
                         "crypttab_line", v->line ? json_integer(v->line) : json_null(), "root", v->root, "stage",
                         stage_name(v->stage), "verdict", verdict_name(v->verdict), "note", str_or_null(v->note),
                         "bindings", bindings, "problems", problems);
}

static int print_json(const struct tc_boot_check *c, const char *cmdline) {
        json_t *volumes = json_array();
        for (size_t i = 0; i < c->n; i++)
                json_array_append_new(volumes, volume_json(&c->volumes[i]));
        json_auto_t *j = json_pack("{s:b, s:{s:s, s:s, s:o, s:b, s:b}, s:o, s:o}", "unattended", c->unattended,
                                   "initramfs", "path", c->initramfs, "kind", kind_name(c->kind), "error",
                                   str_or_null(c->initramfs_error), "tether", c->tether_in_image, "network",
                                   c->network_in_image, "cmdline", str_or_null(cmdline), "volumes", volumes);
        _cleanup_free_ char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (!text) {
                fprintf(stderr, "tether boot check: out of memory\n");
                return EXIT_FAILURE;
        }
        puts(text);
        return c->unattended ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* The image the running kernel's next boot uses: Debian's name, else dracut's. */
static char *default_initramfs(void) {
        struct utsname u;
        char *path = NULL;
        if (uname(&u) < 0)
                return NULL;
        if (asprintf(&path, "/boot/initrd.img-%s", u.release) < 0)
                return NULL;
        if (access(path, F_OK) == 0)
                return path;
        free(path);
        return asprintf(&path, "/boot/initramfs-%s.img", u.release) < 0 ? NULL : path;
}

static int cmd_check(int argc, char **argv) {
        static const struct usage u = { .prog = "tether boot check", .text = check_usage };
        struct tc_boot_check_opts o = { .crypttab = "/etc/crypttab", .cmdline = "/proc/cmdline",
                                        .tokendir = TETHER_TOKENDIR };
        bool json = false, no_root = false;
        struct tc_ctx ctx;
        struct tc_err err = {};
        int c;

        optind = 1;
        while ((c = usage_getopt(&u, argc, argv, "h", check_options)) != -1) {
                switch (c) {
                case 'h': return usage_help(&u);
                case OPT_JSON: json = true; break;
                case OPT_INITRAMFS: o.initramfs = optarg; break;
                case OPT_CRYPTTAB: o.crypttab = optarg; break;
                case OPT_CMDLINE: o.cmdline = optarg; break;
                case OPT_ROOT: o.root = optarg; break;
                case OPT_NO_ROOT: no_root = true; break;
                case OPT_TOKENDIR: o.tokendir = optarg; break;
                default: return CLI_EXIT_USAGE;  /* usage_getopt said what */
                }
        }
        if (optind < argc)
                return usage_error(&u, "unexpected argument '%s'", argv[optind]);
        if (no_root && o.root)
                return usage_error(&u, "--root and --no-root exclude each other");
        if (cli_init_ctx(&ctx, false) < 0)
                return CLI_EXIT_USAGE;
        ctx.trust = NULL;  /* decrypting never asks */

        _cleanup_free_ char *initramfs = o.initramfs ? NULL : default_initramfs();
        _cleanup_free_ char *root = NULL, *root_name = NULL;
        if (!o.initramfs)
                o.initramfs = initramfs ? initramfs : "/boot/initrd.img";
        if (!o.root && !no_root) {
                if (tc_boot_root_device("/proc/self/mountinfo", "/sys", &root, &root_name, &err) < 0) {
                        fprintf(stderr, "tether boot check: cannot find the root's device: %s; give it with --root "
                                "DEVICE, or --no-root\n", err.msg);
                        return EXIT_FAILURE;
                }
                o.root = root;
                o.root_name = root_name;
        }
        if (o.cmdline && access(o.cmdline, R_OK) < 0) {
                fprintf(stderr, "tether boot check: cannot read the kernel command line %s: %s\n", o.cmdline,
                        strerror(errno));
                return EXIT_FAILURE;
        }
        o.deadline_ms = tc_now_ms() + INITRAMFS_READ_MS;

        _cleanup_(tc_boot_check_clear) struct tc_boot_check result = {};
        if (tc_boot_check(&ctx, &o, &result, &err) < 0) {
                fprintf(stderr, "tether boot check: %s\n", err.msg);
                return EXIT_FAILURE;
        }
        return json ? print_json(&result, o.cmdline) : print_text(&result, o.cmdline);
}

static void print_boot_usage(FILE *f) {
        fputs("Usage: tether boot COMMAND [OPTIONS]\n\nCommands:\n"
              "  check    will this host's volumes unlock by themselves at the next boot?\n\n"
              "`tether boot COMMAND -h` explains each.\n", f);
}

int cli_boot(int argc, char **argv) {
        static const struct usage u = { .prog = "tether boot", .print = print_boot_usage };
        if (argc < 2)
                return usage_error(&u, "missing COMMAND");
        if (usage_is_help(argv[1]))
                return usage_help(&u);
        if (strcmp(argv[1], "check") == 0)
                return cmd_check(argc - 1, argv + 1);
        if (argv[1][0] == '-')
                return usage_error(&u, "unrecognized option '%s'", argv[1]);
        return usage_error(&u, "unknown command '%s'", argv[1]);
}
