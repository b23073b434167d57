/* The durable records of a resumable job (tools/job-log.c): appended records survive a
 * reopen, a torn last line is cut off before anything is appended, records match documents
 * by id (first record wins, repeated ids in order), the output is written in input order and
 * the log removed, an empty log is not left behind, and a second job cannot open a log in use.
 * Shards: every process reads every log of the output; a merge writes nothing while a
 * document lacks a record, waits for a log's owner to let go, then removes every log. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/test-fs.h"
#include "tools/job-log.h"
#include "tools/json-writer.h"

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
    char *dir = test_tmpdir("joblog"), out[512], logp[520];
    snprintf(out, sizeof out, "%s/out.jsonl", dir);
    snprintf(logp, sizeof logp, "%s.log", out);
    struct job_log j;
    cr_assert_eq(job_log_open(&j, out, -1), 0);
    cr_assert_eq(j.n, 0);
    append(&j, "a", false);
    append(&j, "b", true);
    job_log_close(&j);
    /* a record torn mid-write, as by kill -9 or a power cut */
    FILE *f = fopen(logp, "ab");
    fputs("{\"id\":\"c\",\"err", f);
    fclose(f);
    cr_assert_eq(job_log_open(&j, out, -1), 0);
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
    cr_assert_eq(job_log_merge(&j, ids, 3, rec_of), 0);
    cr_assert(j.committed);
    job_log_close(&j);
    text = slurp(out);
    cr_assert_str_eq(text, "{\"id\":\"c\",\"error\":null}\n{\"id\":\"a\",\"error\":null}\n{\"id\":\"b\",\"error\":\"bad\"}\n");
    free(text);
    cr_assert_neq(access(logp, F_OK), 0, "the log outlived the commit");
    /* a rerun finds every record in the output */
    cr_assert_eq(job_log_open(&j, out, -1), 0);
    cr_assert_eq(j.n, 3);
    job_log_close(&j);
    test_rmtree(dir);
}

Test(job_log, first_record_wins_and_repeated_ids) {
    char *dir = test_tmpdir("joblog"), out[512], logp[520];
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
    cr_assert_eq(job_log_open(&j, out, -1), 0);
    cr_assert_eq(j.n, 4);
    char *ids[] = {"x", "y", "x", "x"};
    int64_t rec_of[4];
    cr_assert_eq(job_log_match(&j, ids, 4, rec_of), 0);
    cr_assert_eq(rec_of[0], 0);
    cr_assert_eq(rec_of[1], 3);
    cr_assert_eq(rec_of[2], 1);
    cr_assert_eq(rec_of[3], 2);
    job_log_close(&j);
    test_rmtree(dir);
}

Test(job_log, one_job_at_a_time_and_bad_places) {
    char *dir = test_tmpdir("joblog"), out[512];
    snprintf(out, sizeof out, "%s/out.jsonl", dir);
    struct job_log a, b;
    cr_assert_eq(job_log_open(&a, out, -1), 0);
    cr_assert_eq(job_log_open(&b, out, -1), -1); /* "in use by another job" */
    job_log_close(&b);
    char logp[520];
    snprintf(logp, sizeof logp, "%s.log", out);
    cr_assert_eq(access(logp, F_OK), 0, "the failed open removed the other job's log");
    job_log_close(&a);
    cr_assert_neq(access(logp, F_OK), 0, "an empty log outlived its job");
    cr_assert_eq(job_log_open(&b, out, -1), 0); /* the lock goes with the job */
    job_log_close(&b);
    snprintf(out, sizeof out, "%s/missing/out.jsonl", dir);
    cr_assert_eq(job_log_open(&a, out, -1), -1);
    job_log_close(&a);
    cr_assert_eq(job_log_open(&a, dir, -1), -1); /* a directory as output */
    job_log_close(&a);
    int fd0 = fcntl(0, F_GETFD);
    struct job_log z;
    memset(&z, 0, sizeof z);
    job_log_close(&z); /* a zeroed struct: must not close fd 0 */
    cr_assert_eq(fcntl(0, F_GETFD), fd0);
    test_rmtree(dir);
}

