/* Regular files only, opened without blocking (regular-file.h). */
#include "storage/regular-file.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "core/internal.h"

int sl_open_regular(const char *path, int flags, mode_t mode, struct stat *st) {
    struct stat own;
    if (!st) st = &own;
    memset(st, 0, sizeof *st);
    int fd;
    do {
        fd = open(path, flags | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, mode);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return sl_fail(-errno, "cannot open '%s': %s", path, strerror(errno));
    int err = fstat(fd, st) != 0 ? -errno : !S_ISREG(st->st_mode) ? SL_EINVAL : 0;
    if (!err) {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) err = -errno;
    }
    if (!err) return fd;
    close(fd);
    if (err == SL_EINVAL) return sl_fail(err, "'%s' is not a regular file", path);
    return sl_fail(err, "cannot open '%s': %s", path, strerror(-err));
}
