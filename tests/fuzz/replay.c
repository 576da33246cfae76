/* Runs a fuzz harness without libFuzzer: feeds every file named on the
 * command line, or every file of a named directory (dot files skipped), to
 * LLVMFuzzerTestOneInput once. This is how the seed corpora and the crash
 * regressions run in the ordinary unit suite, under any compiler.
 *
 *   replay-TARGET FILE|DIR...
 *
 * Exit 0 when every input ran (a harness aborts on a finding); 1 when an
 * argument cannot be read or the arguments held no input at all. */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

static int read_file(const char *path, uint8_t **data, size_t *size) {
        FILE *f = fopen(path, "rb");
        uint8_t *buf = NULL;
        size_t len = 0, cap = 0, n;

        if (!f)
                return -errno;
        do {
                if (len == cap) {
                        cap = cap ? 2 * cap : 4096;
                        uint8_t *nb = realloc(buf, cap);
                        if (!nb) {
                                free(buf);
                                fclose(f);
                                return -ENOMEM;
                        }
                        buf = nb;
                }
                n = fread(buf + len, 1, cap - len, f);
                len += n;
        } while (n > 0);
        int r = ferror(f) ? -EIO : 0;
        fclose(f);
        if (r < 0) {
                free(buf);
                return r;
        }
        *data = buf;
        *size = len;
        return 0;
}

static int replay_file(const char *path) {
        uint8_t *data = NULL;
        size_t size = 0;
        int r = read_file(path, &data, &size);
        if (r < 0) {
                fprintf(stderr, "replay: %s: %s\n", path, strerror(-r));
                return r;
        }
        /* An exact-size copy: a harness reading past the input is caught by ASan. */
        uint8_t *exact = malloc(size ? size : 1);
        if (!exact) {
                free(data);
                return -ENOMEM;
        }
        memcpy(exact, data, size);
        free(data);
        fprintf(stderr, "replay: %s (%zu bytes)\n", path, size);
        LLVMFuzzerTestOneInput(exact, size);
        free(exact);
        return 0;
}

static int cmp_names(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Every regular file of dir, in name order so that runs are repeatable. */
static int replay_dir(const char *dir, size_t *count) {
        DIR *d = opendir(dir);
        struct dirent *de;
        char **names = NULL;
        size_t n = 0;
        int r = 0;

        if (!d) {
                fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
                return -errno;
        }
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                char **nn = realloc(names, (n + 1) * sizeof(*names));
                if (!nn || asprintf(&nn[n], "%s/%s", dir, de->d_name) < 0) {
                        names = nn ? nn : names;
                        r = -ENOMEM;
                        break;
                }
                names = nn;
                n++;
        }
        closedir(d);
        if (n > 0)
                qsort(names, n, sizeof(*names), cmp_names);
        for (size_t i = 0; i < n; i++) {
                struct stat st;
                if (r == 0 && stat(names[i], &st) == 0 && S_ISREG(st.st_mode)) {
                        r = replay_file(names[i]);
                        if (r == 0)
                                (*count)++;
                }
                free(names[i]);
        }
        free(names);
        return r;
}

int main(int argc, char **argv) {
        size_t count = 0;

        if (argc < 2) {
                fprintf(stderr, "Usage: %s FILE|DIR...\n", argv[0]);
                return 2;
        }
        if (LLVMFuzzerInitialize)
                LLVMFuzzerInitialize(&argc, &argv);
        for (int i = 1; i < argc; i++) {
                struct stat st;
                int r;
                if (stat(argv[i], &st) < 0) {
                        fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
                        return 1;
                }
                if (S_ISDIR(st.st_mode))
                        r = replay_dir(argv[i], &count);
                else if ((r = replay_file(argv[i])) == 0)
                        count++;
                if (r < 0)
                        return 1;
        }
        if (count == 0) {
                fprintf(stderr, "replay: no input in %s...\n", argv[1]);
                return 1;
        }
        printf("replayed %zu inputs\n", count);
        return 0;
}
