/* tether boot check: for each volume the next boot opens, whether it will
 * open without a person (see bootcheck.h). The order: the volumes (the
 * root, /etc/crypttab), their bindings, every binding decrypted at once
 * (each key then tried on its keyslot, one after another: libcryptsetup is
 * not thread-safe), then what each volume's path through the boot needs:
 * the initramfs's content and kernel command line for those opened there,
 * the running system's token plugin and `_netdev` for those opened after. */
#include "bootcheck.h"

#include <ctype.h>
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "cleanup.h"
#include "crypttab.h"
#include "fanout.h"
#include "luks.h"
#include "tether.h"

#define TEXT_MAX (64 * 1024)
#define VOLUMES_MAX 64
#define TOKEN_PLUGIN "libcryptsetup-token-clevis.so"

/* ---------------------------------------------------------------- small helpers */

/* A file of at most TEXT_MAX bytes; *text NULL if it does not exist. */
static int read_text(const char *path, char **text, struct tc_err *err) {
        return tc_read_file_max(path, TEXT_MAX, text, NULL, err);
}

/* The value of the last KEY= word of a command line (NULL: none); "" for a
 * bare KEY word. */
static char *cmdline_value(const char *cmdline, const char *key) {
        size_t n = strlen(key);
        const char *found = NULL, *p = cmdline;
        size_t found_len = 0;
        while (p && *p) {
                while (isspace((unsigned char) *p))
                        p++;
                size_t w = strcspn(p, " \t\n");
                if (w >= n && strncmp(p, key, n) == 0 && (w == n || p[n] == '=')) {
                        found = w == n ? p + n : p + n + 1;
                        found_len = w == n ? 0 : w - n - 1;
                }
                p += w;
        }
        return found ? strndup(found, found_len) : NULL;
}

/* Whether a word of the command line is KEY=VALUE with one of VALUE's
 * comma-separated items equal to item (rd.luks.uuid=a,b). */
static bool cmdline_has_item(const char *cmdline, const char *key, const char *item) {
        size_t n = strlen(key), il = strlen(item);
        for (const char *p = cmdline; p && *p;) {
                while (isspace((unsigned char) *p))
                        p++;
                size_t w = strcspn(p, " \t\n");
                if (w > n && strncmp(p, key, n) == 0 && p[n] == '=')
                        for (const char *q = p + n + 1; q < p + w;) {
                                size_t l = strcspn(q, ", \t\n");
                                if (l == il && strncasecmp(q, item, il) == 0)
                                        return true;
                                q += l + (q[l] == ',');
                        }
                p += w;
        }
        return false;
}

/* Whether a crypttab source (UUID=..., a path) names device, whose LUKS
 * UUID is uuid (or NULL). */
static bool source_is(const char *spec, const char *device, const char *uuid) {
        /* By UUID only, or by path as well. */
        static const struct { const char *prefix; bool path_too; } by_uuid[] = {
                { "UUID=", false }, { "/dev/disk/by-uuid/", true },
        };
        for (size_t i = 0; i < ELEMENTSOF(by_uuid); i++) {
                size_t n = strlen(by_uuid[i].prefix);
                if (strncmp(spec, by_uuid[i].prefix, n) != 0)
                        continue;
                if (uuid && strcasecmp(spec + n, uuid) == 0)
                        return true;
                if (!by_uuid[i].path_too)
                        return false;
                break;
        }
        return strcmp(spec, device) == 0 || tc_same_file(spec, device);
}

static int add_str(char ***items, size_t *n, char *s) {
        if (!s)
                return -ENOMEM;
        char **p = realloc(*items, (*n + 1) * sizeof(*p));
        if (!p) {
                free(s);
                return -ENOMEM;
        }
        p[(*n)++] = s;
        *items = p;
        return 0;
}

/* ---------------------------------------------------------------- volumes */

