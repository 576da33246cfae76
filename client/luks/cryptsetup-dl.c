#include "cryptsetup-dl.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define TC_CRYPTSETUP_DEFINE(f) __typeof__(f) *sym_##f;
TC_CRYPTSETUP_FUNCS(TC_CRYPTSETUP_DEFINE)
TC_CRYPTSETUP_OPTIONAL_FUNCS(TC_CRYPTSETUP_DEFINE)
#undef TC_CRYPTSETUP_DEFINE

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static bool loaded;
static char load_error[256];
static const char *hidden;

static void *resolve(void *dl, const char *name) {
        return hidden && strcmp(name, hidden) == 0 ? NULL : dlsym(dl, name);
}

static void load(void) {
        /* Never closed: the pointers stay valid for the life of the process. */
        void *dl = dlopen(TC_CRYPTSETUP_SONAME, RTLD_NOW | RTLD_NODELETE);
        if (!dl) {
                snprintf(load_error, sizeof(load_error), "%s", dlerror());
                return;
        }
#define TC_CRYPTSETUP_RESOLVE(f)                                                                  \
        if (!(sym_##f = (__typeof__(f) *) resolve(dl, #f))) {                                       \
                snprintf(load_error, sizeof(load_error), "%s has no %s", TC_CRYPTSETUP_SONAME, #f); \
                return;                                                                           \
        }
        TC_CRYPTSETUP_FUNCS(TC_CRYPTSETUP_RESOLVE)
#undef TC_CRYPTSETUP_RESOLVE
        /* Absent from an older library: only what needs them refuses. */
#define TC_CRYPTSETUP_RESOLVE_OPTIONAL(f) sym_##f = (__typeof__(f) *) resolve(dl, #f);
        TC_CRYPTSETUP_OPTIONAL_FUNCS(TC_CRYPTSETUP_RESOLVE_OPTIONAL)
#undef TC_CRYPTSETUP_RESOLVE_OPTIONAL
        loaded = true;
}

static void nothing(void) {}

void tc_cryptsetup_reload_for_tests(const char *hide) {
        /* Single-threaded callers only: once done, load_once runs nothing. */
        pthread_once(&load_once, nothing);
        hidden = hide;
        loaded = false;
        load();
}

bool tc_cryptsetup_has_keyslot_context(void) {
#ifdef HAVE_CRYPT_KEYSLOT_CONTEXT
        return sym_crypt_keyslot_context_free && sym_crypt_keyslot_context_init_by_token &&
               sym_crypt_volume_key_get_by_keyslot_context;
#else
        return false;
#endif
}

int tc_cryptsetup_load(struct tc_err *err) {
        pthread_once(&load_once, load);
        if (loaded)
                return 0;
        return tc_fail(err, -ENOPKG, "cannot load libcryptsetup, needed for LUKS (install it: package libcryptsetup12): %s",
                       load_error);
}
