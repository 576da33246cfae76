/* tether-keys host: per-host exchange keys (keys/hosts.h). */
#include "host.h"
#include "hosts.h"
#include "keyset.h"
#include "cleanup.h"
#include "usage.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const struct usage host_usage = {
        .prog = "tether-keys host",
        .text = "Usage: tether-keys host COMMAND DIR [NAME]\n"
                "\n"
                "  add DIR NAME           create host NAME with its own exchange key; clients\n"
                "                         bind to http://SERVER/h/NAME with the shared thp\n"
                "  list DIR [--json]      every host: name, state, advertised exchange key's\n"
                "                         thumbprint (not the thp to pin), allow tokens not\n"
                "                         spent yet\n"
                "  revoke DIR NAME        refuse its recoveries and advertisement (403) at once\n"
                "  restore DIR NAME       make a revoked or held host active again\n"
                "  hold DIR NAME          refuse its recoveries until an administrator allows one\n"
                "  allow DIR NAME         let exactly one recovery of the held host NAME through\n"
                "  rotate DIR NAME        a new exchange key; the old one stays for recovery\n"
                "  delete DIR NAME [--force]\n"
                "                         remove the host and its keys (revoke it first):\n"
                "                         volumes bound to it can then never be recovered\n"
                "\n"
                "NAME: 1 to 63 of a-z 0-9 . _ -, starting with a letter or digit, no '..'.\n"
                "Hosts live in DIR/hosts/NAME/; tangd ignores them and still serves DIR.\n",
};

#define NAME_RULE "NAME: 1 to 63 of a-z 0-9 . _ -, starting with a letter or digit, no '..'.\n"

static const struct {
        const char *name;
        struct usage usage;
} commands[] = {
        { "add", { "tether-keys host add", "Usage: tether-keys host add DIR NAME\n\n"
                   "Creates host NAME with an exchange key of its own in DIR/hosts/NAME/ and\n"
                   "prints its URL suffix and the shared signing key's thumbprint (thp).\n" NAME_RULE, NULL } },
        { "list", { "tether-keys host list", "Usage: tether-keys host list DIR [--json]\n\n"
                    "Lists every host: name, state, advertised exchange key's thumbprint and\n"
                    "allow tokens not spent yet (allow=N). The exchange key's thumbprint (\"thp\"\n"
                    "with --json) is not the thp clients pin: that is the shared signing key's,\n"
                    "printed by host add and tether-keys show.\n", NULL } },
        { "revoke", { "tether-keys host revoke", "Usage: tether-keys host revoke DIR NAME\n\n"
                      "Refuses the host's recoveries and advertisement (403) from the next request on.\n", NULL } },
        { "restore", { "tether-keys host restore", "Usage: tether-keys host restore DIR NAME\n\n"
                       "Makes a revoked or held host active again.\n", NULL } },
        { "hold", { "tether-keys host hold", "Usage: tether-keys host hold DIR NAME\n\n"
                    "Refuses the host's recoveries until an administrator allows one\n"
                    "(tether-keys host allow); its advertisement is still served.\n", NULL } },
        { "allow", { "tether-keys host allow", "Usage: tether-keys host allow DIR NAME\n\n"
                     "Lets exactly one recovery of the held host NAME through.\n", NULL } },
        { "rotate", { "tether-keys host rotate", "Usage: tether-keys host rotate DIR NAME\n\n"
                      "Creates a new exchange key for the host; the old one is hidden, still used\n"
                      "for recovery until its clients rebind.\n", NULL } },
        { "delete", { "tether-keys host delete", "Usage: tether-keys host delete DIR NAME [--force]\n\n"
                      "Removes the host and its keys: volumes bound to them can never be recovered\n"
                      "through it again. Refused unless the host is revoked, or with --force.\n", NULL } },
};

static int fail(const char *cmd, const struct tc_err *err) {
        fprintf(stderr, "tether-keys host %s: %s\n", cmd, err->msg);
        return EXIT_FAILURE;
}

/* The thumbprints of DIR's advertised signing keys: the thp every host's
 * clients pin. */
