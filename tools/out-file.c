/* Atomic output files (see out-file.h). */
#include "tools/out-file.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/fs-sync.h"

int out_file_open(struct out_file *o, const char *cmd, const char *path) {
    memset(o, 0, sizeof *o);
    size_t n = strlen(path);
    o->path = strdup(path);
    o->tmp = malloc(n + 16);
    if (!o->path || !o->tmp) {
        fprintf(stderr, "spotlight %s: out of memory\n", cmd);
        out_file_abort(o);
        return -1;
    }
    snprintf(o->tmp, n + 16, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(o->tmp);
    if (fd < 0) {
        fprintf(stderr, "spotlight %s: cannot create %s: %s\n", cmd, path, strerror(errno));
        free(o->tmp);
        o->tmp = NULL;
        out_file_abort(o);
        return -1;
    }
    /* mkstemp makes the file 0600; an output file gets the usual 0666 less the umask */
    mode_t mask = umask(0);
    umask(mask);
    (void)fchmod(fd, 0666 & ~mask);
    o->f = fdopen(fd, "w");
    if (!o->f) {
        close(fd);
        fprintf(stderr, "spotlight %s: cannot create %s: %s\n", cmd, path, strerror(errno));
        out_file_abort(o);
        return -1;
    }
    return 0;
}

int out_file_commit(struct out_file *o, const char *cmd) {
    int err = 0;
    if (fflush(o->f) != 0 || ferror(o->f) || fsync(fileno(o->f)) != 0) err = errno ? errno : EIO;
    if (fclose(o->f) != 0 && !err) err = errno;
    o->f = NULL;
    if (!err && rename(o->tmp, o->path) != 0) err = errno;
    if (err) {
        fprintf(stderr, "spotlight %s: cannot write %s: %s\n", cmd, o->path, strerror(err));
        out_file_abort(o);
        return -1;
    }
    free(o->tmp);
    o->tmp = NULL;
    int rc = sl_fsync_parent_dir(o->path);
    if (rc) fprintf(stderr, "spotlight %s: cannot sync the directory of %s\n", cmd, o->path);
    out_file_abort(o);
    return rc ? -1 : 0;
}

void out_file_abort(struct out_file *o) {
    if (o->f) fclose(o->f);
    if (o->tmp) unlink(o->tmp);
    free(o->tmp);
    free(o->path);
    memset(o, 0, sizeof *o);
}