Test(job_log, shards_read_each_other_and_merge) {
    char *dir = test_tmpdir("joblog"), out[512], p0[530], p1[530], old[530];
    snprintf(out, sizeof out, "%s/out.jsonl", dir);
    snprintf(p0, sizeof p0, "%s.shard-0.log", out);
    snprintf(p1, sizeof p1, "%s.shard-1.log", out);
    snprintf(old, sizeof old, "%s.log", out);
    /* an earlier one-process run left a record; a stray file that is no log of out */
    FILE *f = fopen(old, "wb");
    fputs("{\"id\":\"a\",\"error\":null}\n", f);
    fclose(f);
    char stray[540];
    snprintf(stray, sizeof stray, "%s.shard-x.log", out);
    f = fopen(stray, "wb");
    fputs("{\"id\":\"b\",\"error\":null}\n", f);
    fclose(f);
    struct job_log s0, s1;
    cr_assert_eq(job_log_open(&s0, out, 0), 0);
    cr_assert_str_eq(s0.log, p0);
    cr_assert_eq(s0.n, 1); /* out.jsonl.log's record, not the stray file's */
    cr_assert_eq(job_log_open(&s1, out, 1), 0); /* another shard: another lock */
    append(&s0, "b", false);
    append(&s1, "c", true);
    /* shard 1 is half-way through a record (as another process sees it mid-write) */
    int fd1 = open(p1, O_WRONLY | O_APPEND);
    const char *half = "{\"id\":\"d\"", *rest = ",\"error\":null}\n";
    cr_assert_eq(write(fd1, half, strlen(half)), (ssize_t)strlen(half));
    char *ids[] = {"a", "b", "c", "d"};
    int64_t rec_of[4];
    struct job_log r;
    cr_assert_eq(job_log_open(&r, out, 2), 0); /* a third process reads all three logs */
    cr_assert_eq(r.n, 3);
    cr_assert_eq(job_log_match(&r, ids, 4, rec_of), 0);
    cr_assert(rec_of[0] >= 0 && rec_of[1] >= 0 && rec_of[2] >= 0 && rec_of[3] == -1);
    cr_assert(r.v[rec_of[2]].failed);
    job_log_close(&r);
    /* shard 0 is done, "d" is not: nothing written, shard 1's log neither waited for nor cut */
    cr_assert_eq(job_log_merge(&s0, ids, 4, rec_of), 1);
    cr_assert_eq(rec_of[3], -1);
    cr_assert_neq(access(out, F_OK), 0);
    cr_assert_eq(access(p0, F_OK), 0, "a merge that did not happen removed a log");
    job_log_close(&s0);
    cr_assert_eq(write(fd1, rest, strlen(rest)), (ssize_t)strlen(rest));
    close(fd1);
    /* shard 1 merges while another process still holds shard 0's log for a moment */
    pid_t child = fork();
    if (child == 0) {
        int fd = open(p0, O_RDONLY);
        if (fd < 0 || flock(fd, LOCK_EX) != 0) _exit(1);
        usleep(300 * 1000);
        _exit(0);
    }
    usleep(100 * 1000);
    cr_assert_eq(job_log_merge(&s1, ids, 4, rec_of), 0);
    int st = 0;
    cr_assert_eq(waitpid(child, &st, 0), child);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    job_log_close(&s1);
    char *text = slurp(out);
    cr_assert_str_eq(text, "{\"id\":\"a\",\"error\":null}\n{\"id\":\"b\",\"error\":null}\n"
                           "{\"id\":\"c\",\"error\":\"bad\"}\n{\"id\":\"d\",\"error\":null}\n");
    free(text);
    cr_assert_neq(access(p0, F_OK), 0);
    cr_assert_neq(access(p1, F_OK), 0);
    cr_assert_neq(access(old, F_OK), 0);
    cr_assert_eq(access(stray, F_OK), 0, "a file that is no log of the job was removed");
    /* merging again (another task finishing last at the same time): the same output */
    cr_assert_eq(job_log_open(&r, out, 5), 0);
    cr_assert_eq(job_log_merge(&r, ids, 4, rec_of), 0);
    job_log_close(&r);
    text = slurp(out);
    cr_assert(strstr(text, "{\"id\":\"d\",\"error\":null}\n") != NULL);
    free(text);
    test_rmtree(dir);
}

/* A link or FIFO planted at the log's name: the job refuses it, never appending to or cutting
 * the file the link points to, and never waiting on the FIFO. */
Test(job_log, planted_log_refused, .timeout = 10) {
    char *dir = test_tmpdir("joblog"), out[512], logp[520], victim[520];
    snprintf(out, sizeof out, "%s/out.jsonl", dir);
    snprintf(logp, sizeof logp, "%s.log", out);
    snprintf(victim, sizeof victim, "%s/victim", dir);
    FILE *f = fopen(victim, "wb");
    fputs("precious, no newline", f); /* as a log, a torn last line: would be cut */
    fclose(f);
    cr_assert_eq(symlink(victim, logp), 0);
    struct job_log j;
    cr_assert_eq(job_log_open(&j, out, -1), -1);
    job_log_close(&j);
    char *text = slurp(victim);
    cr_assert_str_eq(text, "precious, no newline");
    free(text);
    struct stat st;
    cr_assert_eq(lstat(logp, &st), 0);
    cr_assert(S_ISLNK(st.st_mode), "the link was replaced or removed");
    cr_assert_eq(unlink(logp), 0);
    cr_assert_eq(mkfifo(logp, 0666), 0);
    cr_assert_eq(job_log_open(&j, out, -1), -1);
    job_log_close(&j);
    /* another shard's log or the output as a FIFO: refused, not waited on */
    cr_assert_eq(unlink(logp), 0);
    char other[540];
    snprintf(other, sizeof other, "%s.shard-3.log", out);
    cr_assert_eq(mkfifo(other, 0666), 0);
    cr_assert_eq(job_log_open(&j, out, 0), -1);
    job_log_close(&j);
    test_rmtree(dir);
}

/* A record whose id is not UTF-8 (a file name can be any bytes) is read back with the same id:
 * a rerun finds it and the job can finish. */
Test(job_log, ids_that_are_not_utf8) {
    char *dir = test_tmpdir("joblog"), out[512];
    snprintf(out, sizeof out, "%s/out.jsonl", dir);
    char *ids[] = {"docs/caf\xe9.txt", "docs/\xff\xfe"};
    struct job_log j;
    cr_assert_eq(job_log_open(&j, out, -1), 0);
    for (int i = 0; i < 2; i++) {
        char *line = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&line, &len);
        struct json_writer w;
        json_init(&w, f);
        json_obj_begin(&w, NULL);
        json_str(&w, "id", ids[i]);
        json_null(&w, "error");
        json_obj_end(&w);
        fclose(f);
        cr_assert_geq(job_log_append(&j, ids[i], line, len, false), 0);
        free(line);
    }
    job_log_close(&j);
    cr_assert_eq(job_log_open(&j, out, -1), 0);
    cr_assert_eq(j.n, 2, "the records were not read back");
    int64_t rec_of[2];
    cr_assert_eq(job_log_merge(&j, ids, 2, rec_of), 0);
    cr_assert(rec_of[0] >= 0 && rec_of[1] >= 0);
    job_log_close(&j);
    struct stat st;
    cr_assert_eq(stat(out, &st), 0, "the output was not written");
    test_rmtree(dir);
}
