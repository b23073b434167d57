/* The names around a store file (storage/kv-store-internal.h): the checks a path passes
 * before any work, its parent folder, the writer's lock and the temporary a create writes.
 *
 *   PATH                 the store
 *   PATH.lock            the lock file: held (per open file) exclusively by the one writer,
 *                        shared by readers; holds the writer's PID in decimal; exists only
 *                        while the store is in use
 *   PATH.partial-PID     the store being created by process PID, renamed to PATH when complete
 *
 * Why a lock file rather than a lock on PATH: create writes a temporary and renames it, so two
 * creates would each lock their own inode; a name both always open is needed. Why OFD locks
 * (F_OFD_SETLK): POSIX record locks belong to the process and vanish when any descriptor of
 * the file closes, and flock() turns into those on NFS. An OFD lock reports l_pid -1 to
 * F_OFD_GETLK, so the writer writes its PID into the file after locking; F_OFD_GETLK still
 * tells a writer from readers. A contender that looks in the instant between another's lock
 * and its PID write reads no PID and says "another process".
 * Removing the lock file safely: the last holder unlinks it while still holding an exclusive
 * lock, and whoever locks checks afterwards that the name still leads to the inode it locked
 * (else it locked a file already unlinked and tries again), so two holders can never hold two
 * inodes under one name. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/internal.h"
#include "storage/fs-sync.h"
#include "storage/kv-store-internal.h"

/* The longest suffix added to the store's name: ".partial-" and a PID of up to 10 digits. */
#define LONGEST_SUFFIX (sizeof ".partial-" - 1 + 10)

static const char *base_name(const char *path, size_t *dir_len) {
    const char *slash = strrchr(path, '/');
    *dir_len = slash ? (size_t)(slash - path) : 0;
    return slash ? slash + 1 : path;
}

int sl_kv_path_check_name(const char *path) {
    size_t dir_len;
    const char *base = base_name(path, &dir_len);
    if (!*base) return sl_fail(SL_EINVAL, "KV store path %s names a folder, not a file", path);
    if (!strcmp(base, ".") || !strcmp(base, ".."))
        return sl_fail(SL_EINVAL, "KV store path %s names a folder, not a file", path);
    size_t name_max = NAME_MAX;
    if (strlen(base) + LONGEST_SUFFIX > name_max)
        return sl_fail(-ENAMETOOLONG, "KV store name %s is too long: its temporary (.partial-PID) "
                       "would exceed %zu bytes; use a name of at most %zu bytes", path, name_max,
                       name_max - LONGEST_SUFFIX);
    return 0;
}

static char *with_suffix(const char *path, const char *suffix) {
    size_t n = strlen(path) + strlen(suffix) + 1;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s%s", path, suffix);
    return s;
}

/* ---- the lock ---- */

static int lock_fd(int fd, bool exclusive, bool *ofd) {
    struct flock fl = {.l_type = exclusive ? F_WRLCK : F_RDLCK, .l_whence = SEEK_SET};
    if (fcntl(fd, F_OFD_SETLK, &fl) == 0) return 0;
    if (errno != EINVAL) return -errno;
    *ofd = false; /* a kernel before 3.15: flock, also per open file */
    return flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0 ? 0 : -errno;
}

/* One attempt: 0 locked, 1 the file was unlinked under us (try again), or an error. */
static int lock_once(const char *path, const char *lock, bool exclusive, int *out_fd) {
    int fd = open(lock, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644);
    if (fd < 0 && !exclusive && (errno == EACCES || errno == EROFS))
        fd = open(lock, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    struct stat st, now;
    int err = fd < 0 ? -errno : fstat(fd, &st) != 0 ? -errno : 0;
    if (err) {
        if (fd >= 0) close(fd);
        return sl_fail(err, "cannot open the lock file %s of KV store %s: %s", lock, path, strerror(-err));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return sl_fail(SL_EINVAL, "the lock file %s of KV store %s is not a regular file", lock, path);
    }
    bool ofd = true;
    err = lock_fd(fd, exclusive, &ofd);
    if (err == -EAGAIN || err == -EACCES || err == -EWOULDBLOCK) {
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        bool writer = !ofd || (fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type == F_WRLCK);
        char buf[32] = {0};
        long pid = 0;
        if (writer && pread(fd, buf, sizeof buf - 1, 0) > 0) pid = strtol(buf, NULL, 10);
        close(fd);
        if (writer && pid > 0)
            return sl_fail(-EBUSY, "KV store %s is in use by process %ld (it holds %s)", path, pid, lock);
        return sl_fail(-EBUSY, "KV store %s is in use by %s (it holds %s)", path,
                       writer ? "another process" : "a reader", lock);
    }
    if (err) {
        close(fd);
        return sl_fail(err, "cannot lock %s for KV store %s: %s", lock, path, strerror(-err));
    }
    if (stat(lock, &now) != 0 || now.st_ino != st.st_ino || now.st_dev != st.st_dev) {
        close(fd); /* its last holder removed it after we opened it */
        return 1;
    }
    if (exclusive) { /* who holds it, for the next contender's message */
        char buf[32];
        int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
        if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)n, 0) != n)
            sl_log(SL_LOG_WARN, "cannot record this process in %s: %s", lock, strerror(errno));
    }
    *out_fd = fd;
    return 0;
}

