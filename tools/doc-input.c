/* Listing, reading and cleaning the documents of a summarization job (see doc-input.h). */
#include "tools/doc-input.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spotlight/error.h"
#include "storage/regular-file.h"
#include "tools/json-read.h"

#define MAX_DIR_DEPTH 64

static struct doc *new_doc(struct doc_list *l) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct doc *v = cap < SIZE_MAX / sizeof *v ? realloc(l->v, cap * sizeof *v) : NULL;
        if (!v) return NULL;
        l->v = v;
        l->cap = cap;
    }
    struct doc *d = &l->v[l->n++];
    memset(d, 0, sizeof *d);
    return d;
}

static int oom(void) {
    fprintf(stderr, "spotlight summarize: out of memory\n");
    return -1;
}

/* st: the file's (NULL when it cannot be stat'ed: the error surfaces at doc_load). */
static int add_file(struct doc_list *l, const char *path, const struct stat *st) {
    struct doc *d = new_doc(l);
    if (!d) return oom();
    d->id = strdup(path);
    d->path = strdup(path);
    d->open = strdup(path);
    if (st) d->size = st->st_size, d->dev = st->st_dev, d->ino = st->st_ino;
    return d->id && d->path && d->open ? 0 : oom();
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The file-name prefix of the job's own files (output, log, temporaries) when they live in
 * dir, else NULL. */
static const char *own_prefix(const struct doc_list *l, const char *dir) {
    const char *slash = l->skip_prefix ? strrchr(l->skip_prefix, '/') : NULL;
    char real[PATH_MAX];
    if (!slash || !realpath(dir, real)) return NULL;
    size_t dl = (size_t)(slash - l->skip_prefix);
    if (dl == 0) dl = 1; /* the root */
    return strlen(real) == dl && !strncmp(real, l->skip_prefix, dl) ? slash + 1 : NULL;
}

static int add_dir(struct doc_list *l, const char *dir, int depth) {
    DIR *dp = opendir(dir);
    if (!dp || depth > MAX_DIR_DEPTH) {
        if (dp) closedir(dp);
        struct doc *d = new_doc(l);
        if (!d || !(d->id = strdup(dir)) || !(d->path = strdup(dir))) return oom();
        d->error = malloc(256);
        if (!d->error) return oom();
        snprintf(d->error, 256, "cannot list the directory: %s", dp ? "nested too deeply" : strerror(errno));
        return 0;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(dp))) {
        if (e->d_name[0] == '.') continue; /* ., .., hidden files */
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nn = cap < SIZE_MAX / sizeof *nn ? realloc(names, cap * sizeof *nn) : NULL;
            if (!nn) {
                rc = oom();
                break;
            }
            names = nn;
        }
        if (!(names[n] = strdup(e->d_name))) {
            rc = oom();
            break;
        }
        n++;
    }
    closedir(dp);
    if (!rc && n > 1) qsort(names, n, sizeof *names, cmp_str);
    const char *own = own_prefix(l, dir);
    size_t own_len = own ? strlen(own) : 0;
    size_t dl = strlen(dir);
    bool slash = dl && dir[dl - 1] == '/';
    for (size_t i = 0; i < n && !rc; i++) {
        size_t pl = dl + strlen(names[i]) + 2;
        char *p = malloc(pl);
        if (!p) {
            rc = oom();
            break;
        }
        snprintf(p, pl, "%s%s%s", dir, slash ? "" : "/", names[i]);
        struct stat st;
        if (lstat(p, &st) == 0 && !(own && !strncmp(names[i], own, own_len))) {
            if (S_ISDIR(st.st_mode)) rc = add_dir(l, p, depth + 1);
            else if (S_ISREG(st.st_mode)) rc = add_file(l, p, &st);
        }
        free(p);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

int doc_list_add_path(struct doc_list *l, const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return add_file(l, path, NULL); /* errors surface at doc_load */
    return S_ISDIR(st.st_mode) ? add_dir(l, path, 0) : add_file(l, path, &st);
}

/* The "id" of a line that is otherwise malformed ({"id": "x", "path": 3}), when it can be read. */
static char *salvage_id(const char *line, size_t len) {
    static const char *const key[] = {"id"};
    const char *end = line + len, *k = line;
    while ((k = memmem(k, (size_t)(end - k), "\"id\"", 4)) != NULL) {
        const char *q = k += 4;
        while (q < end && (*q == ' ' || *q == '\t')) q++;
        if (q >= end || *q++ != ':') continue;
        while (q < end && (*q == ' ' || *q == '\t')) q++;
        if (q >= end || *q != '"') continue;
        const char *e = q + 1;
        while (e < end && *e != '"') e += *e == '\\' ? 2 : 1;
        if (e >= end) return NULL;
        size_t n = (size_t)(e - q) + 1;
        char *obj = malloc(n + 8), *v = NULL, why[8];
        if (!obj) return NULL;
        snprintf(obj, n + 8, "{\"id\":%.*s}", (int)n, q);
        if (json_read_object(obj, strlen(obj), key, 1, &v, why, sizeof why) != 0) v = NULL;
        free(obj);
        return v;
    }
    return NULL;
}

/* A manifest line that became a document. */
static int manifest_entry(struct doc_list *l, const char *base, size_t line_no, const char *line, size_t len,
                          FILE *err) {
    static const char *const keys[] = {"id", "path", "text"};
    char *v[3], why[160];
    const char *reason = NULL;
    if (json_read_object(line, len, keys, 3, v, why, sizeof why) != 0) {
        reason = why;
        v[0] = v[1] = v[2] = NULL;
        v[0] = salvage_id(line, len);
    } else if (!v[1] == !v[2]) {
        reason = v[1] ? "has both \"path\" and \"text\"" : "needs \"path\" or \"text\"";
    } else if (v[2] && !v[0]) {
        reason = "a \"text\" entry needs an \"id\"";
    } else if (v[0] && !v[0][0]) {
        reason = "\"id\" is empty";
    } else if (v[1] && !v[1][0]) {
        reason = "\"path\" is empty";
    }
    struct doc *d = new_doc(l);
    if (!d) {
        for (int i = 0; i < 3; i++) free(v[i]);
        return oom();
    }
    if (reason) {
        fprintf(err, "manifest:%zu: %s\n", line_no, reason);
        free(v[1]);
        free(v[2]);
        if (!v[0] || !v[0][0]) {
            free(v[0]);
            if ((v[0] = malloc(32))) snprintf(v[0], 32, "line-%zu", line_no);
        }
        d->id = v[0];
        d->error = malloc(strlen(reason) + 48);
        if (d->error) snprintf(d->error, strlen(reason) + 48, "manifest line %zu: %s", line_no, reason);
        return d->id && d->error ? 0 : oom();
    }
    d->path = v[1];
    d->text = v[2];
    d->id = v[0] ? v[0] : strdup(v[1]);
    if (d->text) {
        d->size = (int64_t)strlen(d->text);
    } else {
        size_t pl = strlen(base) + strlen(d->path) + 2;
        if (d->path[0] == '/' || !base[0]) d->open = strdup(d->path);
        else if ((d->open = malloc(pl))) snprintf(d->open, pl, "%s/%s", base, d->path);
        struct stat st;
        if (!d->open) return oom();
        if (stat(d->open, &st) == 0) d->size = st.st_size, d->dev = st.st_dev, d->ino = st.st_ino;
    }
    return d->id ? 0 : oom();
}

/* Opens a regular file for reading without blocking on a FIFO: an fd, or -1 with errno set
 * (EINVAL: not a regular file). */
static int open_regular(const char *path, struct stat *st) {
    int fd = sl_open_regular(path, O_RDONLY, 0, st);
    if (fd < 0) errno = fd == SL_EINVAL ? EINVAL : -fd;
    return fd < 0 ? -1 : fd;
}

int doc_list_add_manifest(struct doc_list *l, const char *manifest, FILE *err) {
    struct stat st = {0};
    int fd = open_regular(manifest, &st);
    if (fd < 0) {
        fprintf(stderr, "spotlight summarize: cannot read the manifest %s: %s\n", manifest,
                errno == EINVAL ? "not a regular file" : strerror(errno));
        return -1;
    }
    if (st.st_size > DOC_MANIFEST_MAX_BYTES) {
        fprintf(stderr, "spotlight summarize: the manifest %s is larger than %lld bytes\n", manifest,
                (long long)DOC_MANIFEST_MAX_BYTES);
        close(fd);
        return -1;
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return oom();
    }
    char *base = strdup(manifest);
    if (!base) {
        fclose(f);
        return oom();
    }
    char *slash = strrchr(base, '/');
    if (slash) *slash = '\0';
    else base[0] = '\0';
    if (slash == base) strcpy(base, "/");
    char *line = NULL;
    size_t cap = 0, line_no = 0;
    ssize_t n;
    int rc = 0;
    errno = 0;
    while (!rc && (n = getline(&line, &cap, f)) >= 0) {
        line_no++;
        size_t len = (size_t)n;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
        size_t k = 0;
        while (k < len && (line[k] == ' ' || line[k] == '\t')) k++;
        if (k == len) continue;
        line[len] = '\0';
        rc = manifest_entry(l, base, line_no, line, len, err);
    }
    if (!rc && ferror(f)) {
        fprintf(stderr, "spotlight summarize: cannot read the manifest %s: %s\n", manifest, strerror(errno ? errno : EIO));
        rc = -1;
    }
    free(line);
    free(base);
    fclose(f);
    return rc;
}

void doc_list_free(struct doc_list *l) {
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].id);
        free(l->v[i].path);
        free(l->v[i].open);
        free(l->v[i].text);
        free(l->v[i].error);
    }
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

