/* An initramfs image as `tether boot check` reads it (it runs as root on
 * whatever file --initramfs names or /boot holds): cpio "newc" archives one
 * after another, the last possibly compressed (piped through gzip, zstd...
 * when its magic says so, within the deadline given here).
 *
 * Input: the image's bytes, written to a file of the harness's own. */
#include "fuzz.h"

#include "bootcheck.h"
#include "tether.h"
#include "util.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

static void check_kept(const char *text) {
        /* The few files the check reads are small: KEPT_FILE_MAX. */
        FUZZ_ASSERT(!text || strlen(text) <= 64 * 1024 + 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static char path[4096];
        struct tc_initramfs img;
        struct tc_err err = {};

        if (!path[0])
                snprintf(path, sizeof(path), "%s/initrd.img", fuzz_tmpdir());
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        FUZZ_ASSERT(fd >= 0);
        FUZZ_ASSERT(write(fd, data, size) == (ssize_t) size);
        close(fd);
        if (tc_initramfs_read(path, tc_now_ms() + 5000, &img, &err) < 0) {
                FUZZ_ASSERT(err.msg[0] != '\0');
                return 0;
        }
        FUZZ_ASSERT(img.n > 0);
        for (size_t i = 0; i < img.n; i++) {
                const char *n = img.names[i];
                FUZZ_ASSERT(n[0] != '\0' && n[0] != '/' && strncmp(n, "./", 2) != 0 && strcmp(n, ".") != 0);
                FUZZ_ASSERT(tc_initramfs_has(&img, n));
        }
        check_kept(img.tether_conf);
        check_kept(img.crypttab);
        check_kept(img.cmdline_d);
        check_kept(img.modules);
        tc_initramfs_clear(&img);
        return 0;
}
