/* Opening a path that must be a regular file, without ever blocking on something else there:
 * open(2) of a FIFO waits for its other end, a read of a device may never end. */
#ifndef SL_STORAGE_REGULAR_FILE_H
#define SL_STORAGE_REGULAR_FILE_H

#include <sys/stat.h>

/* open(path, flags | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, mode), retried on EINTR; then fstat,
 * and anything but a regular file is closed and refused; then O_NONBLOCK is cleared (the other
 * status flags, O_APPEND say, are kept). Returns the fd, or -errno of open/fstat/fcntl
 * ("cannot open 'PATH': ..." detail) or SL_EINVAL ("'PATH' is not a regular file"). *st, when
 * not NULL, receives the fstat result, also for a refused non-regular file (to say what it is). */
int sl_open_regular(const char *path, int flags, mode_t mode, struct stat *st);

#endif
