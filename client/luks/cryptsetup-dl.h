/* libcryptsetup, loaded on first use rather than at start-up. Linking it
 * would load it and its closure (device-mapper, udev, blkid, argon2,
 * json-c, selinux, pcre2...) into every tether process, `tether decrypt`
 * included, which never touches a disk: about 2 ms of start-up each time.
 * luks.c includes this header instead of calling the library directly; the
 * macros below send each crypt_*() call through a pointer resolved by
 * tc_cryptsetup_load(), which every entry point of luks.c calls first. */
#pragma once

#include <libcryptsetup.h>
#include <stdbool.h>

#include "err.h"

/* The ABI tether is built against (libcryptsetup 2.x). */
#define TC_CRYPTSETUP_SONAME "libcryptsetup.so.12"

/* Loads libcryptsetup and resolves every function below, once per process
 * (thread-safe). Returns 0, or -ENOPKG with err naming the library and
 * what the loader said. In the token plugin the library is already in the
 * process: this finds the same copy. The optional functions (newer than
 * the oldest libcryptsetup.so.12 tether runs on) are resolved if present:
 * their pointers stay NULL otherwise. */
int tc_cryptsetup_load(struct tc_err *err);

/* Whether the libcryptsetup loaded has keyslot contexts (2.6): bind -e with
 * a token of another type needs them. */
bool tc_cryptsetup_has_keyslot_context(void);

/* For the unit tests, single-threaded: loads the library again, as if it
 * had no function named hide (NULL: all it has). */
void tc_cryptsetup_reload_for_tests(const char *hide);

#define TC_CRYPTSETUP_FUNCS(X)                  \
        X(crypt_activate_by_passphrase)         \
        X(crypt_dump_json)                      \
        X(crypt_format)                         \
        X(crypt_free)                           \
        X(crypt_get_type)                       \
        X(crypt_get_uuid)                       \
        X(crypt_get_volume_key_size)            \
        X(crypt_init)                           \
        X(crypt_keyslot_add_by_volume_key)      \
        X(crypt_keyslot_destroy)                \
        X(crypt_keyslot_max)                    \
        X(crypt_keyslot_status)                 \
        X(crypt_load)                           \
        X(crypt_logf)                           \
        X(crypt_set_pbkdf_type)                 \
        X(crypt_token_assign_keyslot)           \
        X(crypt_token_json_get)                 \
        X(crypt_token_json_set)                 \
        X(crypt_token_max)                      \
        X(crypt_token_status)                   \
        X(crypt_volume_key_get)

/* Optional: libcryptsetup 2.6's keyslot contexts (bind -e with another
 * token type). An older libcryptsetup.so.12 at run time lacks them. */
#define TC_CRYPTSETUP_OPTIONAL_FUNCS(X) TC_CRYPTSETUP_KEYSLOT_CONTEXT_FUNCS(X)

#ifdef HAVE_CRYPT_KEYSLOT_CONTEXT
#define TC_CRYPTSETUP_KEYSLOT_CONTEXT_FUNCS(X)  \
        X(crypt_keyslot_context_free)           \
        X(crypt_keyslot_context_init_by_token)  \
        X(crypt_volume_key_get_by_keyslot_context)
#define crypt_keyslot_context_free(...) sym_crypt_keyslot_context_free(__VA_ARGS__)
#define crypt_keyslot_context_init_by_token(...) sym_crypt_keyslot_context_init_by_token(__VA_ARGS__)
#define crypt_volume_key_get_by_keyslot_context(...) sym_crypt_volume_key_get_by_keyslot_context(__VA_ARGS__)
#else
#define TC_CRYPTSETUP_KEYSLOT_CONTEXT_FUNCS(X)
#endif

#define TC_CRYPTSETUP_DECLARE(f) extern __typeof__(f) *sym_##f;
TC_CRYPTSETUP_FUNCS(TC_CRYPTSETUP_DECLARE)
TC_CRYPTSETUP_OPTIONAL_FUNCS(TC_CRYPTSETUP_DECLARE)
#undef TC_CRYPTSETUP_DECLARE

/* Function-like, so that the types of the same names (crypt_keyslot_info,
 * crypt_token_info) are left alone. */
#define crypt_activate_by_passphrase(...) sym_crypt_activate_by_passphrase(__VA_ARGS__)
#define crypt_dump_json(...) sym_crypt_dump_json(__VA_ARGS__)
#define crypt_format(...) sym_crypt_format(__VA_ARGS__)
#define crypt_free(...) sym_crypt_free(__VA_ARGS__)
#define crypt_get_type(...) sym_crypt_get_type(__VA_ARGS__)
#define crypt_get_uuid(...) sym_crypt_get_uuid(__VA_ARGS__)
#define crypt_get_volume_key_size(...) sym_crypt_get_volume_key_size(__VA_ARGS__)
#define crypt_init(...) sym_crypt_init(__VA_ARGS__)
#define crypt_keyslot_add_by_volume_key(...) sym_crypt_keyslot_add_by_volume_key(__VA_ARGS__)
#define crypt_keyslot_destroy(...) sym_crypt_keyslot_destroy(__VA_ARGS__)
#define crypt_keyslot_max(...) sym_crypt_keyslot_max(__VA_ARGS__)
#define crypt_keyslot_status(...) sym_crypt_keyslot_status(__VA_ARGS__)
#define crypt_load(...) sym_crypt_load(__VA_ARGS__)
#define crypt_logf(...) sym_crypt_logf(__VA_ARGS__)
#define crypt_set_pbkdf_type(...) sym_crypt_set_pbkdf_type(__VA_ARGS__)
#define crypt_token_assign_keyslot(...) sym_crypt_token_assign_keyslot(__VA_ARGS__)
#define crypt_token_json_get(...) sym_crypt_token_json_get(__VA_ARGS__)
#define crypt_token_json_set(...) sym_crypt_token_json_set(__VA_ARGS__)
#define crypt_token_max(...) sym_crypt_token_max(__VA_ARGS__)
#define crypt_token_status(...) sym_crypt_token_status(__VA_ARGS__)
#define crypt_volume_key_get(...) sym_crypt_volume_key_get(__VA_ARGS__)
