/* One-line JSON objects read defensively (see json-read.h). */
#include "tools/json-read.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64

struct reader {
    const unsigned char *s, *p, *end;
    char *err;
    size_t errcap;
};

/* Length of the UTF-8 character at s (n bytes left), or 0 when it is invalid or cut short. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t need;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c >= 0xE0 && c <= 0xEF) need = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) need = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else return 0;
    if (need > n) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t k = 2; k < need; k++)
        if ((s[k] & 0xC0) != 0x80) return 0;
    return need;
}

size_t utf8_valid_prefix(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t l = utf8_len(u + i, n - i);
        if (!l) return i;
        i += l;
    }
    return n;
}

static int fail(struct reader *r, const char *what) {
    snprintf(r->err, r->errcap, "%s at column %zu", what, (size_t)(r->p - r->s) + 1);
    return -1;
}

static void skip_ws(struct reader *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
}

static int hex4(struct reader *r, uint32_t *out) {
    if (r->end - r->p < 4) return fail(r, "short \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = r->p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return fail(r, "bad \\u escape");
        v = v << 4 | (uint32_t)d;
    }
    r->p += 4;
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) return o[0] = (char)cp, 1;
    if (cp < 0x800) return o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3F)), 2;
    if (cp < 0x10000)
        return o[0] = (char)(0xE0 | cp >> 12), o[1] = (char)(0x80 | (cp >> 6 & 0x3F)), o[2] = (char)(0x80 | (cp & 0x3F)), 3;
    o[0] = (char)(0xF0 | cp >> 18), o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F)), o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The string at r->p (an opening quote). With out, *out receives the decoded copy (never
 * longer than the encoded text, so the buffer is sized by a first scan for the closing quote). */
static int parse_string(struct reader *r, char **out) {
    r->p++;
    const unsigned char *q = r->p;
    while (q < r->end && *q != '"') q += *q == '\\' && q + 1 < r->end ? 2 : 1;
    if (q >= r->end) return fail(r, "unterminated string");
    char *buf = NULL, *o = NULL;
    if (out) {
        if (!(buf = o = malloc((size_t)(q - r->p) + 1))) return fail(r, "out of memory");
    }
    while (*r->p != '"') {
        unsigned char c = *r->p;
        if (c < 0x20) goto bad_ctl;
        if (c >= 0x80) {
            size_t l = utf8_len(r->p, (size_t)(r->end - r->p));
            if (!l) goto bad_utf8;
            if (o) memcpy(o, r->p, l), o += l;
            r->p += l;
            continue;
        }
        if (c != '\\') {
            if (o) *o++ = (char)c;
            r->p++;
            continue;
        }
        r->p++;
        c = *r->p++;
        const char *simple = strchr("\"\\/bfnrt", c);
        if (c && simple) {
            static const char map[] = "\"\\/\b\f\n\r\t";
            if (o) *o++ = map[simple - "\"\\/bfnrt"];
            continue;
        }
        if (c != 'u') {
            r->p--;
            free(buf);
            return fail(r, "bad escape");
        }
        uint32_t cp, lo;
        if (hex4(r, &cp)) goto fail_free;
        if (cp >= 0xDC80 && cp <= 0xDCFF) { /* a byte that is not UTF-8 (json-writer.c) */
            if (o) *o++ = (char)(cp - 0xDC00);
            continue;
        }
        if (cp >= 0xDC00 && cp <= 0xDFFF) goto bad_surrogate;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (r->end - r->p < 2 || r->p[0] != '\\' || r->p[1] != 'u') goto bad_surrogate;
            r->p += 2;
            if (hex4(r, &lo)) goto fail_free;
            if (lo < 0xDC00 || lo > 0xDFFF) goto bad_surrogate;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (cp == 0) {
            free(buf);
            return fail(r, "\\u0000 in a string");
        }
        if (o) o += put_utf8(o, cp);
    }
    r->p++;
    if (out) *o = '\0', *out = buf;
    return 0;
bad_ctl:
    free(buf);
    return fail(r, "control character in a string");
bad_utf8:
    free(buf);
    return fail(r, "invalid UTF-8 in a string");
bad_surrogate:
    free(buf);
    return fail(r, "unpaired surrogate in a \\u escape");
fail_free:
    free(buf);
    return -1;
}

