/* Output files of the tools (CSV, markdown, plots, JSONL) written in full or not at all: the
 * text goes to a temporary file beside the target, which is flushed, fsynced and renamed over
 * it, then the directory is synced. A failed or abandoned write leaves the old file (if any)
 * untouched and no temporary behind. */
#ifndef SL_TOOLS_OUT_FILE_H
#define SL_TOOLS_OUT_FILE_H

#include <stdbool.h>
#include <stdio.h>

#include "storage/atomic-file.h"

struct out_file {
    FILE *f; /* write here between open and commit */
    struct sl_atomic_file file;
};

/* Creates the folder of path if missing (mkdir -p); 0, or -1 after printing
 * "spotlight <cmd>: cannot create ...". */
int out_file_open(struct out_file *o, const char *cmd, const char *path);
/* Makes the file appear at its path: 0, or -1 after printing the error (nothing renamed). */
int out_file_commit(struct out_file *o, const char *cmd);
/* Before the work that ends in writing path: creates its directory and checks a temporary can
 * be made beside it (sl_atomic_file_check). 0, or -1 after printing "spotlight <cmd>: ...". */
int out_file_check(const char *cmd, const char *path);
/* Closes and removes the temporary. Safe after commit and on a zeroed struct. */
void out_file_abort(struct out_file *o);

#endif
