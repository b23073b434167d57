/* The records of a resumable job (`spotlight summarize`): one JSON object per line with an
 * "id" key, kept durable so that a job killed at any moment loses no finished record and
 * never writes one twice, whether one process or many (MPI ranks, Slurm array tasks) work on
 * it.
 *
 *   OUT.log          the log of a one-process job;
 *   OUT.shard-K.log  the log of shard K of a scaled-out job. Append-only; each record is one
 *            write() of its line and newline, fsynced before the job goes on. A last line
 *            without its newline is a torn write (kill -9, power loss): the log's owner cuts it
 *            off (truncate + fsync) on reopening, before anything is appended; other readers
 *            skip it. A log is flock()ed while a process appends to it, so two never
 *            interleave.
 *   OUT      written only once every document has a record: all of them, in input order, to a
 *            temporary beside it, fsynced, renamed over OUT, directory fsynced (out-file.h);
 *            then every log is removed.
 * A process reads OUT (if any) and then every log of OUT in name order, whoever wrote it and
 * whatever the shard count then, so a rerun with any number of processes redoes nothing. A
 * document keeps the first record found for it, so a crash between the rename and the removal
 * of the logs duplicates nothing. Records are matched to documents by id; an id given k times
 * matches its first k records.
 *
 * The merge (job_log_merge) needs no coordinator: it first reads everything without locks and
 * stops if some document has no record (another shard still running, or failed); otherwise it
 * locks every log in name order (no two mergers can deadlock; a log whose owner is still
 * closing it is waited for, up to a minute), reads again, writes OUT and removes the logs. Two
 * processes merging at once write the same OUT. */
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
    char *out, *log;     /* the output's and this process's log's paths */
    int fd;              /* the log, open for appending and locked; -1 when closed */
    int64_t size;        /* bytes of complete records in the log; -1 before it is read */
    bool locked;         /* this job holds the log's lock */
    bool committed;      /* OUT written, the logs removed */
    bool warn;           /* report lines that are not records (job_log_open's reading only) */
    struct job_rec *v;   /* OUT's records, then the logs', then appended ones */
    size_t n, cap;
};

/* Opens this process's log (OUT.log for shard < 0, else OUT.shard-SHARD.log): creates it,
 * locks it, cuts a torn last line; then reads OUT and every log of OUT (reporting lines that
 * are not records). 0, or -1 after one error line (cannot write, locked by another job, out of
 * memory). */
int job_log_open(struct job_log *j, const char *out_path, int32_t shard);

/* The names of the files a job writing out_path may write or remove: OUT, this process's log
 * (existing or not) and every log of OUT now in its directory; malloc'd (job_log_free_files).
 * 0, or -1 after one error line. Callers check that none of them is one of the inputs. */
int job_log_files(const char *out_path, int32_t shard, char ***paths, size_t *n);
void job_log_free_files(char **paths, size_t n);

/* rec_of[i]: the record of document i (ids in input order), or -1. */
int job_log_match(const struct job_log *j, char *const *ids, size_t n, int64_t *rec_of);

/* Appends a record (text ending in one newline, no other): one write, then fsync. Returns its
 * index in j->v, or -1 after one error line (the log is cut back to the last whole record). */
int64_t job_log_append(struct job_log *j, const char *id, const char *text, size_t len, bool failed);

/* Closes this process's log (as job_log_close), then reads OUT and every log afresh into j
 * and matches the n documents (rec_of as job_log_match). If each has a record: writes OUT
 * from them, removes every log and returns 0. If some have none: writes and removes nothing
 * and returns how many (rec_of[i] = -1 for them). -1 after one error line. */
int64_t job_log_merge(struct job_log *j, char *const *ids, size_t n, int64_t *rec_of);

/* The records of buf[0..n), the text of OUT or of a log read whole, appended to j: every
 * complete line that is a record; a line that is not one is reported on stderr (where:LINE)
 * and skipped, and so is a torn last line (no newline). 0, or -1 when out of memory
 * (printed). What every reader of a log goes through; exposed for the fuzzer. */
int job_log_add_text(struct job_log *j, const char *buf, size_t n, const char *where);

/* Unlocks and closes the log, frees everything. A log this job locked and that holds no record
 * is removed (a job that failed before its first record leaves nothing behind); any other is
 * left for the rerun. Safe on a zeroed struct. */
void job_log_close(struct job_log *j);

#endif