/* ---- cleaning ------------------------------------------------------------------------- */

static bool starts_ci(const char *s, size_t n, const char *w) {
    size_t k = strlen(w);
    return n >= k && !strncasecmp(s, w, k);
}

static bool is_html(const char *name, const char *s, size_t n) {
    const char *dot = name ? strrchr(name, '.') : NULL;
    if (dot && !strchr(dot, '/') && (!strcasecmp(dot, ".html") || !strcasecmp(dot, ".htm"))) return true;
    while (n && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')) s++, n--;
    return starts_ci(s, n, "<!doctype html") || starts_ci(s, n, "<html");
}

static size_t put_utf8(char *o, unsigned long cp) {
    if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = 0xFFFD;
    if (cp < 0x80) return o[0] = (char)cp, 1;
    if (cp < 0x800) return o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3F)), 2;
    if (cp < 0x10000)
        return o[0] = (char)(0xE0 | cp >> 12), o[1] = (char)(0x80 | (cp >> 6 & 0x3F)), o[2] = (char)(0x80 | (cp & 0x3F)), 3;
    o[0] = (char)(0xF0 | cp >> 18), o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F)), o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The entity at s[0] == '&': its UTF-8 into o (never longer than the entity, whose shortest
 * numeric form &#N; is 4 bytes), the entity's length in *used; 0 when it is not one we know. */
static size_t entity(const char *s, size_t n, char *o, size_t *used) {
    static const struct { const char *name; const char *text; } named[] = {
        {"&amp;", "&"}, {"&lt;", "<"}, {"&gt;", ">"}, {"&quot;", "\""}, {"&#39;", "'"}, {"&apos;", "'"}, {"&nbsp;", " "}};
    for (size_t i = 0; i < sizeof named / sizeof *named; i++)
        if (starts_ci(s, n, named[i].name)) {
            *used = strlen(named[i].name);
            o[0] = named[i].text[0];
            return 1;
        }
    if (n < 4 || s[1] != '#') return 0;
    size_t i = 2;
    bool hex = s[2] == 'x' || s[2] == 'X';
    if (hex) i++;
    unsigned long cp = 0;
    size_t digits = 0;
    for (; i < n && digits < 8; i++, digits++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : hex && c >= 'a' && c <= 'f' ? c - 'a' + 10 : hex && c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) break;
        cp = cp * (hex ? 16 : 10) + (unsigned long)d;
    }
    if (!digits || i >= n || s[i] != ';') return 0;
    *used = i + 1;
    return put_utf8(o, cp);
}

