#include "fuzz.h"

#include <ftw.h>
#include <limits.h>
#include <string.h>

char *fuzz_cstring(const uint8_t *data, size_t size) {
        char *s = strndup((const char *) data, size);
        FUZZ_ASSERT(s);
        return s;
}

char *fuzz_copy(const uint8_t *data, size_t size) {
        char *s = malloc(size ? size : 1);
        FUZZ_ASSERT(s);
        if (size)
                memcpy(s, data, size);
        return s;
}

static char tmpdir[PATH_MAX];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) st, (void) flag, (void) ftw;
        return remove(path);
}

static void remove_tmpdir(void) {
        nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fuzz_tmpdir(void) {
        if (tmpdir[0])
                return tmpdir;
        const char *base = getenv("TMPDIR");
        snprintf(tmpdir, sizeof(tmpdir), "%s/tether-fuzz.XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(tmpdir)) {
                perror("fuzz: mkdtemp");
                abort();
        }
        atexit(remove_tmpdir);
        return tmpdir;
}
