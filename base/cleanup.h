/* Cleanup helpers in the style of systemd and libjose: a variable declared
 * with one of these is released on every return path. */
#pragma once

#include <stdlib.h>
#include <stdio.h>
#include <unistd.h>
#include <dirent.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>

#include "util.h"

#define _cleanup_(f) __attribute__((cleanup(f)))

/* Defines funcp(type *p), calling func(*p) unless *p is NULL: what
 * _cleanup_(funcp) needs for a type released by one call (systemd's
 * DEFINE_TRIVIAL_CLEANUP_FUNC, jose's declare_cleanup). */
#define TC_DEFINE_CLEANUP(type, func)                   \
        static inline void func##p(type *p) {           \
                if (*p)                                 \
                        (void) func(*p);                \
        }

/* The same for a function taking any pointer (free and its kin): funcp
 * takes void *, so that it serves variables of every pointer type. */
#define TC_DEFINE_CLEANUP_ANY(func)                     \
        static inline void func##p(void *p) {           \
                func(*(void **) p);                     \
        }

TC_DEFINE_CLEANUP_ANY(free)
TC_DEFINE_CLEANUP(FILE *, fclose)
TC_DEFINE_CLEANUP(DIR *, closedir)
TC_DEFINE_CLEANUP(BN_CTX *, BN_CTX_free)
TC_DEFINE_CLEANUP(EC_GROUP *, EC_GROUP_free)
TC_DEFINE_CLEANUP(EVP_CIPHER_CTX *, EVP_CIPHER_CTX_free)
TC_DEFINE_CLEANUP(EVP_MD_CTX *, EVP_MD_CTX_free)
/* Cleared: numbers and points here are often secrets (a private scalar,
 * the x of the ECMR product). */
TC_DEFINE_CLEANUP(BIGNUM *, BN_clear_free)
TC_DEFINE_CLEANUP(EC_POINT *, EC_POINT_clear_free)

static inline void closep(int *fd) {
        if (*fd >= 0)
                close(*fd);
}

#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_fclose_ _cleanup_(fclosep)
#define _cleanup_closedir_ _cleanup_(closedirp)

#define TC_CONCAT_(a, b) a##b
#define TC_CONCAT(a, b) TC_CONCAT_(a, b)
#define TC_UNIQ(name) TC_CONCAT(name, __COUNTER__)

/* Wiping on every return path. A cleanup function sees only its own
 * variable, so these declare a hidden one that points at what to wipe:
 *
 *   uint8_t cek[TC_CEK_LEN];
 *   TC_CLEANUP_ERASE(cek);           the local array is wiped
 *                                    (OPENSSL_cleanse)
 *   uint8_t *pt = NULL;
 *   size_t pt_len = 0;
 *   TC_CLEANUP_SECRET(pt, pt_len);   the buffer is wiped for the length
 *                                    pt_len has then, and freed
 *                                    (tc_secret_free); TAKE_PTR(pt) hands
 *                                    it on instead
 *
 * Each comes after what it names and before the first return: a return
 * before it, or a goto past it, leaves the secret where it is. */
struct tc_erase_ref {
        void *p;
        size_t size;
};
struct tc_secret_ref {
        void *p;                /* the pointer variable: a uint8_t ** or char ** */
        const size_t *len;
};
static inline void tc_erase_refp(struct tc_erase_ref *r) {
        OPENSSL_cleanse(r->p, r->size);
}
static inline void tc_secret_refp(struct tc_secret_ref *r) {
        tc_secret_free(*(void **) r->p, *r->len);
}

/* Refuses a pointer, whose sizeof is not what there is to wipe; beware
 * that a parameter declared as an array is one. */
#define TC_CLEANUP_ERASE(array)                                                                 \
        _Static_assert(!__builtin_types_compatible_p(__typeof__(array), __typeof__(&(array)[0])), \
                       "TC_CLEANUP_ERASE needs an array");                                       \
        _cleanup_(tc_erase_refp) __attribute__((unused)) struct tc_erase_ref TC_UNIQ(_erase_) =   \
                { .p = (array), .size = sizeof(array) }
#define TC_CLEANUP_SECRET(ptr_var, len_var)                                                        \
        _cleanup_(tc_secret_refp) __attribute__((unused)) struct tc_secret_ref TC_UNIQ(_secret_) = \
                { .p = &(ptr_var), .len = &(len_var) }

/* Hands ownership to the caller: the cleanup then sees NULL. */
#define TAKE_PTR(p) ({ __typeof__(p) _p = (p); (p) = NULL; _p; })
#define TAKE_FD(fd) ({ int _fd = (fd); (fd) = -1; _fd; })
/* The same for a struct with a _clear cleanup: the variable is left zeroed. */
#define TAKE_STRUCT(s) ({ __typeof__(s) _s = (s); (s) = (__typeof__(s)) {}; _s; })

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
