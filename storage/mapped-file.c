/* Read-only file mapping with a read() fallback. */
#include "storage/mapped-file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/internal.h"
#include "storage/regular-file.h"

static int read_whole(int fd, size_t size, void **out) {
    uint8_t *buf = malloc(size);
    if (!buf) return sl_fail(SL_ENOMEM, "cannot allocate %zu bytes to read the file", size);
    size_t done = 0;
    while (done < size) {
        ssize_t r = pread(fd, buf + done, size - done, (off_t)done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int err = r < 0 ? -errno : SL_EIO;
            free(buf);
            return sl_fail(err, "read failed at byte %zu of %zu", done, size);
        }
        done += (size_t)r;
    }
    *out = buf;
    return 0;
}

int sl_mapped_file_open(const char *path, struct sl_mapped_file *out) {
    static atomic_bool warned_fallback;
    memset(out, 0, sizeof *out);
    struct stat st;
    int fd = sl_open_regular(path, O_RDONLY, 0, &st);
    if (fd < 0) return fd;
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return sl_fail(SL_EBOUNDS, "'%s' is too large to map", path);
    }
    size_t size = (size_t)st.st_size;
    int rc = 0;
    if (size > 0) {
        void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p != MAP_FAILED) {
            out->data = p;
            out->mapped = true;
        } else {
            if (!atomic_exchange(&warned_fallback, true))
                sl_log(SL_LOG_WARN, "mmap of '%s' failed (%s); reading it into memory instead",
                       path, strerror(errno));
            void *buf = NULL;
            rc = read_whole(fd, size, &buf);
            out->data = buf;
        }
    }
    close(fd);
    if (rc == 0) out->size = size;
    return rc;
}

void sl_mapped_file_close(struct sl_mapped_file *f) {
    if (f->data) {
        if (f->mapped)
            munmap((void *)f->data, f->size);
        else
            free((void *)f->data);
    }
    memset(f, 0, sizeof *f);
}
