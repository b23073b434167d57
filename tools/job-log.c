/* A resumable job's records: the append-only log and the atomically written output (see
 * job-log.h). */
#include "tools/job-log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "storage/fs-sync.h"
#include "spotlight/error.h"
#include "storage/regular-file.h"
#include "tools/json-read.h"
#include "tools/out-file.h"

#define CMD "spotlight summarize"
#define LOCK_WAIT_S 60 /* how long a merge waits for a log's owner to close it */

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
        if (j->warn) fprintf(stderr, CMD ": %s:%zu: not a record (%s), ignored\n", where, line_no, rc ? why : "no \"id\"");
        free(v[0]);
        free(v[1]);
        return 0;
    }
    bool failed = v[1] != NULL;
    free(v[1]);
    return push_rec(j, v[0], line, len, failed);
}

int job_log_add_text(struct job_log *j, const char *buf, size_t n, const char *where) {
    while (n && buf[n - 1] != '\n') n--; /* a torn last line is not a record */
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

/* fd from offset 0 up to its size when asked (what a writer appends meanwhile is left for the
 * next read): malloc'd (NULL with errno set on failure). */
static char *read_all(int fd, size_t *len) {
    struct stat st;
    if (fstat(fd, &st) != 0) return NULL;
    if (!S_ISREG(st.st_mode)) {
        errno = EINVAL; /* refused at open: not reached */
        return NULL;
    }
    if ((uint64_t)st.st_size >= SIZE_MAX) {
        errno = EFBIG;
        return NULL;
    }
    size_t n = 0, size = (size_t)st.st_size;
    char *buf = malloc(size + 1);
    while (buf && n < size) {
        ssize_t r = pread(fd, buf + n, size - n, (off_t)n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            errno = e;
            return NULL;
        }
        if (r == 0) break; /* cut short meanwhile */
        n += (size_t)r;
    }
    if (buf) *len = n;
    return buf;
}

/* Opens a job file for reading without blocking on a FIFO or following a planted device:
 * an fd, -2 when it does not exist, or -1 after one error line. */
static int open_regular(const char *path) {
    int fd = sl_open_regular(path, O_RDONLY, 0, NULL);
    if (fd == -ENOENT) return -2;
    if (fd < 0) {
        fprintf(stderr, CMD ": cannot read %s: %s\n", path, fd == SL_EINVAL ? "not a regular file" : strerror(-fd));
        return -1;
    }
    return fd;
}

/* The complete lines of fd as records (a torn last line is not one): 0 or -1 (printed). */
static int add_fd(struct job_log *j, int fd, const char *path) {
    size_t n = 0;
    char *buf = read_all(fd, &n);
    if (!buf) {
        fprintf(stderr, CMD ": cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    int rc = job_log_add_text(j, buf, n, path);
    free(buf);
    return rc;
}

/* The records of a file that may be missing (OUT, another process's log): 0 or -1. */
static int add_file(struct job_log *j, const char *path) {
    int fd = open_regular(path);
    if (fd == -2) return 0; /* no output yet, or a log merged away meanwhile */
    if (fd < 0) return -1;
    int rc = add_fd(j, fd, path);
    close(fd);
    return rc;
}

/* Whether name is BASE.log or BASE.shard-DIGITS.log. */
static bool is_log_name(const char *name, const char *base) {
    size_t bl = strlen(base);
    if (strncmp(name, base, bl) != 0) return false;
    name += bl;
    if (strcmp(name, ".log") == 0) return true;
    if (strncmp(name, ".shard-", 7) != 0) return false;
    name += 7;
    const char *d = name;
    while (*d >= '0' && *d <= '9') d++;
    return d > name && strcmp(d, ".log") == 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void free_list(char **v, size_t n) {
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* The paths of every log of out (its directory listed), in name order: 0 or -1 (printed). */
static int list_logs(const char *out, char ***paths, size_t *n_paths) {
    *paths = NULL;
    *n_paths = 0;
    const char *slash = strrchr(out, '/');
    size_t dl = slash ? (size_t)(slash - out) + 1 : 0; /* the directory with its slash */
    char *dir = strndup(out, dl ? dl : 1);
    if (!dir) return oom();
    if (!dl) strcpy(dir, ".");
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, CMD ": cannot list %s: %s\n", dir, strerror(errno));
        free(dir);
        return -1;
    }
    free(dir);
    char **v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        if (!is_log_name(e->d_name, out + dl)) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            char **nv = cap < SIZE_MAX / sizeof *nv ? realloc(v, cap * sizeof *nv) : NULL;
            if (!nv) {
                rc = oom();
                break;
            }
            v = nv;
        }
        size_t l = dl + strlen(e->d_name) + 1;
        if (!(v[n] = malloc(l))) {
            rc = oom();
            break;
        }
        snprintf(v[n++], l, "%.*s%s", (int)dl, out, e->d_name);
    }
    closedir(d);
    if (rc) {
        free_list(v, n);
        return rc;
    }
    if (n > 1) qsort(v, n, sizeof *v, cmp_str);
    *paths = v;
    *n_paths = n;
    return 0;
}

static char *log_name(const char *out, int32_t shard) {
    size_t n = strlen(out) + 32;
    char *log = malloc(n);
    if (!log) return NULL;
    if (shard < 0) snprintf(log, n, "%s.log", out);
    else snprintf(log, n, "%s.shard-%" PRId32 ".log", out, shard);
    return log;
}

int job_log_files(const char *out_path, int32_t shard, char ***paths, size_t *n) {
    char **logs = NULL, **v = NULL;
    size_t n_logs = 0;
    *paths = NULL;
    *n = 0;
    if (list_logs(out_path, &logs, &n_logs)) return -1;
    if (!(v = malloc((n_logs + 2) * sizeof *v))) {
        free_list(logs, n_logs);
        return oom();
    }
    v[0] = strdup(out_path);
    v[1] = log_name(out_path, shard);
    if (!v[0] || !v[1]) {
        free_list(logs, n_logs);
        free_list(v, 2);
        return oom();
    }
    if (n_logs) memcpy(v + 2, logs, n_logs * sizeof *v);
    free(logs);
    *paths = v;
    *n = n_logs + 2;
    return 0;
}

void job_log_free_files(char **paths, size_t n) { free_list(paths, n); }

/* This process's own log, read through its locked fd: a torn last line is cut off. */
static int read_own_log(struct job_log *j) {
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
    int rc = job_log_add_text(j, buf, whole, j->log);
    free(buf);
    return rc;
}

int job_log_open(struct job_log *j, const char *out_path, int32_t shard) {
    memset(j, 0, sizeof *j);
    j->fd = -1;
    j->size = -1;
    if (!(j->out = strdup(out_path)) || !(j->log = log_name(out_path, shard))) return oom();
    struct stat st;
    if (stat(out_path, &st) == 0 && !S_ISREG(st.st_mode)) {
        fprintf(stderr, CMD ": cannot write %s: not a regular file\n", out_path);
        return -1;
    }
    /* O_NOFOLLOW: a link planted at the log's name must not send the records into another
     * file; a FIFO there is refused without hanging the open */
    j->fd = sl_open_regular(j->log, O_RDWR | O_CREAT | O_APPEND | O_NOFOLLOW, 0666, NULL);
    if (j->fd < 0) {
        fprintf(stderr, CMD ": cannot write %s: %s\n", j->log,
                j->fd == -ELOOP ? "it is a symbolic link" : j->fd == SL_EINVAL ? "not a regular file" : strerror(-j->fd));
        j->fd = -1;
        return -1;
    }
    if (flock(j->fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) fprintf(stderr, CMD ": %s is in use by another job\n", j->log);
        else fprintf(stderr, CMD ": cannot lock %s: %s\n", j->log, strerror(errno));
        return -1;
    }
    j->locked = true;
    j->warn = true; /* lines that are not records are reported once, here */
    /* the log's name must survive a crash as well as its records */
    if (sl_fsync_parent_dir(j->log) != 0) {
        fprintf(stderr, CMD ": cannot sync the directory of %s\n", j->log);
        return -1;
    }
    if (add_file(j, j->out)) return -1;
    char **logs = NULL;
    size_t n_logs = 0;
    if (list_logs(j->out, &logs, &n_logs)) return -1;
    bool own = false;
    int rc = 0;
    for (size_t i = 0; i < n_logs && !rc; i++) {
        if (strcmp(logs[i], j->log) == 0) rc = read_own_log(j), own = true;
        else rc = add_file(j, logs[i]);
    }
    free_list(logs, n_logs);
    if (!rc && !own) rc = read_own_log(j); /* not listed: the directory lied, read it anyway */
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

static void free_recs(struct job_log *j) {
    for (size_t i = 0; i < j->n; i++) {
        free(j->v[i].id);
        free(j->v[i].line);
    }
    j->n = 0;
}

/* Locks the log at path for the merge: an fd, -2 when the log is gone (another process merged
 * it), or -1 after one error line. Waits up to LOCK_WAIT_S for an owner still closing it. */
static int lock_log(const char *path) {
    int fd = open_regular(path);
    if (fd < 0) return fd;
    for (int waited_ms = 0;; waited_ms += 100) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) break;
        if (errno != EWOULDBLOCK || waited_ms >= LOCK_WAIT_S * 1000) {
            if (errno == EWOULDBLOCK)
                fprintf(stderr, CMD ": %s is still in use by another job after %d s; not merging (rerun to merge)\n",
                        path, LOCK_WAIT_S);
            else
                fprintf(stderr, CMD ": cannot lock %s: %s\n", path, strerror(errno));
            close(fd);
            return -1;
        }
        nanosleep(&(struct timespec){0, 100000000}, NULL);
    }
    /* the name may have been removed (merged) while this process waited */
    struct stat a, b;
    if (fstat(fd, &a) != 0 || stat(path, &b) != 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev) {
        close(fd);
        return -2;
    }
    return fd;
}

