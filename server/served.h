/* What tetherd serves for one version of the key directory: everything that
 * can be prepared at load time is prepared here, so requests only look up. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include "keyset.h"
#include "hosts.h"

/* What is wrong behind the keys being served, beyond the key set itself. */
enum served_fault {
        SERVED_FAULT_DIRECTORY,    /* the key directory is gone or cannot be read */
        SERVED_FAULT_KEY_FILES,    /* key files that exist but cannot be read */
        SERVED_FAULT_KEYGEN,       /* no advertised key, and creating one failed */
        SERVED_FAULT_MAX,
};

/* Written by the keystore as faults come and go, read by /health; shared by
 * every version of the key set the keystore publishes, because a fault (the
 * directory removed) can arrive without a new version. */
struct served_health {
        pthread_mutex_t lock;
        char fault[SERVED_FAULT_MAX][200];   /* "" while there is no such fault */
        /* Atomic: the directory the keys came from is gone, so they are not
         * on disk: /rec still uses them, /adv must not advertise them (a
         * client bound to them would lose them at the next restart). */
        bool adv_withheld;
};

/* Why /adv cannot be answered, for the body of its 500 (tang's status, with
 * one line a client can show: the reasons naming files go to the log). */
enum served_no_adv {
        SERVED_NO_ADV_NO_KEY,      /* no usable signing key in the directory */
        SERVED_NO_ADV_UNREADABLE,  /* key files exist, but cannot be read */
        SERVED_NO_ADV_REMOVED,     /* the key files were just deleted: no new pair yet */
};

struct served_adv {
        char *jws;                         /* NULL until first asked for, for a hidden signer */
        size_t len;
        const struct tk_key *extra_signer; /* /adv/{thp} of a hidden signing key: it signs too */
        bool failed;                       /* signing it failed: 404, as if unknown */
};

struct thp_entry {
        const char *thp;           /* points into a key's thumbprints */
        const struct tk_key *key;
        const struct served_adv *adv;  /* signing keys: what /adv/{thp} serves, see served_adv_get */
};

/* A host of KEYDIR/hosts as served: its keys' index and its advertisements,
 * signed by the shared signing keys when first asked for. */
struct served_host {
        const struct tk_host *host;
        struct served_adv *advs;   /* [i]: the host's version of the set's advs[i] */
        struct thp_entry *index;   /* sorted by thp: the host's keys under every hash */
        size_t n_index;
        const char *adv_thp;       /* S256 of its (first) advertised exchange key, or NULL */
};

struct served {
        int refcount;
        struct tk_keyset *ks;
        bool usable;               /* an advertisement could be signed: tang's condition for 200s */
        bool healthy;              /* usable and an exchange key is advertised */
        struct served_adv *advs;   /* [0]: default, signed at load; then one per hidden
                                    * signing key, signed when first asked for */
        size_t n_advs;
        pthread_mutex_t adv_lock;  /* one signer of the hidden keys' advertisements at a time */
        struct thp_entry *index;   /* sorted by thp: every key under every hash */
        size_t n_index;
        struct served_health *health;  /* the keystore's; NULL outside one */
        char **unreadable;         /* sorted names (kids) of key files that exist but cannot be read */
        size_t n_unreadable;
        enum served_no_adv no_adv; /* when !usable */
        struct tk_hosts *hosts;    /* NULL: no host directory */
        struct served_host *shosts;  /* [i] serves hosts->hosts[i] */
        size_t n_hosts;
};

/* Takes ownership of ks (also on failure). */
int served_build(struct tk_keyset *ks, struct served **ret);
/* Takes ownership of hosts (also on failure); before s is published. */
int served_set_hosts(struct served *s, struct tk_hosts *hosts);
struct served *served_ref(struct served *s);
void served_unref(struct served *s);

/* Whether kid names a key file that exists but cannot be read ({kid}.jwk or
 * .{kid}.jwk: tang names key files after their thumbprint). */
bool served_unreadable(const struct served *s, const char *kid, size_t len);
/* Whether /adv may advertise s's keys (see adv_withheld). */
bool served_adv_withheld(const struct served *s);

/* Looks a thumbprint (any of S1..S512) up; NULL when unknown. */
const struct thp_entry *served_find(const struct served *s, const char *thp, size_t len);

/* What /adv/{thp} serves for e: NULL when e is not a signing key. The
 * advertisement of a hidden signing key is signed on the first request for
 * it, not at load: a directory with hundreds of rotated keys would
 * otherwise cost hundreds of signatures on every reload, and requests wait
 * for reloads. */
const struct served_adv *served_adv_get(const struct served *s, const struct thp_entry *e);

/* The host named by len bytes of name, or NULL. */
const struct served_host *served_find_host(const struct served *s, const char *name, size_t len);
/* One of the host's keys (advertised or rotated) by thumbprint, or NULL:
 * never a shared key. */
const struct thp_entry *served_find_host_key(const struct served_host *h, const char *thp, size_t len);
/* Whether the host's directory has a key file for kid ({kid}.jwk or
 * .{kid}.jwk, tang's names) that the server may not read: asked on the
 * rare path of an unknown kid only, so it looks at the disk then. */
bool served_host_unreadable(const struct served_host *h, const char *kid, size_t len);
/* What /h/NAME/adv (e NULL) or /h/NAME/adv/{thp} (e the shared signing key
 * thp names) serves, signed when first asked for as served_adv_get does;
 * NULL when e is no signing key or signing failed. */
const struct served_adv *served_host_adv_get(const struct served *s, const struct served_host *h,
                                             const struct thp_entry *e);

void served_health_init(struct served_health *h);
void served_health_destroy(struct served_health *h);
/* Sets fault f to a message, or clears it (fmt NULL). Returns whether the
 * message changed, so that a fault repeated on every retry is logged once. */
bool served_health_set(struct served_health *h, enum served_fault f, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
/* The current faults joined with "; " into buf; returns whether there is any. */
bool served_health_describe(struct served_health *h, char *buf, size_t len);

/* What /health says (and the metrics): ok or degraded while /adv and /rec
 * can be answered (degraded: from keys in memory only), unavailable when
 * they cannot. s may be NULL (nothing loaded yet). */
enum served_state { SERVED_STATE_OK, SERVED_STATE_DEGRADED, SERVED_STATE_UNAVAILABLE, SERVED_STATE_MAX };
enum served_state served_state(const struct served *s);
const char *served_state_name(enum served_state st);