/* What the check knows of a volume besides what it reports. */
struct vol_info {
        char *source;        /* as crypttab gives it */
        char *options;
        char *uuid;          /* its LUKS UUID, NULL if unreadable */
        bool asks;           /* key "none": a passphrase is asked for */
        struct tc_luks_bindings bindings;
        bool bindings_read;
        char *bindings_error;
};

struct check {
        const struct tc_boot_check_opts *o;
        struct tc_boot_check *out;
        struct vol_info *info;     /* parallel to out->volumes */
        struct tc_initramfs image;
        bool image_read;
        char *cmdline;
};

static struct tc_bc_volume *volume_add(struct check *c, const char *name, const char *source, unsigned line) {
        struct tc_boot_check *out = c->out;
        if (out->n >= VOLUMES_MAX)
                return NULL;
        struct tc_bc_volume *v = realloc(out->volumes, (out->n + 1) * sizeof(*v));
        if (v)
                out->volumes = v;
        struct vol_info *in = realloc(c->info, (out->n + 1) * sizeof(*in));
        if (in)
                c->info = in;
        if (!v || !in)
                return NULL;
        v = &out->volumes[out->n];
        in = &c->info[out->n];
        *v = (struct tc_bc_volume) { .name = strdup(name), .device = tc_crypttab_source_path(source), .line = line };
        *in = (struct vol_info) { .source = strdup(source), .asks = true };
        if (!v->name || !v->device || !in->source) {
                free(v->name);
                free(v->device);
                free(in->source);
                return NULL;
        }
        out->n++;
        return v;
}