/* Tags after which text starts on a new line. */
static bool is_block_tag(const char *s, size_t n) {
    static const char *const tags[] = {"p", "br", "div", "li", "ul", "ol", "tr", "table", "h1", "h2", "h3", "h4", "h5",
                                       "h6", "pre", "blockquote", "section", "article", "header", "footer", "hr", "dt",
                                       "dd", "title", "td", "th"};
    size_t k = 0;
    if (k < n && s[k] == '/') k++;
    size_t b = k;
    while (k < n && ((s[k] >= 'a' && s[k] <= 'z') || (s[k] >= 'A' && s[k] <= 'Z') || (s[k] >= '0' && s[k] <= '9'))) k++;
    for (size_t i = 0; i < sizeof tags / sizeof *tags; i++)
        if (strlen(tags[i]) == k - b && !strncasecmp(s + b, tags[i], k - b)) return true;
    return false;
}

/* The end of a tag starting at s[i] == '<' (past its '>'), quotes inside it respected. */
static size_t tag_end(const char *s, size_t n, size_t i) {
    char quote = 0;
    for (i++; i < n; i++) {
        if (quote) {
            if (s[i] == quote) quote = 0;
        } else if (s[i] == '"' || s[i] == '\'') {
            quote = s[i];
        } else if (s[i] == '>') {
            return i + 1;
        }
    }
    return n;
}

