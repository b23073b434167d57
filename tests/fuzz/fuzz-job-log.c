/* libFuzzer target: the reader of a summarize job's records (tools/job-log.h,
 * job_log_add_text: what OUT, OUT.log and every shard log are read through) on arbitrary
 * bytes, then the matching of documents to those records. Anything may be skipped; nothing
 * may crash, leak or read out of bounds, and what is kept must be exact: each record is one
 * complete line of the input, in input order, a torn last line never one; the records' ids
 * (given back in reverse, with one no record can have) each match a
 * distinct record holding that id, the k-th copy of an id the k-th record of it. Build with
 * SL_FUZZ=ON and SL_SANITIZE=address,undefined (tools/fuzz.sh); seeds in
 * tests/fuzz/seeds-log/, dictionary tests/fuzz/log.dict. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tools/job-log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *buf = (const char *)data;
    struct job_log j;
    memset(&j, 0, sizeof j);
    j.fd = -1;
    if (job_log_add_text(&j, buf, size, "fuzz") != 0) abort();

    /* the records: complete lines of the input, in order */
    size_t k = 0;
    for (size_t b = 0; b < size && k < j.n;) {
        const char *nl = memchr(buf + b, '\n', size - b);
        if (!nl) break; /* torn: never a record */
        size_t e = (size_t)(nl - buf);
        if (j.v[k].len == e - b && memcmp(j.v[k].line, buf + b, e - b) == 0) k++;
        b = e + 1;
    }
    if (k != j.n) abort();
    for (size_t i = 0; i < j.n; i++)
        if (!j.v[i].id || j.v[i].line[j.v[i].len] != '\0' || memchr(j.v[i].line, '\n', j.v[i].len)) abort();

    /* the ids back, reversed, with one no record has */
    size_t n = j.n + 1;
    char **ids = malloc(n * sizeof *ids);
    int64_t *rec_of = malloc(n * sizeof *rec_of);
    if (!ids || !rec_of) abort();
    for (size_t i = 0; i < j.n; i++) ids[i] = j.v[j.n - 1 - i].id;
    ids[j.n] = "\xff"; /* not UTF-8: no record's id */
    if (job_log_match(&j, ids, n, rec_of) != 0) abort();
    uint8_t *used = calloc(j.n + 1, 1);
    if (!used) abort();
    for (size_t i = 0; i < j.n; i++) {
        int64_t r = rec_of[i];
        if (r < 0 || (size_t)r >= j.n || used[r] || strcmp(j.v[r].id, ids[i]) != 0) abort();
        used[r] = 1;
        /* among equal ids, documents and records pair in order: a later document never takes
         * an earlier record than an earlier one did (checked on inputs of few records: it is
         * quadratic) */
        for (size_t q = 0; j.n <= 32 && q < i; q++)
            if (strcmp(ids[q], ids[i]) == 0 && rec_of[q] > r) abort();
    }
    if (rec_of[j.n] != -1) abort();
    free(used);
    free(rec_of);
    free(ids);
    job_log_close(&j);
    return 0;
}
