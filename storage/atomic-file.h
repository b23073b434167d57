/* Files written in full or not at all: the bytes go to a temporary beside the target (0666
 * less the umask, created exclusively), which is synced and renamed over it, then the
 * directory is synced. A failed or abandoned write leaves the old file, if any, untouched and
 * no temporary behind. */
#ifndef SL_STORAGE_ATOMIC_FILE_H
#define SL_STORAGE_ATOMIC_FILE_H

#include <stddef.h>

struct sl_atomic_file {
    int fd;     /* the temporary, open for writing; -1 when none */
    char *tmp;  /* its name */
    char *path; /* the target */
};

/* 0, or an error with a detail ("cannot create PATH: ..."); *f is then closed. */
int sl_atomic_file_open(struct sl_atomic_file *f, const char *path);
/* Writes all n bytes at the temporary's end: 0, or -errno with a detail. */
int sl_atomic_file_write(struct sl_atomic_file *f, const void *buf, size_t n);
/* Syncs, closes and renames the temporary over the target, then syncs the directory: 0, or
 * an error with a detail (the target untouched unless only the directory sync failed). *f is
 * closed either way. */
int sl_atomic_file_commit(struct sl_atomic_file *f);
/* Closes and removes the temporary. Safe after commit and on a closed file. */
void sl_atomic_file_abort(struct sl_atomic_file *f);

#endif