static void print_signing_thp(const char *dir) {
        _cleanup_(tk_keyset_freep) struct tk_keyset *ks = NULL;
        size_t n = 0;

        if (tk_keyset_load(dir, NULL, NULL, &ks) == 0)
                for (size_t i = 0; i < ks->n_keys; i++)
                        if (ks->keys[i].role == TK_ROLE_SIGNING && !ks->keys[i].hidden) {
                                printf("thp: %s\n", ks->keys[i].thp[TK_HASH_S256]);
                                n++;
                        }
        if (n == 0)
                fprintf(stderr, "tether-keys host add: note: %s has no signing key yet; tetherd creates one at start "
                        "(or run tether-keys gen %s), then tether-keys show %s prints the thp\n", dir, dir, dir);
}

static int host_add(const char *dir, const char *name) {
        _cleanup_free_ char *exc = NULL;
        struct tc_err err = {};

        if (tk_host_add(dir, name, &exc, &err) < 0)
                return fail("add", &err);
        printf("host %s added: exchange key %s/" TK_HOSTS_SUBDIR "/%s/%s\n", name, dir, name, exc);
        printf("url: /h/%s\n", name);
        print_signing_thp(dir);
        return EXIT_SUCCESS;
}

static const char *adv_thp(const struct tk_host *h) {
        for (size_t i = 0; i < h->ks->n_keys; i++)
                if (h->ks->keys[i].role == TK_ROLE_EXCHANGE && !h->ks->keys[i].hidden)
                        return h->ks->keys[i].thp[TK_HASH_S256];
        return NULL;
}

static void warn_file(void *userdata, const char *file, const struct tc_err *why) {
        fprintf(stderr, "tether-keys host list: %s/%s %s\n", (const char *) userdata, file, why->msg);
}

static int host_list(const char *dir, bool json) {
        _cleanup_(tk_hosts_freep) struct tk_hosts *hs = NULL;
        int r = tk_hosts_load(dir, NULL, warn_file, (void *) dir, &hs);

        if (r < 0) {
                fprintf(stderr, "tether-keys host list: cannot read %s/" TK_HOSTS_SUBDIR ": %s\n", dir, strerror(-r));
                return EXIT_FAILURE;
        }
        if (json) {
                json_auto_t *arr = json_array();
                for (size_t i = 0; arr && i < hs->n; i++) {
                        const struct tk_host *h = &hs->hosts[i];
                        const char *thp = adv_thp(h);
                        json_array_append_new(arr, json_pack("{s:s,s:s,s:o,s:I}", "name", h->name, "state",
                                                             tk_host_state_name(h->state), "thp",
                                                             thp ? json_string(thp) : json_null(), "allow",
                                                             (json_int_t) h->n_allow));
                }
                _cleanup_free_ char *text = arr ? json_dumps(arr, JSON_INDENT(2)) : NULL;
                if (!text)
                        return EXIT_FAILURE;
                printf("%s\n", text);
                return EXIT_SUCCESS;
        }
        if (hs->n > 0)
                printf("%-20s %-8s %-43s %s\n", "HOST", "STATE", "EXCHANGE KEY (S256; not the thp to pin)",
                       "ALLOW TOKENS");
        for (size_t i = 0; i < hs->n; i++) {
                const struct tk_host *h = &hs->hosts[i];
                const char *thp = adv_thp(h);
                printf("%-20s %-8s %-43s %zu\n", h->name, tk_host_state_name(h->state), thp ? thp : "-", h->n_allow);
        }
        return EXIT_SUCCESS;
}

/* revoke, restore and hold: from the states they change, else an error
 * saying the host is in that state already. */
static int host_set_state(const char *cmd, const char *dir, const char *name, enum tk_host_state to) {
        struct tc_err err = {};
        enum tk_host_state now;

        if (tk_host_state_read(dir, name, &now, &err) < 0)
                return fail(cmd, &err);
        if (now == to) {
                fprintf(stderr, "tether-keys host %s: host %s is %s already\n", cmd, name, tk_host_state_name(to));
                return EXIT_FAILURE;
        }
        if (tk_host_state_write(dir, name, to, &err) < 0)
                return fail(cmd, &err);
        printf("host %s: %s (was %s)\n", name, tk_host_state_name(to), tk_host_state_name(now));
        return EXIT_SUCCESS;
}