static int problem(struct tc_bc_volume *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int problem(struct tc_bc_volume *v, const char *fmt, ...) {
        char msg[1024];
        va_list ap;
        va_start(ap, fmt);
        tc_vformat(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        return add_str(&v->problems, &v->n_problems, strdup(msg));
}

static int crypttab_read(struct check *c, struct tc_err *err) {
        _cleanup_free_ char *text = NULL;
        int r = read_text(c->o->crypttab, &text, err);
        if (r < 0 || !text)
                return r;
        unsigned line = 0;
        for (char *l = text, *next; l; l = next) {
                next = strchr(l, '\n');
                if (next)
                        *next++ = '\0';
                line++;
                char *save = NULL, *name = strtok_r(l, " \t", &save);
                char *source = name ? strtok_r(NULL, " \t", &save) : NULL;
                char *key = source ? strtok_r(NULL, " \t", &save) : NULL;
                char *options = key ? strtok_r(NULL, " \t", &save) : NULL;
                if (!source || name[0] == '#')
                        continue;
                struct tc_bc_volume *v = volume_add(c, name, source, line);
                if (!v)
                        return tc_fail(err, -ENOMEM, "out of memory, or more than %d volumes", VOLUMES_MAX);
                struct vol_info *in = &c->info[c->out->n - 1];
                in->options = options ? strdup(options) : NULL;
                if (options && !in->options)
                        return tc_fail(err, -ENOMEM, "out of memory");
                if (key && strcmp(key, "none") != 0 && strcmp(key, "-") != 0) {
                        in->asks = false;
                        if (asprintf(&v->note, "key file %s", key) < 0)
                                return tc_fail(err, -ENOMEM, "out of memory");
                } else if (tc_crypttab_has_option(options, "keyscript")) {
                        in->asks = false;
                        if (!(v->note = strdup("keyscript")))
                                return tc_fail(err, -ENOMEM, "out of memory");
                }
        }
        return 0;
}

/* The root's volume: its crypttab entry (same device, or same name), else
 * a volume of its own. */
static int root_add(struct check *c, struct tc_err *err) {
        const char *root = c->o->root;
        if (!root)
                return 0;
        _cleanup_free_ char *uuid = NULL;
        struct tc_err ignored = {};
        (void) tc_luks_uuid(root, &uuid, &ignored);
        for (size_t i = 0; i < c->out->n; i++) {
                struct tc_bc_volume *v = &c->out->volumes[i];
                if (source_is(c->info[i].source, root, uuid) ||
                    (c->o->root_name && strcmp(v->name, c->o->root_name) == 0)) {
                        v->root = true;
                        return 0;
                }
        }
        struct tc_bc_volume *v = volume_add(c, c->o->root_name ? c->o->root_name : "root", root, 0);
        if (!v)
                return tc_fail(err, -ENOMEM, "out of memory, or more than %d volumes", VOLUMES_MAX);
        v->root = true;
        return 0;
}

/* Whether the image's crypttab lists the volume (by name or device). */
static bool image_lists(const struct check *c, size_t i) {
        const struct tc_bc_volume *v = &c->out->volumes[i];
        if (!c->image.crypttab)
                return false;
        _cleanup_free_ char *text = strdup(c->image.crypttab);
        if (!text)
                return false;
        for (char *l = text, *next; l; l = next) {
                next = strchr(l, '\n');
                if (next)
                        *next++ = '\0';
                char *save = NULL, *name = strtok_r(l, " \t", &save);
                char *source = name ? strtok_r(NULL, " \t", &save) : NULL;
                if (!source || name[0] == '#')
                        continue;
                if (strcmp(name, v->name) == 0 || source_is(source, v->device, c->info[i].uuid))
                        return true;
        }
        return false;
}

/* cryptopts=...,source=SPEC,... on the command line naming the volume
 * (initramfs-tools' way without a crypttab). */
static bool cryptopts_names(const struct check *c, size_t i) {
        const char *p = c->cmdline;
        while (p && (p = strstr(p, "cryptopts="))) {
                size_t w = strcspn(p, " \t\n");
                _cleanup_free_ char *word = strndup(p, w);
                p += w;
                char *src = word ? strstr(word, "source=") : NULL;
                if (!src)
                        continue;
                src[7 + strcspn(src + 7, ",")] = '\0';
                if (source_is(src + 7, c->out->volumes[i].device, c->info[i].uuid))
                        return true;
        }
        return false;
}

static enum tc_bc_stage stage_of(const struct check *c, size_t i) {
        const struct tc_bc_volume *v = &c->out->volumes[i];
        const char *options = c->info[i].options;
        if (tc_crypttab_has_option(options, "noauto"))
                return TC_BC_NOT_AT_BOOT;
        if (v->root)
                return TC_BC_INITRAMFS;
        if (c->image.kind == TC_INITRAMFS_DRACUT)
                return image_lists(c, i) || (c->info[i].uuid && cmdline_has_item(c->cmdline, "rd.luks.uuid", c->info[i].uuid))
                               ? TC_BC_INITRAMFS : TC_BC_AFTER_BOOT;
        /* Debian's cryptroot hook copies crypttab entries with `initramfs`. */
        return tc_crypttab_has_option(options, "initramfs") ? TC_BC_INITRAMFS : TC_BC_AFTER_BOOT;
}

/* ---------------------------------------------------------------- bindings */

/* The tang URLs of a pin configuration, wherever they are (sss nests them). */
static void collect_urls(const json_t *j, char **urls) {
        const char *k;
        json_t *val;
        size_t i;
        if (json_is_array(j))
                json_array_foreach(j, i, val)
                        collect_urls(val, urls);
        if (!json_is_object(j))
                return;
        json_object_foreach((json_t *) j, k, val) {
                if (strcmp(k, "url") == 0 && json_is_string(val)) {
                        char *joined = NULL;
                        if (asprintf(&joined, "%s%s%s", *urls ? *urls : "", *urls ? ", " : "", json_string_value(val)) >= 0) {
                                free(*urls);
                                *urls = joined;
                        }
                } else
                        collect_urls(val, urls);
        }
}

static int bindings_read(struct check *c, size_t i, struct tc_err *err) {
        struct tc_bc_volume *v = &c->out->volumes[i];
        struct vol_info *in = &c->info[i];
        struct tc_err e = {};
        (void) tc_luks_uuid(v->device, &in->uuid, &e);
        int r = tc_luks_list(v->device, false, &in->bindings, &e);
        if (r < 0) {
                in->bindings_error = strdup(e.msg);
                return in->bindings_error ? 0 : tc_fail(err, -ENOMEM, "out of memory");
        }
        in->bindings_read = true;
        v->bindings = calloc(in->bindings.n ? in->bindings.n : 1, sizeof(*v->bindings));
        if (!v->bindings)
                return tc_fail(err, -ENOMEM, "out of memory");
        for (size_t k = 0; k < in->bindings.n; k++) {
                const struct tc_luks_binding *b = &in->bindings.items[k];
                struct tc_bc_binding *o = &v->bindings[v->n_bindings++];
                *o = (struct tc_bc_binding) { .token = b->token, .slot = b->slot, .r = -EINPROGRESS };
                o->pin = strdup(b->pin ? b->pin : "?");
                collect_urls(b->config, &o->servers);
                o->network = o->servers != NULL;
                if (!o->pin)
                        return tc_fail(err, -ENOMEM, "out of memory");
                if (b->malformed || !b->jwe)
                        o->r = -EINVAL, o->error = strdup(b->malformed ? b->malformed : "not a valid clevis token");
                else if (!b->slot_active)
                        o->r = -ENOENT, o->error = strdup("its keyslot is gone: remove the token (cryptsetup token remove)");
        }
        return 0;
}

struct attempt {
        struct tc_ctx *ctx;
        const char *device, *jwe;
        struct tc_bc_binding *b;
        uint8_t *key;
        size_t len;
        struct tc_err err;
};

static int attempt_run(void *data, size_t i, struct tc_fanout *f) {
        struct attempt *a = &((struct attempt *) data)[i];
        (void) f;  /* tc_decrypt is bounded by the context's deadline */
        return tc_decrypt(a->ctx, a->jwe, strlen(a->jwe), &a->key, &a->len, &a->err);
}

/* In the caller's thread: libcryptsetup is not thread-safe. */
static int attempt_collect(void *data, size_t i, int r) {
        struct attempt *a = &((struct attempt *) data)[i];
        if (r >= 0)
                r = tc_luks_key_opens(a->device, a->b->slot, a->key, a->len, &a->err);
        a->b->r = r;
        if (r < 0) {
                char msg[1024];
                if (r == -EBADMSG)
                        tc_format(msg, sizeof(msg), "decrypts, but its key no longer opens keyslot %d: rebind it: "
                                  "tether luks regen -d %s -s %d", a->b->slot, a->device, a->b->slot);
                else if (a->b->network)
                        tc_format(msg, sizeof(msg), "does not decrypt now: %s; make sure %s answers from this "
                                  "host's network at boot; if the server no longer has the key, rebind: tether luks "
                                  "regen -d %s -s %d", a->err.msg, a->b->servers, a->device, a->b->slot);
                else
                        tc_format(msg, sizeof(msg), "does not decrypt now: %s", a->err.msg);
                a->b->error = strdup(msg);
        }
        return r;
}

static const struct tc_fanout_ops attempt_ops = { .run = attempt_run, .collect = attempt_collect };

/* Every binding of every volume the boot opens, all at once. */
static int bindings_try(struct check *c, const struct tc_ctx *ctx, struct tc_err *err) {
        size_t n = 0;
        for (size_t i = 0; i < c->out->n; i++)
                n += c->out->volumes[i].n_bindings;
        _cleanup_free_ struct attempt *jobs = calloc(n ? n : 1, sizeof(*jobs));
        if (!jobs)
                return tc_fail(err, -ENOMEM, "out of memory");
        struct tc_ctx child = *ctx;
        tc_ctx_set_deadline(&child);
        size_t j = 0;
        for (size_t i = 0; i < c->out->n; i++) {
                struct tc_bc_volume *v = &c->out->volumes[i];
                if (v->stage == TC_BC_NOT_AT_BOOT)
                        continue;
                for (size_t k = 0; k < v->n_bindings; k++)
                        if (v->bindings[k].r == -EINPROGRESS)
                                jobs[j++] = (struct attempt) { .ctx = &child, .device = v->device, .b = &v->bindings[k],
                                                               .jwe = c->info[i].bindings.items[k].jwe };
        }
        if (j > 0)
                (void) tc_fanout_run(&attempt_ops, jobs, &(struct tc_fanout_opts) { .n = j, .quorum = 0 });
        for (size_t k = 0; k < j; k++) {
                tc_secret_free(jobs[k].key, jobs[k].len);
                if (jobs[k].b->r == -EINPROGRESS) {
                        jobs[k].b->r = -ECANCELED;
                        jobs[k].b->error = strdup("not tried (cancelled)");
                }
        }
        return 0;
}

/* ---------------------------------------------------------------- judging a volume */

static int judge_initramfs_tools(struct check *c, size_t i, bool network) {
        struct tc_bc_volume *v = &c->out->volumes[i];
        int r = 0;
        if (!image_lists(c, i) && !(v->root && cryptopts_names(c, i))) {
                if (v->line)
                        r = problem(v, "not in the initramfs's crypttab: rebuild the initramfs: update-initramfs -u");
                else
                        r = problem(v, "the root volume is in neither /etc/crypttab nor a cryptopts= of the kernel "
                                    "command line: add it to %s, then update-initramfs -u", c->o->crypttab);
        }
        if (r >= 0 && !c->out->tether_in_image)
                r = problem(v, "the initramfs %s has no tether agent (scripts/local-top/tether, tether-askpass): "
                            "install tether's initramfs-tools hook, make sure /etc/initramfs-tools/conf.d/tether does "
                            "not say TETHER=n, then update-initramfs -u", c->out->initramfs);
        if (r >= 0 && network && c->out->tether_in_image && !c->out->network_in_image)
                r = problem(v, "the initramfs %s brings up no network (conf/tether.conf: TETHER_NETWORK=n) and a "
                            "binding needs a tang server: set TETHER_NETWORK=y in /etc/initramfs-tools/conf.d/tether, "
                            "then update-initramfs -u", c->out->initramfs);
        _cleanup_free_ char *ip = cmdline_value(c->cmdline, "ip");
        if (r >= 0 && network && ip && (strcmp(ip, "off") == 0 || strcmp(ip, "none") == 0))
                r = problem(v, "ip=%s on the kernel command line: the initramfs brings up no network and a binding "
                            "needs a tang server: use ip=dhcp (or a static ip=) instead", ip);
        return r;
}

static bool dracut_has_network(const struct tc_initramfs *img) {
        static const char *const modules[] = { "network", "network-legacy", "network-manager", "systemd-networkd",
                                               "network-wicked", "connman" };
        _cleanup_free_ char *text = img->modules ? strdup(img->modules) : NULL;
        char *save = NULL;
        for (char *l = text ? strtok_r(text, "\n", &save) : NULL; l; l = strtok_r(NULL, "\n", &save))
                for (size_t k = 0; k < ELEMENTSOF(modules); k++)
                        if (strcmp(l, modules[k]) == 0)
                                return true;
        return false;
}

static int judge_dracut(struct check *c, size_t i, bool network) {
        struct tc_bc_volume *v = &c->out->volumes[i];
        const char *uuid = c->info[i].uuid;
        int r = 0;
        _cleanup_free_ char *luks = cmdline_value(c->cmdline, "rd.luks");
        if (luks && strcmp(luks, "0") == 0)
                r = problem(v, "rd.luks=0 on the kernel command line: the initramfs opens no LUKS volume: remove it");
        _cleanup_free_ char *uuids = cmdline_value(c->cmdline, "rd.luks.uuid");
        if (r >= 0 && uuids && uuid && !image_lists(c, i) && !cmdline_has_item(c->cmdline, "rd.luks.uuid", uuid) &&
            !cmdline_has_item(c->cmdline, "rd.luks.uuid", v->name))
                r = problem(v, "the kernel command line names other volumes (rd.luks.uuid=) but not this one: add "
                            "rd.luks.uuid=%s", uuid);
        if (r >= 0 && !c->out->tether_in_image)
                r = problem(v, "the initramfs %s has no tether token plugin (" TOKEN_PLUGIN "): install tether's "
                            "dracut module, then dracut -f --add tether", c->out->initramfs);
        if (r >= 0 && network && !c->out->network_in_image)
                r = problem(v, "the initramfs %s has no network module and a binding needs a tang server: "
                            "dracut -f --add network", c->out->initramfs);
        _cleanup_free_ char *neednet = cmdline_value(c->cmdline, "rd.neednet");
        _cleanup_free_ char *neednet_image = cmdline_value(c->image.cmdline_d, "rd.neednet");
        bool up = (neednet && strcmp(neednet, "1") == 0) || (neednet_image && strcmp(neednet_image, "1") == 0);
        if (r >= 0 && network && !up)
                r = problem(v, "neither the kernel command line nor the initramfs says rd.neednet=1, and a binding "
                            "needs a tang server: add rd.neednet=1 ip=dhcp to the kernel command line "
                            "(GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub)");
        return r;
}

static int judge_after_boot(struct check *c, size_t i, bool network) {
        struct tc_bc_volume *v = &c->out->volumes[i];
        _cleanup_free_ char *plugin = NULL;
        int r = 0;
        if (asprintf(&plugin, "%s/" TOKEN_PLUGIN, c->o->tokendir) < 0)
                return -ENOMEM;
        if (access(plugin, F_OK) < 0) {
                if (c->image.kind == TC_INITRAMFS_DRACUT)
                        r = problem(v, "opened after boot by systemd-cryptsetup, which finds no tether token plugin "
                                    "(%s): install tether's token plugin there", plugin);
                else
                        r = problem(v, "opened after boot by systemd-cryptsetup, which finds no tether token plugin "
                                    "(%s): add the `initramfs` option to %s line %u, then update-initramfs -u (or "
                                    "install tether's token plugin there)", plugin, c->o->crypttab, v->line);
        }
        if (r >= 0 && network && !tc_crypttab_has_option(c->info[i].options, "_netdev"))
                r = problem(v, "opened after boot before the network is up (a binding needs a tang server): add "
                            "the `_netdev` option to %s line %u", c->o->crypttab, v->line);
        return r;
}

static int judge(struct check *c, size_t i) {
        struct tc_bc_volume *v = &c->out->volumes[i];
        struct vol_info *in = &c->info[i];
        int r = 0;
        if (v->stage == TC_BC_NOT_AT_BOOT) {
                v->verdict = TC_BC_SKIPPED;
                return v->note ? 0 : (v->note = strdup("noauto: not opened at boot")) ? 0 : -ENOMEM;
        }
        if (!in->asks) {
                v->verdict = TC_BC_OTHER;
                return 0;
        }
        if (!in->bindings_read)
                r = problem(v, "cannot read its LUKS2 header: %s", in->bindings_error);
        else if (v->n_bindings == 0) {
                if (tc_crypttab_has_option(in->options, "nofail")) {
                        v->verdict = TC_BC_SKIPPED;
                        return (v->note = strdup("not bound; nofail: the boot goes on without it")) ? 0 : -ENOMEM;
                }
                r = problem(v, "not bound: the boot asks for its passphrase: bind it: tether luks bind -d %s tang "
                            "'{\"url\":\"http://SERVER\"}'", v->device);
        } else {
                bool network = false, works = false;
                for (size_t k = 0; k < v->n_bindings; k++) {
                        network |= v->bindings[k].network;
                        works |= v->bindings[k].r == 0;
                }
                if (!works)
                        r = problem(v, "no binding decrypts now (see each binding): the boot would ask for its "
                                    "passphrase");
                if (r >= 0 && v->stage == TC_BC_INITRAMFS) {
                        if (!c->image_read)
                                r = problem(v, "cannot read the initramfs: %s: check the file, or give the one the "
                                            "next boot uses with --initramfs", c->out->initramfs_error);
                        else if (c->image.kind == TC_INITRAMFS_TOOLS)
                                r = judge_initramfs_tools(c, i, network);
                        else if (c->image.kind == TC_INITRAMFS_DRACUT)
                                r = judge_dracut(c, i, network);
                        else
                                r = problem(v, "the initramfs %s is neither dracut's nor initramfs-tools': rebuild "
                                            "it", c->out->initramfs);
                } else if (r >= 0)
                        r = judge_after_boot(c, i, network);
        }
        if (r < 0)
                return r;
        v->verdict = v->n_problems ? TC_BC_PROMPT : TC_BC_UNATTENDED;
        return 0;
}

/* ---------------------------------------------------------------- the whole */

static void image_facts(struct check *c) {
        const struct tc_initramfs *img = &c->image;
        struct tc_boot_check *out = c->out;
        out->kind = img->kind;
        if (img->kind == TC_INITRAMFS_TOOLS) {
                out->tether_in_image = tc_initramfs_has(img, "scripts/local-top/tether") &&
                                       tc_initramfs_has(img, "tether-askpass");
                out->network_in_image = img->tether_conf && strstr(img->tether_conf, "TETHER_NETWORK=y");
        } else if (img->kind == TC_INITRAMFS_DRACUT) {
                out->tether_in_image = tc_initramfs_has(img, TOKEN_PLUGIN);
                out->network_in_image = dracut_has_network(img);
        }
}

static int run_check(struct check *c, const struct tc_ctx *ctx, struct tc_err *err) {
        const struct tc_boot_check_opts *o = c->o;
        struct tc_boot_check *out = c->out;
        int r;
        if (!(out->initramfs = strdup(o->initramfs)))
                return tc_fail(err, -ENOMEM, "out of memory");
        if ((r = crypttab_read(c, err)) < 0 || (r = root_add(c, err)) < 0)
                return r;
        if (o->cmdline && (r = read_text(o->cmdline, &c->cmdline, err)) < 0)
                return r;
        struct tc_err e = {};
        if (out->n > 0) {
                if (tc_initramfs_read(o->initramfs, o->deadline_ms, &c->image, &e) >= 0) {
                        c->image_read = true;
                        image_facts(c);
                } else if (!(out->initramfs_error = strdup(e.msg)))
                        return tc_fail(err, -ENOMEM, "out of memory");
        }
        for (size_t i = 0; i < out->n; i++)
                if ((r = bindings_read(c, i, err)) < 0)
                        return r;
        for (size_t i = 0; i < out->n; i++)
                out->volumes[i].stage = stage_of(c, i);
        if ((r = bindings_try(c, ctx, err)) < 0)
                return r;
        out->unattended = true;
        for (size_t i = 0; i < out->n; i++) {
                if (judge(c, i) < 0)
                        return tc_fail(err, -ENOMEM, "out of memory");
                if (out->volumes[i].verdict == TC_BC_PROMPT)
                        out->unattended = false;
        }
        return 0;
}

int tc_boot_check(const struct tc_ctx *ctx, const struct tc_boot_check_opts *o, struct tc_boot_check *out,
                  struct tc_err *err) {
        struct check c = { .o = o, .out = out };
        memset(out, 0, sizeof(*out));
        int r = run_check(&c, ctx, err);
        for (size_t i = 0; i < out->n; i++) {
                free(c.info[i].source);
                free(c.info[i].options);
                free(c.info[i].uuid);
                free(c.info[i].bindings_error);
                tc_luks_bindings_clear(&c.info[i].bindings);
        }
        free(c.info);
        free(c.cmdline);
        tc_initramfs_clear(&c.image);
        if (r < 0)
                tc_boot_check_clear(out);
        return r;
}

void tc_boot_check_clear(struct tc_boot_check *c) {
        for (size_t i = 0; i < c->n; i++) {
                struct tc_bc_volume *v = &c->volumes[i];
                free(v->name);
                free(v->device);
                free(v->note);
                for (size_t k = 0; k < v->n_bindings; k++) {
                        free(v->bindings[k].pin);
                        free(v->bindings[k].servers);
                        free(v->bindings[k].error);
                }
                free(v->bindings);
                for (size_t k = 0; k < v->n_problems; k++)
                        free(v->problems[k]);
                free(v->problems);
        }
        free(c->volumes);
        free(c->initramfs);
        free(c->initramfs_error);
        memset(c, 0, sizeof(*c));
}

/* ---------------------------------------------------------------- the root's device */

/* MAJ:MIN of the file system mounted on / (the last mount there wins). */
static int root_devnum(const char *mountinfo, char devnum[32], struct tc_err *err) {
        _cleanup_fclose_ FILE *f = fopen(mountinfo, "re");
        char line[4096];
        devnum[0] = '\0';
        if (!f)
                return tc_fail(err, -errno, "%s: %s", mountinfo, strerror(errno));
        while (fgets(line, sizeof(line), f)) {
                char dev[32], mnt[4096];
                /* ID PARENT MAJ:MIN ROOT MOUNTPOINT ... */
                if (sscanf(line, "%*s %*s %31s %*s %4095s", dev, mnt) == 2 && strcmp(mnt, "/") == 0)
                        memcpy(devnum, dev, sizeof(dev));
        }
        return devnum[0] ? 0 : tc_fail(err, -ENOENT, "%s: nothing is mounted on /", mountinfo);
}

/* The sysfs line of file, without its newline, or NULL. */
static char *sys_line(const char *dir, const char *file) {
        _cleanup_free_ char *path = NULL;
        char buf[256];
        if (asprintf(&path, "%s/%s", dir, file) < 0)
                return NULL;
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f || !fgets(buf, sizeof(buf), f))
                return NULL;
        buf[strcspn(buf, "\n")] = '\0';
        return strdup(buf);
}

/* Walks down from the block device in dir (a /sys/.../block/X directory)
 * through device-mapper layers to a dm-crypt LUKS mapping. */
static int find_crypt(const char *sys, const char *dir, int depth, char **device, char **name) {
        if (depth > 8)
                return 0;
        _cleanup_free_ char *uuid = sys_line(dir, "dm/uuid");
        if (!uuid)
                return 0;  /* not device-mapper: a plain disk */
        _cleanup_free_ char *slaves = NULL;
        if (asprintf(&slaves, "%s/slaves", dir) < 0)
                return -ENOMEM;
        _cleanup_closedir_ DIR *d = opendir(slaves);
        if (!d)
                return 0;
        bool crypt = strncmp(uuid, "CRYPT-LUKS", 10) == 0;
        for (struct dirent *e; (e = readdir(d));) {
                if (e->d_name[0] == '.')
                        continue;
                if (crypt) {
                        if (asprintf(device, "/dev/%s", e->d_name) < 0)
                                return -ENOMEM;
                        *name = sys_line(dir, "dm/name");
                        return 1;
                }
                _cleanup_free_ char *below = NULL;
                if (asprintf(&below, "%s/class/block/%s", sys, e->d_name) < 0)
                        return -ENOMEM;
                int r = find_crypt(sys, below, depth + 1, device, name);
                if (r != 0)
                        return r;
        }
        return 0;
}

int tc_boot_root_device(const char *mountinfo, const char *sys, char **device, char **name, struct tc_err *err) {
        char devnum[32];
        *device = *name = NULL;
        int r = root_devnum(mountinfo, devnum, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *dir = NULL;
        if (asprintf(&dir, "%s/dev/block/%s", sys, devnum) < 0)
                return tc_fail(err, -ENOMEM, "out of memory");
        r = find_crypt(sys, dir, 0, device, name);
        return r < 0 ? tc_fail(err, r, "out of memory") : 0;
}
