/* The documents of a summarization job: listed from files, directories (recursed, sorted) and
 * JSONL manifests, then read one at a time and cleaned into plain UTF-8 text (HTML tags,
 * scripts and styles stripped, entities decoded, whitespace collapsed; text and markdown kept
 * as they are). A document that cannot be used carries a one-line reason instead. */
#ifndef SL_TOOLS_DOC_INPUT_H
#define SL_TOOLS_DOC_INPUT_H

#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

struct doc {
    char *id;     /* the manifest's id, else the path as given */
    char *path;   /* as given (a manifest's, as written there); NULL for inline text */
    char *open;   /* where to read it (a manifest's relative path resolved); NULL for inline */
    char *text;   /* a manifest's "text"; NULL for files */
    char *error;  /* known before reading (a malformed manifest line); NULL otherwise */
    int64_t size; /* bytes to read (for the ETA): file size, or text length */
    dev_t dev;    /* the file's identity when it could be stat'ed as listed, else 0 */
    ino_t ino;
};

/* The largest manifest read. */
#define DOC_MANIFEST_MAX_BYTES (INT64_C(4) << 30)

struct doc_list {
    struct doc *v; /* owned; doc_list_free frees them and their strings */
    size_t n, cap;
    const char *skip_prefix; /* absolute path: directory entries starting with it are not
                              * documents (the job's own output, log and temporaries) */
};

/* Adds a file (or, for a path that cannot be opened, a document that will carry the error) or
 * every regular file below a directory, in byte order of names, hidden entries and symbolic
 * links inside directories left out. 0, or -1 when out of memory (error printed). */
int doc_list_add_path(struct doc_list *l, const char *path);

/* Adds the documents of a JSONL manifest: one object per line, {"id", "path"} or {"id",
 * "text"}; a relative path is taken from the manifest's directory. A malformed line is reported
 * on err as "manifest:LINE: reason" and becomes a document carrying that error (id "line-N"
 * unless one was readable). Blank lines are skipped. 0, or -1 after printing one error line
 * when the manifest cannot be read (missing, not a regular file, larger than
 * DOC_MANIFEST_MAX_BYTES). */
int doc_list_add_manifest(struct doc_list *l, const char *manifest, FILE *err);

void doc_list_free(struct doc_list *l);

/* Reads and cleans one document: a malloc'd NUL-terminated text (length in *len), or NULL with
 * a one-line reason in err (missing or unreadable, larger than max_bytes, binary, invalid
 * UTF-8 with the byte offset, empty after cleaning, out of memory). */
char *doc_load(const struct doc *d, int64_t max_bytes, size_t *len, char *err, size_t errcap);

/* HTML to text in place: returns the new length (exposed for tests and manifests' text). */
size_t html_to_text(char *s, size_t n);

#endif
