/* What tetherd serves for one version of the key directory: everything that
 * can be prepared at load time is prepared here, so requests only look up. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include "keyset.h"

struct served_adv {
        char *jws;
        size_t len;
};

struct thp_entry {
        const char *thp;           /* points into a key's thumbprints */
        const struct tk_key *key;
        const struct served_adv *adv;  /* signing keys: what /adv/{thp} serves */
};

struct served {
        int refcount;
        struct tk_keyset *ks;
        bool usable;               /* an advertisement could be signed: tang's condition for 200s */
        bool healthy;              /* usable and an exchange key is advertised */
        struct served_adv *advs;   /* [0]: default; then one per hidden signing key */
        size_t n_advs;
        struct thp_entry *index;   /* sorted by thp: every key under every hash */
        size_t n_index;
};

/* Takes ownership of ks (also on failure). */
int served_build(struct tk_keyset *ks, struct served **ret);
struct served *served_ref(struct served *s);
void served_unref(struct served *s);

/* Looks a thumbprint (any of S1..S512) up; NULL when unknown. */
const struct thp_entry *served_find(const struct served *s, const char *thp, size_t len);
