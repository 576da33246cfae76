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

#define _cleanup_(f) __attribute__((cleanup(f)))

static inline void freep(void *p) { free(*(void **) p); }
static inline void closep(int *fd) { if (*fd >= 0) close(*fd); }
static inline void fclosep(FILE **f) { if (*f) fclose(*f); }
static inline void closedirp(DIR **d) { if (*d) closedir(*d); }
static inline void bn_clear_freep(BIGNUM **b) { BN_clear_free(*b); }
static inline void bn_ctx_freep(BN_CTX **c) { BN_CTX_free(*c); }
/* Cleared: points here are often shared secrets (x of the ECMR product). */
static inline void ec_point_freep(EC_POINT **p) { EC_POINT_clear_free(*p); }
static inline void ec_group_freep(EC_GROUP **g) { EC_GROUP_free(*g); }

#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_fclose_ _cleanup_(fclosep)
#define _cleanup_closedir_ _cleanup_(closedirp)

/* Hands ownership to the caller: the cleanup then sees NULL. */
#define TAKE_PTR(p) ({ __typeof__(p) _p = (p); (p) = NULL; _p; })
#define TAKE_FD(fd) ({ int _fd = (fd); (fd) = -1; _fd; })

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
