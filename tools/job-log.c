/* A resumable job's records: the append-only log and the atomically written output (see
 * job-log.h). */
#include "tools/job-log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/fs-sync.h"
#include "tools/json-read.h"
#include "tools/out-file.h"

#define CMD "spotlight summarize"

static int oom(void) {
    fprintf(stderr, CMD ": out of memory\n");
    return -1;
}

/* Takes ownership of id. */
static int push_rec(struct job_log *j, char *id, const char *line, size_t len, bool failed) {
    if (j->n == j->cap) {
        size_t cap = j->cap ? j->cap * 2 : 64;
        struct job_rec *nv = cap < SIZE_MAX / sizeof *nv ? realloc(j->v, cap * sizeof *nv) : NULL;
        if (!nv) {
            free(id);
            return oom();
        }
        j->v = nv;
        j->cap = cap;
    }
    struct job_rec *r = &j->v[j->n];
    if (!(r->line = malloc(len + 1))) {
        free(id);
        return oom();
    }
    memcpy(r->line, line, len);
    r->line[len] = '\0';
    r->len = len;
    r->id = id;
    r->failed = failed;
    j->n++;
    return 0;
}

static int add_rec(struct job_log *j, const char *line, size_t len, const char *where, size_t line_no) {
    static const char *const keys[] = {"id", "error"};
    char *v[2], why[160];
    int rc = json_read_object(line, len, keys, 2, v, why, sizeof why);
    if (rc != 0 || !v[0]) {
        fprintf(stderr, CMD ": %s:%zu: not a record (%s), ignored\n", where, line_no, rc ? why : "no \"id\"");
        free(v[0]);
        free(v[1]);
        return 0;
    }
    bool failed = v[1] != NULL;
    free(v[1]);
    return push_rec(j, v[0], line, len, failed);
}

/* Every complete line of buf[0..n) as a record. */
static int add_lines(struct job_log *j, const char *buf, size_t n, const char *where) {
    size_t line_no = 0;
    for (size_t b = 0; b < n;) {
        const char *nl = memchr(buf + b, '\n', n - b);
        size_t e = nl ? (size_t)(nl - buf) : n;
        line_no++;
        if (e > b && add_rec(j, buf + b, e - b, where, line_no)) return -1;
        b = e + 1;
    }
    return 0;
}

