/* fsync of a file's directory (see fs-sync.h). */
#include "storage/fs-sync.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/internal.h"

int sl_fsync_parent_dir(const char *path) {
    char *copy = strdup(path);
    if (!copy) return sl_fail(SL_ENOMEM, "out of memory");
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int err = fd < 0 || fsync(fd) != 0 ? -errno : 0;
    if (fd >= 0) close(fd);
    free(copy);
    return err ? sl_fail(err, "cannot sync the directory of %s: %s", path, strerror(-err)) : 0;
}