int sl_kv_path_lock(const char *path, bool exclusive, int *out_fd) {
    *out_fd = -1;
    char *lock = with_suffix(path, ".lock");
    if (!lock) return sl_fail(SL_ENOMEM, "out of memory");
    int rc = 1;
    for (int tries = 0; rc == 1 && tries < 100; tries++) rc = lock_once(path, lock, exclusive, out_fd);
    if (rc == 1) rc = sl_fail(-EBUSY, "cannot lock %s for KV store %s: it keeps being replaced", lock, path);
    free(lock);
    return rc;
}

void sl_kv_path_unlock(const char *path, int fd) {
    if (fd < 0) return;
    /* The last holder removes the file: only then does an exclusive lock succeed (a reader's
     * shared lock converts when no other holds it). */
    bool ofd = true;
    char *lock = path ? with_suffix(path, ".lock") : NULL;
    struct stat st, now;
    if (lock && lock_fd(fd, true, &ofd) == 0 && fstat(fd, &st) == 0 && stat(lock, &now) == 0 &&
        now.st_ino == st.st_ino && now.st_dev == st.st_dev)
        unlink(lock);
    free(lock);
    close(fd); /* the lock goes with its last descriptor */
}

/* ---- temporaries ---- */

char *sl_kv_path_partial(const char *path, long pid) {
    char suffix[32];
    snprintf(suffix, sizeof suffix, ".partial-%ld", pid);
    return with_suffix(path, suffix);
}

/* A creator holds the lock, so with it held no partial of this store is in the making except
 * by a process that ignores it; one whose PID is gone is removed, as is one of this PID (a
 * process of an earlier boot, or a name planted in its way: unlink removes a symlink, never
 * what it points at). */
void sl_kv_path_remove_stale(const char *path) {
    size_t dir_len;
    const char *base = base_name(path, &dir_len);
    char *dir = dir_len ? strndup(path, dir_len) : strdup(".");
    if (!dir) return;
    DIR *d = opendir(dir_len || path[0] != '/' ? dir : "/");
    if (!d) {
        free(dir);
        return;
    }
    size_t blen = strlen(base);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, base, blen) != 0 || strncmp(e->d_name + blen, ".partial-", 9) != 0)
            continue;
        const char *digits = e->d_name + blen + 9;
        char *end;
        long pid = strtol(digits, &end, 10);
        if (!*digits || *end || pid <= 0) continue;
        if (pid != (long)getpid() && !(kill((pid_t)pid, 0) != 0 && errno == ESRCH)) continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0)
            sl_log(SL_LOG_INFO, "removed %s/%s, left by process %ld that no longer runs", dir, e->d_name, pid);
        else
            sl_log(SL_LOG_WARN, "cannot remove the stale %s/%s: %s", dir, e->d_name, strerror(errno));
    }
    closedir(d);
    free(dir);
}

/* ---- what is at the path ---- */

int sl_kv_path_existing(const char *path, bool overwrite) {
    /* O_NONBLOCK: a FIFO or device must not stall us; fstat says what it is before any use */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            struct stat st; /* a dangling symlink: rename would replace the link, refuse it too */
            if (lstat(path, &st) == 0)
                return sl_fail(SL_EINVAL, "KV store path %s is a dangling symbolic link", path);
            return 0; /* nothing there */
        }
        if (errno == ELOOP) return sl_fail(SL_EINVAL, "KV store path %s is a symbolic link loop", path);
        return sl_fail(-errno, "cannot check KV store path %s: %s", path, strerror(errno));
    }
    struct stat st;
    int err = fstat(fd, &st) != 0 ? -errno : 0;
    char magic[8] = {0};
    bool store = false;
    if (!err && S_ISREG(st.st_mode) && st.st_size >= 8)
        store = pread(fd, magic, 8, 0) == 8 && memcmp(magic, SL_KV_FORMAT_MAGIC, 8) == 0;
    if (!err && S_ISREG(st.st_mode) && !store && st.st_size >= 2 * SL_KV_HEADER_BYTES)
        store = pread(fd, magic, 8, SL_KV_HEADER_BYTES) == 8 && memcmp(magic, SL_KV_FORMAT_MAGIC, 8) == 0;
    close(fd);
    if (err) return sl_fail(err, "cannot check KV store path %s: %s", path, strerror(-err));
    if (!S_ISREG(st.st_mode))
        return sl_fail(SL_EINVAL, "KV store path %s exists and is not a regular file (%s); refusing "
                       "to replace it", path, S_ISDIR(st.st_mode) ? "a folder" : S_ISFIFO(st.st_mode) ? "a FIFO"
                       : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device" : "a special file");
    if (!store && st.st_size > 0)
        return sl_fail(-EEXIST, "%s exists and is not a KV store; refusing to replace it (remove it, "
                       "or choose another store path)", path);
    if (!overwrite && store) /* an empty file holds nothing to lose: a placeholder (mkstemp) */
        return sl_fail(-EEXIST, "KV store %s already exists (continue it with --resume, or replace it "
                       "with --kv-overwrite)", path);
    return 1;
}