/* The whole of fd from offset 0: malloc'd (NULL with errno set on failure). */
static char *read_all(int fd, size_t *len) {
    struct stat st;
    if (fstat(fd, &st) != 0) return NULL;
    size_t n = 0, cap = (size_t)st.st_size + 1;
    char *buf = malloc(cap);
    while (buf) {
        ssize_t r = pread(fd, buf + n, cap - n, (off_t)n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r < 0) {
                int e = errno;
                free(buf);
                errno = e;
                return NULL;
            }
            break;
        }
        n += (size_t)r;
        if (n == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    if (buf) *len = n;
    return buf;
}

static int read_out(struct job_log *j) {
    int fd = open(j->out, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 0;
        fprintf(stderr, CMD ": cannot read %s: %s\n", j->out, strerror(errno));
        return -1;
    }
    size_t n = 0;
    char *buf = read_all(fd, &n);
    int e = errno;
    close(fd);
    if (!buf) {
        fprintf(stderr, CMD ": cannot read %s: %s\n", j->out, strerror(e));
        return -1;
    }
    int rc = add_lines(j, buf, n, j->out);
    free(buf);
    return rc;
}

int job_log_open(struct job_log *j, const char *out_path) {
    memset(j, 0, sizeof *j);
    j->fd = -1;
    j->size = -1;
    size_t n = strlen(out_path);
    if (!(j->out = strdup(out_path)) || !(j->log = malloc(n + 5))) return oom();
    snprintf(j->log, n + 5, "%s.log", out_path);
    struct stat st;
    if (stat(out_path, &st) == 0 && !S_ISREG(st.st_mode)) {
        fprintf(stderr, CMD ": cannot write %s: not a regular file\n", out_path);
        return -1;
    }
    j->fd = open(j->log, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
    if (j->fd < 0) {
        fprintf(stderr, CMD ": cannot write %s: %s\n", j->log, strerror(errno));
        return -1;
    }
    if (flock(j->fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) fprintf(stderr, CMD ": %s is in use by another job\n", j->log);
        else fprintf(stderr, CMD ": cannot lock %s: %s\n", j->log, strerror(errno));
        return -1;
    }
    j->locked = true;
    /* the log's name must survive a crash as well as its records */
    if (sl_fsync_parent_dir(j->log) != 0) {
        fprintf(stderr, CMD ": cannot sync the directory of %s\n", j->log);
        return -1;
    }
    if (read_out(j)) return -1;
    size_t len = 0;
    char *buf = read_all(j->fd, &len);
    if (!buf) {
        fprintf(stderr, CMD ": cannot read %s: %s\n", j->log, strerror(errno));
        return -1;
    }
    size_t whole = len;
    while (whole && buf[whole - 1] != '\n') whole--;
    if (whole < len) {
        fprintf(stderr, CMD ": %s: dropped a torn last record (%zu bytes)\n", j->log, len - whole);
        if (ftruncate(j->fd, (off_t)whole) != 0 || fsync(j->fd) != 0) {
            fprintf(stderr, CMD ": cannot write %s: %s\n", j->log, strerror(errno));
            free(buf);
            return -1;
        }
    }
    j->size = (int64_t)whole;
    int rc = add_lines(j, buf, whole, j->log);
    free(buf);
    return rc;
}

struct key {
    const char *id;
    size_t i;
};

static int cmp_key(const void *a, const void *b) {
    const struct key *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c ? c : x->i < y->i ? -1 : x->i > y->i;
}

int job_log_match(const struct job_log *j, char *const *ids, size_t n, int64_t *rec_of) {
    struct key *d = n ? malloc(n * sizeof *d) : NULL, *r = j->n ? malloc(j->n * sizeof *r) : NULL;
    if ((n && !d) || (j->n && !r)) {
        free(d);
        free(r);
        return oom();
    }
    for (size_t i = 0; i < n; i++) d[i] = (struct key){ids[i], i}, rec_of[i] = -1;
    for (size_t i = 0; i < j->n; i++) r[i] = (struct key){j->v[i].id, i};
    if (n > 1) qsort(d, n, sizeof *d, cmp_key); /* qsort(NULL, 0) is undefined */
    if (j->n > 1) qsort(r, j->n, sizeof *r, cmp_key);
    /* within one id both lists are in order: the k-th document gets the k-th record */
    for (size_t a = 0, b = 0; a < n && b < j->n;) {
        int c = strcmp(d[a].id, r[b].id);
        if (c == 0) rec_of[d[a++].i] = (int64_t)r[b++].i;
        else if (c < 0) a++;
        else b++;
    }
    free(d);
    free(r);
    return 0;
}

int64_t job_log_append(struct job_log *j, const char *id, const char *text, size_t len, bool failed) {
    if (!len || text[len - 1] != '\n' || memchr(text, '\n', len - 1)) {
        fprintf(stderr, CMD ": internal error: a record must be one line\n");
        return -1;
    }
    /* the record in memory first: a failure after the write would otherwise lose it */
    size_t before = j->n;
    char *copy = strdup(id);
    if (!copy) return oom();
    if (push_rec(j, copy, text, len - 1, failed)) return -1;
    for (size_t done = 0; done < len;) {
        ssize_t w = write(j->fd, text + done, len - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            int tr = ftruncate(j->fd, (off_t)j->size); /* a partial line would tear the next one */
            (void)tr;
            fprintf(stderr, CMD ": cannot write %s: %s\n", j->log, strerror(e));
            j->n--;
            free(j->v[before].id);
            free(j->v[before].line);
            return -1;
        }
        done += (size_t)w;
    }
    if (fsync(j->fd) != 0) {
        fprintf(stderr, CMD ": cannot write %s: %s\n", j->log, strerror(errno));
        return -1;
    }
    j->size += (int64_t)len;
    return (int64_t)before;
}

int job_log_commit(struct job_log *j, const int64_t *rec_of, size_t n) {
    struct out_file of;
    if (out_file_open(&of, "summarize", j->out)) return -1;
    for (size_t i = 0; i < n; i++) {
        const struct job_rec *r = &j->v[rec_of[i]];
        fwrite(r->line, 1, r->len, of.f);
        fputc('\n', of.f);
    }
    if (out_file_commit(&of, "summarize")) return -1;
    if (unlink(j->log) != 0 || sl_fsync_parent_dir(j->log) != 0) {
        fprintf(stderr, CMD ": wrote %s but cannot remove %s: %s\n", j->out, j->log, strerror(errno));
        return -1;
    }
    j->committed = true;
    return 0;
}

void job_log_close(struct job_log *j) {
    /* only the lock holder may remove the log: another job's failed open must not */
    if (j->locked && !j->committed && j->size == 0 && unlink(j->log) == 0) (void)sl_fsync_parent_dir(j->log);
    if (j->out && j->fd >= 0) close(j->fd); /* a zeroed struct has fd 0 and no path */
    for (size_t i = 0; i < j->n; i++) {
        free(j->v[i].id);
        free(j->v[i].line);
    }
    free(j->v);
    free(j->out);
    free(j->log);
    memset(j, 0, sizeof *j);
    j->fd = -1;
}
