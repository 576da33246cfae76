#include "cryptsetup-dl.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>

#define TC_CRYPTSETUP_DEFINE(f) __typeof__(f) *sym_##f;
TC_CRYPTSETUP_FUNCS(TC_CRYPTSETUP_DEFINE)
#undef TC_CRYPTSETUP_DEFINE

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static bool loaded;
static char load_error[256];

static void load(void) {
        /* Never closed: the pointers stay valid for the life of the process. */
        void *dl = dlopen(TC_CRYPTSETUP_SONAME, RTLD_NOW | RTLD_NODELETE);
        if (!dl) {
                snprintf(load_error, sizeof(load_error), "%s", dlerror());
                return;
        }
#define TC_CRYPTSETUP_RESOLVE(f)                                                                  \
        if (!(sym_##f = (__typeof__(f) *) dlsym(dl, #f))) {                                       \
                snprintf(load_error, sizeof(load_error), "%s has no %s", TC_CRYPTSETUP_SONAME, #f); \
                return;                                                                           \
        }
        TC_CRYPTSETUP_FUNCS(TC_CRYPTSETUP_RESOLVE)
#undef TC_CRYPTSETUP_RESOLVE
        loaded = true;
}

int tc_cryptsetup_load(struct tc_err *err) {
        pthread_once(&load_once, load);
        if (loaded)
                return 0;
        return tc_fail(err, -ENOPKG, "cannot load libcryptsetup, needed for LUKS (install it: package libcryptsetup12): %s",
                       load_error);
}
