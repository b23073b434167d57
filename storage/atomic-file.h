/* Files written in full or not at all: the bytes go to a temporary beside the target, which is
 * synced and renamed over it, then the directory is synced. A failed or abandoned write leaves
 * the old file, if any, untouched and no temporary behind.
 *
 * The temporary is TARGET.tmp-XXXXXXXXXXXX (12 random hex digits; the target's name cut short
 * when the whole would pass the directory's name limit), created with O_CREAT | O_EXCL |
 * O_NOFOLLOW and 0666 less the umask: a file or link planted under a guessed name is never
 * written through. The target's folder must exist: sl_atomic_file_check (or
 * sl_mkdir_parents) creates it, as by mkdir -p (0777 less the umask). */
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

/* What a command checks before hours of work that end in writing path: creates its parent
 * directories, refuses a target that is a directory or not a regular file (a symbolic link
 * is replaced, not followed) or whose name is too long, and creates and removes a temporary
 * beside it. 0, or an error with a one-line detail naming the path. */
int sl_atomic_file_check(const char *path);

/* mkdir -p of the directory holding path (0777 less the umask): 0, or an error with a detail
 * naming the directory that could not be made. */
int sl_mkdir_parents(const char *path);
/* mkdir -p of dir itself. */
int sl_mkdir_all(const char *dir);

#endif