static int skip_value(struct reader *r, int depth);

static int skip_number(struct reader *r) {
    const unsigned char *p = r->p;
    if (p < r->end && *p == '-') p++;
    if (p >= r->end || *p < '0' || *p > '9') return fail(r, "bad value");
    if (*p == '0') p++;
    else
        while (p < r->end && *p >= '0' && *p <= '9') p++;
    if (p < r->end && *p == '.') {
        if (++p >= r->end || *p < '0' || *p > '9') return r->p = p, fail(r, "bad number");
        while (p < r->end && *p >= '0' && *p <= '9') p++;
    }
    if (p < r->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < r->end && (*p == '+' || *p == '-')) p++;
        if (p >= r->end || *p < '0' || *p > '9') return r->p = p, fail(r, "bad number");
        while (p < r->end && *p >= '0' && *p <= '9') p++;
    }
    r->p = p;
    return 0;
}

static bool literal(struct reader *r, const char *w) {
    size_t n = strlen(w);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, w, n)) return false;
    r->p += n;
    return true;
}

/* An object or array body after its opening bracket, up to and including the closing one;
 * with keys (objects only) the asked string values are stored. */
static int parse_container(struct reader *r, char close, int depth, const char *const *keys, int n, char **vals) {
    if (depth > MAX_DEPTH) return fail(r, "nested too deeply");
    r->p++;
    skip_ws(r);
    if (r->p < r->end && *r->p == close) return r->p++, 0;
    for (;;) {
        int want = -1;
        if (close == '}') {
            if (r->p >= r->end || *r->p != '"') return fail(r, "expected a key");
            char *key;
            if (parse_string(r, &key)) return -1;
            for (int i = 0; i < n; i++)
                if (!strcmp(key, keys[i])) want = i;
            free(key);
            skip_ws(r);
            if (r->p >= r->end || *r->p != ':') return fail(r, "expected ':'");
            r->p++;
            skip_ws(r);
        }
        if (want >= 0) {
            if (r->p < r->end && *r->p == '"') {
                char *v;
                if (parse_string(r, &v)) return -1;
                free(vals[want]);
                vals[want] = v;
            } else if (literal(r, "null")) {
                free(vals[want]);
                vals[want] = NULL;
            } else {
                snprintf(r->err, r->errcap, "\"%s\" is not a string", keys[want]);
                return -1;
            }
        } else if (skip_value(r, depth)) {
            return -1;
        }
        skip_ws(r);
        if (r->p < r->end && *r->p == close) return r->p++, 0;
        if (r->p >= r->end || *r->p != ',') return fail(r, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
        r->p++;
        skip_ws(r);
    }
}

static int skip_value(struct reader *r, int depth) {
    if (r->p >= r->end) return fail(r, "missing value");
    switch (*r->p) {
    case '"': return parse_string(r, NULL);
    case '{': return parse_container(r, '}', depth + 1, NULL, 0, NULL);
    case '[': return parse_container(r, ']', depth + 1, NULL, 0, NULL);
    default:
        if (literal(r, "true") || literal(r, "false") || literal(r, "null")) return 0;
        return skip_number(r);
    }
}

int json_read_object(const char *s, size_t len, const char *const *keys, int n, char **vals, char *err,
                     size_t errcap) {
    struct reader r = {(const unsigned char *)s, (const unsigned char *)s, (const unsigned char *)s + len, err, errcap};
    for (int i = 0; i < n; i++) vals[i] = NULL;
    skip_ws(&r);
    int rc = r.p < r.end && *r.p == '{' ? parse_container(&r, '}', 1, keys, n, vals) : fail(&r, "not a JSON object");
    if (!rc) {
        skip_ws(&r);
        if (r.p != r.end) rc = fail(&r, "text after the object");
    }
    if (rc)
        for (int i = 0; i < n; i++) free(vals[i]), vals[i] = NULL;
    return rc;
}