/* Where the raw-text element (script, style) opened before s[i] ends: past its closing tag. */
static size_t raw_end(const char *s, size_t n, size_t i, const char *name) {
    size_t k = strlen(name);
    for (; i + 2 + k <= n; i++)
        if (s[i] == '<' && s[i + 1] == '/' && !strncasecmp(s + i + 2, name, k)) return tag_end(s, n, i);
    return n;
}

size_t html_to_text(char *s, size_t n) {
    size_t o = 0, i = 0;
    int pending = 0; /* whitespace owed before the next text: 1 space, 2 newline */
    while (i < n) {
        char c = s[i];
        if (c == '<') {
            size_t e;
            if (starts_ci(s + i, n - i, "<!--")) {
                char *end = NULL;
                for (size_t k = i + 4; k + 3 <= n; k++)
                    if (!memcmp(s + k, "-->", 3)) {
                        end = s + k + 3;
                        break;
                    }
                e = end ? (size_t)(end - s) : n;
            } else {
                e = tag_end(s, n, i);
                const char *raw = NULL;
                if (starts_ci(s + i, n - i, "<script")) raw = "script";
                else if (starts_ci(s + i, n - i, "<style")) raw = "style";
                size_t k = i + 1 + (raw ? strlen(raw) : 0);
                bool named = raw && (k >= n || s[k] == '>' || s[k] == '/' || s[k] == ' ' || s[k] == '\t' || s[k] == '\n' || s[k] == '\r');
                if (named && !(e >= 2 && s[e - 2] == '/')) e = raw_end(s, n, e, raw);
                if (is_block_tag(s + i + 1, n - i - 1)) pending = 2;
                else if (!pending) pending = 1; /* tags usually separate words */
            }
            i = e;
            continue;
        }
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f') {
            if (!pending) pending = 1;
            i++;
            continue;
        }
        char ent[4];
        size_t used = 1, m = c == '&' ? entity(s + i, n - i, ent, &used) : 0;
        if (m == 1 && ent[0] == ' ') { /* &nbsp; */
            if (!pending) pending = 1;
            i += used;
            continue;
        }
        if (pending && o) s[o++] = pending == 2 ? '\n' : ' ';
        pending = 0;
        if (m) {
            memcpy(s + o, ent, m); /* o + m <= i + used: the output never overtakes the input */
            o += m;
            i += used;
        } else {
            s[o++] = c;
            i++;
        }
    }
    s[o] = '\0';
    return o;
}

