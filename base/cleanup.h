/* Cleanup helpers in the style of systemd and libjose: a variable declared
 * with one of these is released on every return path. */
#pragma once

#include <stdlib.h>
#include <stdio.h>
#include <unistd.h>
#include <dirent.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>

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

/* Hands ownership to the caller: the cleanup then sees NULL. */
#define TAKE_PTR(p) ({ __typeof__(p) _p = (p); (p) = NULL; _p; })
#define TAKE_FD(fd) ({ int _fd = (fd); (fd) = -1; _fd; })

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
