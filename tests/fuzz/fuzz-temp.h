/* For the libFuzzer targets whose reader takes a path: one temporary file per process (in
 * $TMPDIR, else /tmp; tools/fuzz.sh points TMPDIR at /dev/shm), rewritten with each input and
 * removed at exit. Header-only: each target is one translation unit. */
#ifndef SL_TESTS_FUZZ_TEMP_H
#define SL_TESTS_FUZZ_TEMP_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int fuzz_temp_fd_ = -1;
static char fuzz_temp_path_[4096];

static void fuzz_temp_remove_(void) {
    if (fuzz_temp_fd_ >= 0) {
        close(fuzz_temp_fd_);
        unlink(fuzz_temp_path_);
    }
}

/* Writes data[0..size) as the whole content of the temporary file; returns its path. */
static const char *fuzz_temp_write(const char *tag, const uint8_t *data, size_t size) {
    if (fuzz_temp_fd_ < 0) {
        const char *base = getenv("TMPDIR");
        snprintf(fuzz_temp_path_, sizeof fuzz_temp_path_, "%s/sl-fuzz-%s-XXXXXX", base && *base ? base : "/tmp", tag);
        fuzz_temp_fd_ = mkstemp(fuzz_temp_path_);
        if (fuzz_temp_fd_ < 0) abort(); /* the harness cannot run: not a finding */
        atexit(fuzz_temp_remove_);
    }
    if (ftruncate(fuzz_temp_fd_, 0) != 0 || (size && pwrite(fuzz_temp_fd_, data, size, 0) != (ssize_t)size))
        abort();
    return fuzz_temp_path_;
}

#endif
