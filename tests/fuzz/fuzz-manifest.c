/* libFuzzer target: the summarize manifest reader (tools/doc-input.h, doc_list_add_manifest:
 * JSONL, {"id", "path"} or {"id", "text"} per line) on arbitrary bytes written to a temporary
 * file, then the reading and cleaning of each inline text (doc_load), as plain text and as
 * HTML. Any line may be malformed; nothing may crash, leak, hang or read out of bounds, and
 * what is listed must be sane: a readable manifest is read (0), no more documents than lines,
 * each with a non-empty id and exactly one of an error, a path (with where to open it) or a
 * text (its size its length); a loaded text is valid UTF-8 without NUL, non-empty and trimmed.
 * Files a manifest names are not read (they may be anything on this machine). Build with
 * SL_FUZZ=ON and SL_SANITIZE=address,undefined (tools/fuzz.sh); seeds in
 * tests/fuzz/seeds-manifest/, dictionary tests/fuzz/manifest.dict. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzz-temp.h"
#include "tools/doc-input.h"
#include "tools/json-read.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static FILE *g_null;

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

/* doc_load on an inline text: a clean text, or NULL with a reason. */
static void load_text(const struct doc *d) {
    char err[256];
    size_t len = 0;
    char *s = doc_load(d, 1 << 20, &len, err, sizeof err);
    if (!s) {
        if (!err[0]) abort();
        return;
    }
    if (len == 0 || s[len] != '\0' || memchr(s, '\0', len) || utf8_valid_prefix(s, len) != len ||
        is_space(s[0]) || is_space(s[len - 1]) || len > strlen(d->text))
        abort();
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_null && !(g_null = fopen("/dev/null", "w"))) abort();
    const char *path = fuzz_temp_write("manifest", data, size);
    struct doc_list l;
    memset(&l, 0, sizeof l);
    if (doc_list_add_manifest(&l, path, g_null) != 0) abort();
    size_t lines = 0;
    for (size_t i = 0; i < size; i++) lines += data[i] == '\n';
    if (size && data[size - 1] != '\n') lines++;
    if (l.n > lines) abort();
    for (size_t i = 0; i < l.n; i++) {
        const struct doc *d = &l.v[i];
        int kinds = !!d->error + !!d->path + !!d->text;
        if (!d->id || !d->id[0] || kinds != 1 || (d->path && (!d->path[0] || !d->open)) ||
            (d->text && d->size != (int64_t)strlen(d->text)))
            abort();
        if (d->error) {
            char err[256];
            size_t len;
            if (doc_load(d, 1 << 20, &len, err, sizeof err) || !err[0]) abort();
        }
        if (d->text) {
            load_text(d);
            struct doc html = *d; /* the same text as an .html file's would be cleaned */
            html.path = "doc.html";
            load_text(&html);
        }
    }
    doc_list_free(&l);
    return 0;
}
