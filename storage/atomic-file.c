/* Atomic file writes (see atomic-file.h). */
#include "storage/atomic-file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/internal.h"
#include "spotlight/error.h"
#include "storage/fs-sync.h"

#define TMP_TAG ".tmp-"
#define TMP_HEX 12
#define TMP_TRIES 16

int sl_mkdir_all(const char *dir) {
    char *buf = strdup(dir);
    if (!buf) return sl_fail(SL_ENOMEM, "out of memory");
    if (!buf[0]) {
        free(buf);
        return sl_fail(SL_EINVAL, "the directory name is empty");
    }
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = '\0';
    int err = 0;
    /* each prefix ending before a slash, then the whole */
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char c = *p;
        *p = '\0';
        if (p[-1] != '/') {
            if (mkdir(buf, 0777) == 0) err = sl_fsync_parent_dir(buf); /* the new entry survives a crash */
            else if (errno != EEXIST) err = -errno;
        }
        if (err) {
            err = sl_fail(err, "cannot create the directory %s: %s", buf, strerror(-err));
            break;
        }
        *p = c;
        if (!c) break;
    }
    struct stat st;
    if (!err && stat(buf, &st) != 0) err = sl_fail(-errno, "cannot create the directory %s: %s", buf, strerror(errno));
    else if (!err && !S_ISDIR(st.st_mode)) err = sl_fail(-ENOTDIR, "cannot create the directory %s: it is a file", buf);
    free(buf);
    return err;
}

int sl_mkdir_parents(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return 0; /* the working directory */
    if (slash == path) return 0; /* the root */
    char *dir = strndup(path, (size_t)(slash - path));
    if (!dir) return sl_fail(SL_ENOMEM, "out of memory");
    int rc = sl_mkdir_all(dir);
    free(dir);
    return rc;
}

/* The longest file name in the directory of path (NAME_MAX when it cannot be asked). */
static size_t name_max(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    long m = dir ? pathconf(dir, _PC_NAME_MAX) : -1;
    free(dir);
    return m > 0 ? (size_t)m : NAME_MAX;
}

static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* Fills tmp (sized strlen(path) + sizeof TMP_TAG + TMP_HEX + 1) with a fresh temporary name. */
static void tmp_name(char *tmp, const char *path, size_t limit) {
    static atomic_uint counter;
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        r = ((uint64_t)getpid() << 40) ^ ((uint64_t)ts.tv_nsec << 8) ^ (uint64_t)ts.tv_sec ^
            ((uint64_t)atomic_fetch_add(&counter, 1) << 20);
    }
    const char *base = base_name(path);
    size_t dl = (size_t)(base - path), bl = strlen(base), suffix = strlen(TMP_TAG) + TMP_HEX;
    if (bl + suffix > limit) bl = limit > suffix ? limit - suffix : 0; /* keep within the name limit */
    sprintf(tmp, "%.*s%.*s" TMP_TAG "%012llx", (int)dl, path, (int)bl, base,
            (unsigned long long)(r & 0xffffffffffffull));
}

int sl_atomic_file_open(struct sl_atomic_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    f->fd = -1;
    size_t n = strlen(path) + sizeof TMP_TAG + TMP_HEX + 1;
    f->path = strdup(path);
    f->tmp = malloc(n);
    if (!f->path || !f->tmp) {
        sl_atomic_file_abort(f);
        return sl_fail(SL_ENOMEM, "out of memory");
    }
    int err;
    size_t limit = name_max(path);
    for (int i = 0; i < TMP_TRIES; i++) {
        tmp_name(f->tmp, path, limit);
        /* O_EXCL | O_NOFOLLOW: never write through a file or link someone left under that name */
        f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
        if (f->fd >= 0 || errno != EEXIST) break;
    }
    if (f->fd < 0) {
        err = -errno;
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

int sl_atomic_file_check(const char *path) {
    if (!path[0]) return sl_fail(SL_EINVAL, "the output path is empty");
    const char *base = base_name(path);
    if (!base[0] || !strcmp(base, ".") || !strcmp(base, ".."))
        return sl_fail(-EISDIR, "cannot write %s: it names a directory", path);
    int err = sl_mkdir_parents(path);
    if (err) return err; /* the detail names the directory */
    struct stat st;
    if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        if (S_ISDIR(st.st_mode)) return sl_fail(-EISDIR, "cannot write %s: it is a directory", path);
        if (!S_ISLNK(st.st_mode)) return sl_fail(SL_EINVAL, "cannot write %s: not a regular file", path);
        /* a link is replaced by the new file; only a link to a directory says the user erred */
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
            return sl_fail(-EISDIR, "cannot write %s: it is a directory", path);
    }
    if (strlen(base) > name_max(path))
        return sl_fail(-ENAMETOOLONG, "cannot write %s: %s", path, strerror(ENAMETOOLONG));
    struct sl_atomic_file f;
    if ((err = sl_atomic_file_open(&f, path))) return err;
    sl_atomic_file_abort(&f);
    return 0;
}
