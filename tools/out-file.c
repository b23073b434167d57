/* Atomic output files (see out-file.h): a stdio stream over storage/atomic-file.h. */
#include "tools/out-file.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spotlight/error.h"

int out_file_open(struct out_file *o, const char *cmd, const char *path) {
    memset(o, 0, sizeof *o);
    if (sl_mkdir_parents(path) != 0 || sl_atomic_file_open(&o->file, path) != 0) {
        fprintf(stderr, "spotlight %s: %s\n", cmd, sl_error_detail());
        return -1;
    }
    /* the stream gets its own descriptor: closing it leaves the one commit syncs */
    int fd = dup(o->file.fd);
    o->f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!o->f) {
        if (fd >= 0) close(fd);
        fprintf(stderr, "spotlight %s: cannot create %s: out of descriptors or memory\n", cmd, path);
        out_file_abort(o);
        return -1;
    }
    return 0;
}

int out_file_check(const char *cmd, const char *path) {
    if (sl_atomic_file_check(path) != 0) {
        fprintf(stderr, "spotlight %s: %s\n", cmd, sl_error_detail());
        return -1;
    }
    return 0;
}

int out_file_commit(struct out_file *o, const char *cmd) {
    bool bad = fflush(o->f) != 0 || ferror(o->f);
    bad = fclose(o->f) != 0 || bad;
    o->f = NULL;
    if (bad) {
        fprintf(stderr, "spotlight %s: cannot write %s\n", cmd, o->file.path);
        out_file_abort(o);
        return -1;
    }
    if (sl_atomic_file_commit(&o->file) != 0) {
        fprintf(stderr, "spotlight %s: %s\n", cmd, sl_error_detail());
        return -1;
    }
    return 0;
}

void out_file_abort(struct out_file *o) {
    if (o->f) fclose(o->f);
    o->f = NULL;
    if (o->file.path || o->file.tmp) sl_atomic_file_abort(&o->file);
}
