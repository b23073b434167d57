/* Streaming JSON writer. */
#include "tools/json-writer.h"

#include <math.h>
#include <string.h>

#include "tools/json-read.h"

void json_init(struct json_writer *w, FILE *f) {
    w->f = f;
    w->depth = 0;
    w->need_comma[0] = false;
}

/* A JSON string; bytes that are not UTF-8 (a file name can hold any) are written as the lone
 * low surrogates \udc80..\udcff (Python's "surrogateescape"), which json-read.c turns back
 * into the bytes: every C string survives the trip. */
static void put_string(FILE *f, const char *s) {
    const size_t n = strlen(s);
    fputc('"', f);
    for (size_t i = 0; i < n;) {
        const size_t valid = i + utf8_valid_prefix(s + i, n - i);
        for (; i < valid; i++) {
            const unsigned char c = (unsigned char)s[i];
            switch (c) {
            case '"': fputs("\\\"", f); break;
            case '\\': fputs("\\\\", f); break;
            case '\n': fputs("\\n", f); break;
            case '\r': fputs("\\r", f); break;
            case '\t': fputs("\\t", f); break;
            default:
                if (c < 0x20) fprintf(f, "\\u%04x", c);
                else fputc(c, f);
            }
        }
        if (i < n) fprintf(f, "\\udc%02x", (unsigned char)s[i++]);
    }
    fputc('"', f);
}

static void prefix(struct json_writer *w, const char *key) {
    if (w->need_comma[w->depth]) fputc(',', w->f);
    w->need_comma[w->depth] = true;
    if (key) {
        put_string(w->f, key);
        fputc(':', w->f);
    }
}

static void open_(struct json_writer *w, const char *key, char c) {
    prefix(w, key);
    fputc(c, w->f);
    if (w->depth < 31) w->depth++;
    w->need_comma[w->depth] = false;
}

static void close_(struct json_writer *w, char c) {
    if (w->depth > 0) w->depth--;
    fputc(c, w->f);
    if (w->depth == 0) fputc('\n', w->f);
}

void json_obj_begin(struct json_writer *w, const char *key) { open_(w, key, '{'); }
void json_obj_end(struct json_writer *w) { close_(w, '}'); }
void json_arr_begin(struct json_writer *w, const char *key) { open_(w, key, '['); }
void json_arr_end(struct json_writer *w) { close_(w, ']'); }

void json_str(struct json_writer *w, const char *key, const char *s) {
    prefix(w, key);
    put_string(w->f, s ? s : "");
}

void json_int(struct json_writer *w, const char *key, int64_t v) {
    prefix(w, key);
    fprintf(w->f, "%lld", (long long)v);
}

void json_num(struct json_writer *w, const char *key, double v) {
    prefix(w, key);
    if (isfinite(v))
        fprintf(w->f, "%.9g", v);
    else
        fputs("null", w->f);
}

void json_bool(struct json_writer *w, const char *key, bool v) {
    prefix(w, key);
    fputs(v ? "true" : "false", w->f);
}

void json_null(struct json_writer *w, const char *key) {
    prefix(w, key);
    fputs("null", w->f);
}
