/* Atomic file writes (see atomic-file.h). */
#include "storage/atomic-file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/internal.h"
#include "storage/fs-sync.h"

int sl_atomic_file_open(struct sl_atomic_file *f, const char *path) {
    static atomic_uint counter; /* distinct names for concurrent writes of one process */
    memset(f, 0, sizeof *f);
    f->fd = -1;
    size_t n = strlen(path) + 48;
    f->path = strdup(path);
    f->tmp = malloc(n);
    if (!f->path || !f->tmp) {
        sl_atomic_file_abort(f);
        return sl_fail(SL_ENOMEM, "out of memory");
    }
    snprintf(f->tmp, n, "%s.tmp-%d-%u", path, (int)getpid(), atomic_fetch_add(&counter, 1));
    /* O_EXCL: never write through a file (or link) someone else left under that name */
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (f->fd < 0) {
        int err = -errno;
        free(f->tmp); /* nothing was created: nothing to remove */
        f->tmp = NULL;
        sl_atomic_file_abort(f);
        return sl_fail(err, "cannot create %s: %s", path, strerror(-err));
    }
    return 0;
}

int sl_atomic_file_write(struct sl_atomic_file *f, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(f->fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int err = w < 0 ? -errno : -EIO;
            return sl_fail(err, "cannot write %s: %s", f->path, strerror(-err));
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int sl_atomic_file_commit(struct sl_atomic_file *f) {
    int err = fsync(f->fd) != 0 ? -errno : 0;
    if (close(f->fd) != 0 && !err) err = -errno;
    f->fd = -1;
    if (!err && rename(f->tmp, f->path) != 0) err = -errno;
    if (err) {
        int rc = sl_fail(err, "cannot write %s: %s", f->path, strerror(-err));
        sl_atomic_file_abort(f);
        return rc;
    }
    free(f->tmp); /* renamed: nothing left to remove */
    f->tmp = NULL;
    /* the rename is durable once the directory entry is */
    int rc = sl_fsync_parent_dir(f->path);
    sl_atomic_file_abort(f);
    return rc;
}

void sl_atomic_file_abort(struct sl_atomic_file *f) {
    if (f->fd >= 0) close(f->fd);
    if (f->tmp) unlink(f->tmp);
    free(f->tmp);
    free(f->path);
    memset(f, 0, sizeof *f);
    f->fd = -1;
}
