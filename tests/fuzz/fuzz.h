/* Shared by the fuzz harnesses: libFuzzer's entry points (also called by
 * replay.c in ordinary builds), and how a harness reports that a property
 * it checks does not hold. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A broken property is a finding like a crash: abort, so that libFuzzer
 * saves the input and the replay test fails. */
#define FUZZ_ASSERT(cond)                                                                              \
        do {                                                                                           \
                if (!(cond)) {                                                                         \
                        fprintf(stderr, "%s:%d: property does not hold: %s\n", __FILE__, __LINE__, #cond); \
                        abort();                                                                       \
                }                                                                                      \
        } while (0)

/* The input as a C string: cut at the first NUL, as it would be when it
 * reaches the code as one (a token from libcryptsetup). Caller frees. */
char *fuzz_cstring(const uint8_t *data, size_t size);

/* An exact-size heap copy without a terminating NUL, so that reading one
 * byte past size is an error AddressSanitizer reports. Caller frees. */
char *fuzz_copy(const uint8_t *data, size_t size);

/* A private directory under $TMPDIR (or /tmp), removed at exit: the only
 * place a harness writes. */
const char *fuzz_tmpdir(void);