/* Reads a file of at most max bytes: malloc'd, NUL-terminated, or NULL with the reason. */
static char *read_file(const char *path, int64_t max, size_t *len, char *err, size_t cap) {
    struct stat st = {0};
    int fd = open_regular(path, &st);
    if (fd < 0) {
        if (errno == EINVAL) snprintf(err, cap, "not a regular file");
        else snprintf(err, cap, "cannot open: %s", strerror(errno));
        return NULL;
    }
    if (st.st_size > max) {
        snprintf(err, cap, "larger than --max-bytes (%lld > %lld bytes)", (long long)st.st_size, (long long)max);
        close(fd);
        return NULL;
    }
    size_t want = (size_t)max + 1, n = 0, bufcap = (size_t)st.st_size + 1;
    char *buf = malloc(bufcap + 1);
    while (buf) {
        ssize_t r = read(fd, buf + n, bufcap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            snprintf(err, cap, "cannot read: %s", strerror(errno));
            free(buf);
            buf = NULL;
            break;
        }
        if (r == 0) break;
        n += (size_t)r;
        if (n > (size_t)max) {
            snprintf(err, cap, "larger than --max-bytes (%lld bytes)", (long long)max);
            free(buf);
            buf = NULL;
            break;
        }
        if (n == bufcap) { /* the file grew while being read */
            size_t nc = bufcap * 2 < want ? bufcap * 2 : want;
            char *nb = realloc(buf, nc + 1);
            if (!nb) free(buf);
            buf = nb;
            bufcap = nc;
        }
    }
    close(fd);
    if (!buf) {
        if (!err[0]) snprintf(err, cap, "out of memory");
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

char *doc_load(const struct doc *d, int64_t max_bytes, size_t *len, char *err, size_t errcap) {
    err[0] = '\0';
    if (d->error) {
        snprintf(err, errcap, "%s", d->error);
        return NULL;
    }
    size_t n = 0;
    char *s;
    if (d->text) {
        n = strlen(d->text);
        if ((int64_t)n > max_bytes) {
            snprintf(err, errcap, "larger than --max-bytes (%zu > %lld bytes)", n, (long long)max_bytes);
            return NULL;
        }
        if (!(s = strdup(d->text))) {
            snprintf(err, errcap, "out of memory");
            return NULL;
        }
    } else if (!(s = read_file(d->open, max_bytes, &n, err, errcap))) {
        return NULL;
    }
    const char *nul = memchr(s, '\0', n);
    if (nul) {
        snprintf(err, errcap, "binary file (NUL byte at byte %zu)", (size_t)(nul - s));
        free(s);
        return NULL;
    }
    size_t valid = utf8_valid_prefix(s, n);
    if (valid < n) {
        snprintf(err, errcap, "not valid UTF-8 at byte %zu", valid);
        free(s);
        return NULL;
    }
    size_t off = n >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3) ? 3 : 0; /* a byte-order mark */
    memmove(s, s + off, n - off + 1);
    n -= off;
    if (is_html(d->path, s, n)) n = html_to_text(s, n);
    size_t b = 0;
    while (b < n && (s[b] == ' ' || s[b] == '\t' || s[b] == '\n' || s[b] == '\r' || s[b] == '\f' || s[b] == '\v')) b++;
    while (n > b && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == '\f' ||
                     s[n - 1] == '\v'))
        n--;
    if (n == b) {
        snprintf(err, errcap, "empty document");
        free(s);
        return NULL;
    }
    memmove(s, s + b, n - b);
    n -= b;
    s[n] = '\0';
    *len = n;
    return s;
}