/* OUT, then every log, without locks, into j (which must hold no records). */
static int read_all_records(struct job_log *j) {
    if (add_file(j, j->out)) return -1;
    char **logs = NULL;
    size_t n_logs = 0;
    if (list_logs(j->out, &logs, &n_logs)) return -1;
    int rc = 0;
    for (size_t i = 0; i < n_logs && !rc; i++) rc = add_file(j, logs[i]);
    free_list(logs, n_logs);
    return rc;
}

static int64_t count_missing(const int64_t *rec_of, size_t n) {
    int64_t m = 0;
    for (size_t i = 0; i < n; i++) m += rec_of[i] < 0;
    return m;
}

int64_t job_log_merge(struct job_log *j, char *const *ids, size_t n, int64_t *rec_of) {
    if (!j->out) {
        fprintf(stderr, CMD ": internal error: merging a job whose log was never opened\n");
        return -1;
    }
    char *out = strdup(j->out);
    job_log_close(j); /* this process's lock must go: the merge locks every log, its own too */
    if (!out) return oom();
    j->out = out;
    /* first without locks: another shard may still be writing its log for hours */
    if (read_all_records(j) || job_log_match(j, ids, n, rec_of)) return -1;
    int64_t missing = count_missing(rec_of, n);
    if (missing) return missing;
    free_recs(j);
    char **logs = NULL;
    size_t n_logs = 0;
    if (list_logs(j->out, &logs, &n_logs)) return -1;
    int *fds = malloc((n_logs + 1) * sizeof *fds);
    size_t n_fds = 0;
    int64_t rc = fds ? 0 : oom();
    /* in name order: two processes merging at once never hold each other's next lock */
    for (size_t i = 0; i < n_logs && !rc; i++) {
        int fd = lock_log(logs[i]);
        if (fd == -1) rc = -1;
        else if (fd == -2) logs[i][0] = '\0'; /* merged away: nothing to read or remove */
        else fds[n_fds++] = fd;
    }
    /* the records again, now that no log can grow */
    if (!rc) rc = add_file(j, j->out);
    for (size_t i = 0, k = 0; i < n_logs && !rc; i++)
        if (logs[i][0]) rc = add_fd(j, fds[k++], logs[i]);
    if (!rc) rc = job_log_match(j, ids, n, rec_of);
    if (!rc) rc = count_missing(rec_of, n);
    if (!rc) {
        struct out_file of;
        if (out_file_open(&of, "summarize", j->out)) {
            rc = -1;
        } else {
            for (size_t i = 0; i < n; i++) {
                const struct job_rec *r = &j->v[rec_of[i]];
                fwrite(r->line, 1, r->len, of.f);
                fputc('\n', of.f);
            }
            if (out_file_commit(&of, "summarize")) rc = -1;
        }
    }
    for (size_t i = 0; i < n_logs && !rc; i++) {
        if (!logs[i][0]) continue;
        if (unlink(logs[i]) != 0 && errno != ENOENT) {
            fprintf(stderr, CMD ": wrote %s but cannot remove %s: %s\n", j->out, logs[i], strerror(errno));
            rc = -1;
        }
    }
    if (!rc && n_logs && sl_fsync_parent_dir(j->out) != 0) {
        fprintf(stderr, CMD ": wrote %s but cannot sync its directory\n", j->out);
        rc = -1;
    }
    if (!rc) j->committed = true;
    for (size_t i = 0; i < n_fds; i++) close(fds[i]); /* the locks go with the fds */
    free(fds);
    free_list(logs, n_logs);
    return rc;
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
