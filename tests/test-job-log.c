/* The durable records of a resumable job (tools/job-log.c): appended records survive a
 * reopen, a torn last line is cut off before anything is appended, records match documents
 * by id (first record wins, repeated ids in order), the output is written in input order and
 * the log removed, an empty log is not left behind, and a second job cannot open a log in use. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tools/job-log.h"

static char *tmpdir(void) {
    char *d = strdup("/tmp/sl-joblog-XXXXXX");
    cr_assert_not_null(mkdtemp(d));
    return d;
}

static void rm_all(char *d) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    cr_assert_eq(system(cmd), 0);
    free(d);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = calloc(1, 1 << 16);
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void append(struct job_log *j, const char *id, bool failed) {
    char line[128];
    snprintf(line, sizeof line, "{\"id\":\"%s\",\"error\":%s}\n", id, failed ? "\"bad\"" : "null");
    cr_assert_geq(job_log_append(j, id, line, strlen(line), failed), 0);
}

Test(job_log, append_reopen_torn_commit) {
    char *dir = tmpdir(), out[512], logp[520];
    snprintf(out, sizeof out, "%s/out.jsonl", dir);
    snprintf(logp, sizeof logp, "%s.log", out);
    struct job_log j;
    cr_assert_eq(job_log_open(&j, out), 0);
    cr_assert_eq(j.n, 0);
    append(&j, "a", false);
    append(&j, "b", true);
    job_log_close(&j);
    /* a record torn mid-write, as by kill -9 or a power cut */
    FILE *f = fopen(logp, "ab");
    fputs("{\"id\":\"c\",\"err", f);
    fclose(f);
    cr_assert_eq(job_log_open(&j, out), 0);
    cr_assert_eq(j.n, 2);
    cr_assert_str_eq(j.v[0].id, "a");
    cr_assert(!j.v[0].failed && j.v[1].failed);
    char *text = slurp(logp);
    cr_assert_str_eq(text, "{\"id\":\"a\",\"error\":null}\n{\"id\":\"b\",\"error\":\"bad\"}\n"); /* cut back */
    free(text);
    append(&j, "c", false);
    char *ids[] = {"c", "a", "b", "zz"};
    int64_t rec_of[4];
    cr_assert_eq(job_log_match(&j, ids, 4, rec_of), 0);
    cr_assert_eq(rec_of[0], 2);
    cr_assert_eq(rec_of[1], 0);
    cr_assert_eq(rec_of[2], 1);
    cr_assert_eq(rec_of[3], -1);
    cr_assert_eq(job_log_commit(&j, rec_of, 3), 0);
    job_log_close(&j);
    text = slurp(out);
    cr_assert_str_eq(text, "{\"id\":\"c\",\"error\":null}\n{\"id\":\"a\",\"error\":null}\n{\"id\":\"b\",\"error\":\"bad\"}\n");
    free(text);
    cr_assert_neq(access(logp, F_OK), 0, "the log outlived the commit");
    /* a rerun finds every record in the output */
    cr_assert_eq(job_log_open(&j, out), 0);
    cr_assert_eq(j.n, 3);
    job_log_close(&j);
    rm_all(dir);
}

Test(job_log, first_record_wins_and_repeated_ids) {
    char *dir = tmpdir(), out[512], logp[520];
    snprintf(out, sizeof out, "%s/out.jsonl", dir);
    snprintf(logp, sizeof logp, "%s.log", out);
    /* a crash between the output's rename and the log's removal: both hold the records */
    FILE *f = fopen(out, "wb");
    fputs("{\"id\":\"x\",\"n\":1}\n{\"id\":\"x\",\"n\":2}\nnot a record\n", f);
    fclose(f);
    f = fopen(logp, "wb");
    fputs("{\"id\":\"x\",\"n\":3}\n{\"id\":\"y\",\"n\":4}\n", f);
    fclose(f);
    struct job_log j;
    cr_assert_eq(job_log_open(&j, out), 0);
    cr_assert_eq(j.n, 4);
    char *ids[] = {"x", "y", "x", "x"};
    int64_t rec_of[4];
    cr_assert_eq(job_log_match(&j, ids, 4, rec_of), 0);
    cr_assert_eq(rec_of[0], 0);
    cr_assert_eq(rec_of[1], 3);
    cr_assert_eq(rec_of[2], 1);
    cr_assert_eq(rec_of[3], 2);
    job_log_close(&j);
    rm_all(dir);
}

Test(job_log, one_job_at_a_time_and_bad_places) {
    char *dir = tmpdir(), out[512];
    snprintf(out, sizeof out, "%s/out.jsonl", dir);
    struct job_log a, b;
    cr_assert_eq(job_log_open(&a, out), 0);
    cr_assert_eq(job_log_open(&b, out), -1); /* "in use by another job" */
    job_log_close(&b);
    char logp[520];
    snprintf(logp, sizeof logp, "%s.log", out);
    cr_assert_eq(access(logp, F_OK), 0, "the failed open removed the other job's log");
    job_log_close(&a);
    cr_assert_neq(access(logp, F_OK), 0, "an empty log outlived its job");
    cr_assert_eq(job_log_open(&b, out), 0); /* the lock goes with the job */
    job_log_close(&b);
    snprintf(out, sizeof out, "%s/missing/out.jsonl", dir);
    cr_assert_eq(job_log_open(&a, out), -1);
    job_log_close(&a);
    cr_assert_eq(job_log_open(&a, dir), -1); /* a directory as output */
    job_log_close(&a);
    int fd0 = fcntl(0, F_GETFD);
    struct job_log z;
    memset(&z, 0, sizeof z);
    job_log_close(&z); /* a zeroed struct: must not close fd 0 */
    cr_assert_eq(fcntl(0, F_GETFD), fd0);
    rm_all(dir);
}
