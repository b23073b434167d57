/* The records of a resumable job (`spotlight summarize`): one JSON object per line with an
 * "id" key, kept durable so that a job killed at any moment loses no finished record and
 * never writes one twice.
 *
 *   OUT.log  append-only; each record is one write() of its line and newline, fsynced before
 *            the job goes on. A last line without its newline is a torn write (kill -9, power
 *            loss): reopening the log cuts it off (truncate + fsync) before anything is
 *            appended. The log is flock()ed while a job uses it, so two jobs never interleave.
 *   OUT      written only once every document has a record: all of them, in input order, to a
 *            temporary beside it, fsynced, renamed over OUT, directory fsynced (out-file.h);
 *            then the log is removed.
 * A rerun reads OUT (if any) and then the log; a document keeps the first record found for
 * it, so a crash between the rename and the removal of the log duplicates nothing. Records
 * are matched to documents by id; an id given k times matches its first k records. */
#ifndef SL_TOOLS_JOB_LOG_H
#define SL_TOOLS_JOB_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct job_rec {
    char *id;
    char *line;  /* the JSON text, without its newline */
    size_t len;
    bool failed; /* its "error" is a string */
};

struct job_log {
    char *out, *log;     /* the output's and the log's paths */
    int fd;              /* the log, open for appending and locked; -1 when closed */
    int64_t size;        /* bytes of complete records in the log; -1 before it is read */
    bool locked;         /* this job holds the log's lock */
    bool committed;      /* OUT written, the log removed */
    struct job_rec *v;   /* OUT's records, then the log's, then appended ones */
    size_t n, cap;
};

/* Reads OUT and OUT.log (creating the log, cutting a torn last line, reporting lines that are
 * not records), locks the log. 0, or -1 after one error line (cannot write, locked by another
 * job, out of memory). */
int job_log_open(struct job_log *j, const char *out_path);

/* rec_of[i]: the record of document i (ids in input order), or -1. */
int job_log_match(const struct job_log *j, char *const *ids, size_t n, int64_t *rec_of);

/* Appends a record (text ending in one newline, no other): one write, then fsync. Returns its
 * index in j->v, or -1 after one error line (the log is cut back to the last whole record). */
int64_t job_log_append(struct job_log *j, const char *id, const char *text, size_t len, bool failed);

/* Writes OUT from the records rec_of[0..n) (all >= 0), removes the log. 0 or -1 (printed). */
int job_log_commit(struct job_log *j, const int64_t *rec_of, size_t n);

/* Unlocks and closes the log, frees everything. A log this job locked and that holds no record
 * is removed (a job that failed before its first record leaves nothing behind); any other is
 * left for the rerun. Safe on a zeroed struct. */
void job_log_close(struct job_log *j);

#endif
