/* A libFuzzer custom mutator for inputs that carry JSON in base64url: JWE
 * protected headers (with sss children nested inside), advertisement
 * payloads, LUKS2 token "protected" members. Byte mutations of the encoded
 * text almost always just break the encoding, so half the time this one
 * decodes such a run, lets libFuzzer mutate the JSON (or, in turn, a run
 * inside it), and encodes it back.
 * Linked into the libFuzzer builds of the jwe, sss, adv and luks-token
 * targets only (replay builds have no LLVMFuzzerMutate). */
#include "fuzz.h"

#include <stdbool.h>
#include <string.h>
#include <jose/b64.h>

size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed);

#define MIN_RUN 8
#define MAX_RUNS 64

static bool is_b64url(uint8_t c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

struct run {
        size_t start, len;
};

/* Maximal base64url runs whose text decodes to something starting with '{'. */
static size_t find_json_runs(const uint8_t *data, size_t size, struct run *runs) {
        size_t n = 0;
        for (size_t i = 0; i < size && n < MAX_RUNS;) {
                size_t j = i;
                while (j < size && is_b64url(data[j]))
                        j++;
                uint8_t first[3];
                /* "ey" is how base64 of '{' followed by a quote or letter starts. */
                if (j - i >= MIN_RUN && jose_b64_dec_buf(data + i, 4, first, sizeof(first)) == 3 && first[0] == '{')
                        runs[n++] = (struct run) { i, j - i };
                i = j > i ? j : i + 1;
        }
        return n;
}

/* Replaces run r of data with the encoding of its mutated decoding; returns
 * the new size, or 0 if it does not fit in max_size. */
static size_t mutate_run(uint8_t *data, size_t size, size_t max_size, struct run r, unsigned int seed) {
        size_t dec_len = jose_b64_dec_buf(data + r.start, r.len, NULL, 0);
        if (dec_len == SIZE_MAX || dec_len == 0)
                return 0;
        size_t cap = dec_len * 2 + 64;
        uint8_t *json = malloc(cap);
        uint8_t *out = malloc(max_size);
        size_t result = 0;
        if (!json || !out || jose_b64_dec_buf(data + r.start, r.len, json, cap) != dec_len)
                goto done;

        /* The decoded JSON may carry encoded JSON itself (sss children):
         * recurse, on ever shorter text. */
        size_t mutated = LLVMFuzzerCustomMutator(json, dec_len, cap, seed * 1103515245u + 12345u);
        size_t enc_len = jose_b64_enc_buf(json, mutated, NULL, 0);
        size_t tail = size - r.start - r.len;
        if (enc_len == SIZE_MAX || r.start + enc_len + tail > max_size)
                goto done;
        memcpy(out, data, r.start);
        jose_b64_enc_buf(json, mutated, out + r.start, enc_len);
        memcpy(out + r.start + enc_len, data + r.start + r.len, tail);
        result = r.start + enc_len + tail;
        memcpy(data, out, result);
done:
        free(json);
        free(out);
        return result;
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed) {
        struct run runs[MAX_RUNS];
        size_t n = seed % 2 ? find_json_runs(data, size, runs) : 0;

        if (n > 0) {
                size_t result = mutate_run(data, size, max_size, runs[(seed / 2) % n], seed);
                if (result > 0)
                        return result;
        }
        return LLVMFuzzerMutate(data, size, max_size);
}