static int host_allow(const char *dir, const char *name) {
        _cleanup_free_ char *token = NULL;
        struct tc_err err = {};
        enum tk_host_state now;

        if (tk_host_state_read(dir, name, &now, &err) < 0)
                return fail("allow", &err);
        if (now != TK_HOST_HELD) {
                fprintf(stderr, "tether-keys host allow: host %s is %s, not held: its recoveries need no permission%s\n",
                        name, tk_host_state_name(now), now == TK_HOST_REVOKED ? " (they are refused: restore it)" : "");
                return EXIT_FAILURE;
        }
        if (tk_host_allow(dir, name, &token, &err) < 0)
                return fail("allow", &err);
        printf("host %s: one recovery allowed (%s/" TK_HOSTS_SUBDIR "/%s/%s)\n", name, dir, name, token);
        return EXIT_SUCCESS;
}

static int host_rotate(const char *dir, const char *name) {
        _cleanup_free_ char *exc = NULL;
        struct tc_err err = {};

        if (tk_host_rotate(dir, name, &exc, &err) < 0)
                return fail("rotate", &err);
        printf("host %s: new exchange key %s; the old one still recovers until its clients rebind "
               "(clevis luks regen)\n", name, exc);
        return EXIT_SUCCESS;
}

static int host_delete(const char *dir, const char *name, bool force) {
        struct tc_err err = {};

        if (tk_host_delete(dir, name, force, &err) < 0)
                return fail("delete", &err);
        printf("host %s deleted with its keys: volumes bound to it can no longer be recovered through it\n", name);
        return EXIT_SUCCESS;
}

int cmd_host(int argc, char **argv) {
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "json", no_argument, NULL, 'j' },
                { "force", no_argument, NULL, 'f' },
                {},
        };
        bool json = false, force = false;
        int c;

        if (argc < 2)
                return usage_error(&host_usage, "missing COMMAND");
        if (usage_is_help(argv[1]))
                return usage_help(&host_usage);
        const char *cmd = argv[1];
        const struct usage *u = NULL;
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
                if (strcmp(cmd, commands[i].name) == 0)
                        u = &commands[i].usage;
        if (!u)
                return usage_error(&host_usage, "unknown command '%s'", cmd);
        argc--, argv++;
        while ((c = usage_getopt(u, argc, argv, "h", options)) != -1) {
                if (c == 'h')
                        return usage_help(u);
                if (c == 'j')
                        json = true;
                else if (c == 'f')
                        force = true;
                else
                        return EXIT_USAGE;
        }
        int n = argc - optind, want = strcmp(cmd, "list") == 0 ? 1 : 2;
        const char *dir = n > 0 ? argv[optind] : NULL, *name = n > 1 ? argv[optind + 1] : NULL;
        if (json && strcmp(cmd, "list") != 0)
                return usage_error(u, "--json is for host list only");
        if (force && strcmp(cmd, "delete") != 0)
                return usage_error(u, "--force is for host delete only");
        if (n < 1)
                return usage_error(u, "missing DIR, the key directory");
        if (n < want)
                return usage_error(u, "missing NAME, the host");
        if (n > want)
                return usage_error(u, "unexpected argument '%s'", argv[optind + want]);
        if (name && !tk_host_name_valid(name))
                return usage_error(u, "invalid host name '%s': use 1 to %d of a-z 0-9 . _ -, starting with "
                                   "a letter or digit, without '..'", name, TK_HOST_NAME_MAX);

        if (strcmp(cmd, "add") == 0)
                return host_add(dir, name);
        if (strcmp(cmd, "list") == 0)
                return host_list(dir, json);
        if (strcmp(cmd, "revoke") == 0)
                return host_set_state(cmd, dir, name, TK_HOST_REVOKED);
        if (strcmp(cmd, "restore") == 0)
                return host_set_state(cmd, dir, name, TK_HOST_ACTIVE);
        if (strcmp(cmd, "hold") == 0)
                return host_set_state(cmd, dir, name, TK_HOST_HELD);
        if (strcmp(cmd, "allow") == 0)
                return host_allow(dir, name);
        if (strcmp(cmd, "rotate") == 0)
                return host_rotate(dir, name);
        if (strcmp(cmd, "delete") == 0)
                return host_delete(dir, name, force);
        return usage_error(u, "unknown command '%s'", cmd);
}
