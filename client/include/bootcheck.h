/* tether boot check: will this host's encrypted volumes unlock by
 * themselves at the next boot? For each volume the next boot opens (the
 * root's, and /etc/crypttab's), whether it is bound, whether each binding
 * decrypts now (and its key still opens its keyslot), whether the installed
 * initramfs holds what unlocking it there needs (tether's agent or token
 * plugin, the network), and what the kernel command line or crypttab lacks.
 * A library: the caller gives every path (tests point them at images) and
 * prints the result. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ctx.h"
#include "err.h"

/* ---------------------------------------------------------------- the initramfs */

enum tc_initramfs_kind {
        TC_INITRAMFS_UNKNOWN,
        TC_INITRAMFS_DRACUT,          /* usr/lib/dracut/ */
        TC_INITRAMFS_TOOLS,           /* Debian's initramfs-tools: conf/initramfs.conf, scripts/ */
};

/* What an initramfs holds: every name (without a leading "./"), and the
 * few small files the check reads. */
struct tc_initramfs {
        enum tc_initramfs_kind kind;
        char **names;
        size_t n;
        size_t names_bytes;   /* all names with their NULs: bounded */
        char *tether_conf;    /* conf/tether.conf (initramfs-tools' hook), or NULL */
        char *crypttab;       /* cryptroot/crypttab (initramfs-tools) or etc/crypttab (dracut), or NULL */
        char *cmdline_d;      /* etc/cmdline.d/ *.conf (dracut), one after another, or NULL */
        char *modules;        /* usr/lib/dracut/modules.txt, or NULL */
};

/* Reads an initramfs: cpio archives one after another (the early,
 * uncompressed ones: microcode), the last one possibly compressed; the
 * decompressor (gzip, zstd, xz, lzma, bzip2, lz4, lzop) runs as a child
 * process, killed if deadline_ms (a tc_now_ms() time, 0: none) passes. */
int tc_initramfs_read(const char *path, int64_t deadline_ms, struct tc_initramfs *out, struct tc_err *err);
void tc_initramfs_clear(struct tc_initramfs *i);
/* Whether a name in the image is name, or ends in "/" name (a file's
 * name without its directory: merged /usr images hold usr/lib/...). */
bool tc_initramfs_has(const struct tc_initramfs *i, const char *name);

/* ---------------------------------------------------------------- the check */

enum tc_bc_stage {
        TC_BC_INITRAMFS,      /* opened in the initramfs (root, crypttab's `initramfs`, dracut's image crypttab) */
        TC_BC_AFTER_BOOT,     /* opened by the running system's systemd-cryptsetup */
        TC_BC_NOT_AT_BOOT,    /* noauto */
};

enum tc_bc_verdict {
        TC_BC_UNATTENDED,     /* a binding will open it */
        TC_BC_PROMPT,         /* the boot stops at a passphrase prompt for it */
        TC_BC_OTHER,          /* a key file or a keyscript opens it: not tether's */
        TC_BC_SKIPPED,        /* not opened at boot (noauto), or nofail and unbound */
};

struct tc_bc_binding {
        int token, slot;
        char *pin;            /* the JWE's top pin */
        char *servers;        /* tang URLs, ", "-separated, or NULL */
        bool network;         /* needs a tang server */
        int r;                /* 0: decrypts now and the key opens its slot */
        char *error;          /* why not, and what to do */
};

struct tc_bc_volume {
        char *name;           /* the mapping's name */
        char *device;         /* the LUKS device (UUID= resolved when it can be) */
        unsigned line;        /* its /etc/crypttab line, 0: none */
        bool root;
        enum tc_bc_stage stage;
        enum tc_bc_verdict verdict;
        char *note;           /* what opens it when not tether (key file, noauto), or NULL */
        struct tc_bc_binding *bindings;
        size_t n_bindings;
        char **problems;      /* "what is wrong: what to do", each */
        size_t n_problems;
};

struct tc_boot_check_opts {
        const char *initramfs;    /* the image the next boot uses */
        const char *crypttab;     /* /etc/crypttab; a missing file lists nothing */
        const char *cmdline;      /* a file with the kernel command line (/proc/cmdline); NULL: none */
        const char *root;         /* the root's LUKS device, or NULL (root not encrypted) */
        const char *root_name;    /* its mapping's name, or NULL */
        const char *tokendir;     /* libcryptsetup's token plugin directory of the running system */
        int64_t deadline_ms;      /* for reading the initramfs; 0: none */
};

struct tc_boot_check {
        char *initramfs;              /* the path read */
        enum tc_initramfs_kind kind;
        char *initramfs_error;        /* why it could not be read, or NULL */
        bool tether_in_image;         /* the agent (initramfs-tools) or token plugin (dracut) */
        bool network_in_image;        /* initramfs-tools: TETHER_NETWORK=y; dracut: a network module */
        struct tc_bc_volume *volumes;
        size_t n;
        bool unattended;              /* no volume stops the boot at a prompt */
};

/* Fills out; returns 0 (the verdict is out->unattended), or < 0 when the
 * check itself could not run (out of memory, crypttab unreadable). */
int tc_boot_check(const struct tc_ctx *ctx, const struct tc_boot_check_opts *o, struct tc_boot_check *out,
                  struct tc_err *err);
void tc_boot_check_clear(struct tc_boot_check *c);

/* The LUKS device under the file system mounted on / (mountinfo: as
 * /proc/self/mountinfo; sys: "/sys"), through device-mapper layers (LVM on
 * LUKS), and its mapping's name. 0 with *device NULL if the root is not
 * on dm-crypt. */
int tc_boot_root_device(const char *mountinfo, const char *sys, char **device, char **name, struct tc_err *err);
