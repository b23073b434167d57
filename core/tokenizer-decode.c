/* From tokens back to text: one token's bytes, a whole sequence as llama.cpp's
 * llama_detokenize gives it (including its clean-up of spaces before punctuation), and a
 * streaming detokenizer that only ever emits valid UTF-8, for printing tokens as they are
 * generated. Every token's text was computed once at load (sl_tokenizer.piece_blob). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "core/tokenizer-internal.h"

/* Control and unknown tokens print only when asked (llama.cpp's token_to_piece). */
static bool prints(const struct sl_tokenizer *t, int32_t id, bool special) {
    return special || !(t->attr[id] & (SL_TATTR_UNKNOWN | SL_TATTR_CONTROL));
}

int sl_token_to_bytes(const sl_tokenizer *t, int32_t id, bool special, char *buf, size_t cap) {
    if (!t || id < 0 || id >= t->n_vocab) return sl_fail(SL_EINVAL, "token id %d out of range", (int)id);
    if (!prints(t, id, special)) return 0;
    uint64_t n = t->piece_off[id + 1] - t->piece_off[id];
    if (buf) memcpy(buf, t->piece_blob + t->piece_off[id], n < cap ? n : cap);
    return (int)n;
}

/* llama.cpp's clean_up_tokenization_spaces, three passes over the joined text. */
static size_t clean_spaces(char *s, size_t n) {
    size_t o = n ? 1 : 0;
    for (size_t i = 1; i < n; i++) { /* " ?", " !", " .", " ," */
        char x = s[i];
        if (s[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) o--;
        s[o++] = x;
    }
    n = o, o = n ? 1 : 0;
    for (size_t i = 1; i < n; i++) { /* " ' " -> "'" */
        char x = s[i];
        if (x == '\'' && i + 1 < n && s[i - 1] == ' ' && s[i + 1] == ' ') o--, s[++i] = '\0';
        s[o++] = x;
    }
    n = o, o = n ? 1 : 0;
    for (size_t i = 1; i < n; i++) { /* " 's", " 'm", " 're", " 've" */
        char x = s[i];
        if (s[i - 1] == ' ' && x == '\'' && i + 1 < n) {
            char x1 = s[i + 1];
            if (x1 == 's' || x1 == 'm') o--;
            else if (i + 2 < n && ((x1 == 'r' && s[i + 2] == 'e') || (x1 == 'v' && s[i + 2] == 'e'))) o--;
        }
        s[o++] = x;
    }
    return o;
}

int64_t sl_detokenize(const sl_tokenizer *t, const int32_t *ids, int64_t n, bool special, char *buf,
                      size_t cap) {
    if (!t || n < 0 || (!ids && n) || (!buf && cap)) return sl_fail(SL_EINVAL, "sl_detokenize: bad arguments");
    uint64_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab) return sl_fail(SL_EINVAL, "token id %d at %" PRId64 " out of range", (int)ids[i], i);
        if (prints(t, ids[i], special)) total += t->piece_off[ids[i] + 1] - t->piece_off[ids[i]];
    }
    char *s = malloc(total + 1);
    if (!s) return sl_fail(SL_ENOMEM, "detokenize buffer (%" PRIu64 " bytes)", total);
    size_t o = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!prints(t, ids[i], special)) continue;
        const char *p = t->piece_blob + t->piece_off[ids[i]];
        size_t k = t->piece_off[ids[i] + 1] - t->piece_off[ids[i]];
        /* SPM: the first token's leading space is the one add_space_prefix put there */
        if (i == 0 && t->add_space_prefix && k && p[0] == ' ') p++, k--;
        memcpy(s + o, p, k);
        o += k;
    }
    if (t->clean_spaces) o = clean_spaces(s, o);
    if (buf && cap) {
        memcpy(buf, s, o < cap ? o : cap);
        buf[o < cap ? o : cap - 1] = '\0';
    }
    free(s);
    return (int64_t)o;
}

void sl_detok_init(struct sl_detok *d, const sl_tokenizer *t, bool special) {
    memset(d, 0, sizeof *d);
    d->tok = t;
    d->special = special;
    d->first = true;
}

/* Copies s[0..n) as valid UTF-8 (each invalid sequence -> U+FFFD); an unfinished character
 * at the end is left unconsumed unless `final`. Returns bytes written (out holds 3n). */
static size_t utf8_clean(const unsigned char *s, size_t n, bool final, char *out, size_t *used) {
    size_t o = 0, i = 0;
    while (i < n) {
        size_t l;
        int r = sl_utf8_char(s + i, n - i, &l);
        if (r == 0 && !final) break;
        if (r == 1) memcpy(out + o, s + i, l), o += l;
        else memcpy(out + o, "\xEF\xBF\xBD", 3), o += 3, l = r == 0 ? n - i : l;
        i += l;
    }
    *used = i;
    return o;
}

static int detok_emit(struct sl_detok *d, const char *p, size_t n, bool final, char *buf, size_t cap) {
    unsigned char stack[256];
    size_t m = (size_t)d->n_pending + n;
    unsigned char *in = m <= sizeof stack / 4 ? stack : malloc(4 * m + 1);
    if (!in) return sl_fail(SL_ENOMEM, "detokenizer buffer");
    memcpy(in, d->pending, (size_t)d->n_pending);
    if (n) memcpy(in + d->n_pending, p, n);
    char *tmp = (char *)in + m;
    size_t used, o = utf8_clean(in, m, final, tmp, &used);
    int rc = (int)o;
    if (o >= cap || o > INT32_MAX) {
        rc = sl_fail(SL_EINVAL, "detokenizer output needs %zu bytes, buffer has %zu", o + 1, cap);
    } else {
        memcpy(buf, tmp, o);
        buf[o] = '\0';
        d->n_pending = (int)(m - used); /* at most 3 bytes of an unfinished character */
        memcpy(d->pending, in + used, (size_t)d->n_pending);
    }
    if (in != stack) free(in);
    return rc;
}

int sl_detok_push(struct sl_detok *d, int32_t id, char *buf, size_t cap) {
    const struct sl_tokenizer *t = d->tok;
    if (!buf || id < 0 || id >= t->n_vocab) return sl_fail(SL_EINVAL, "sl_detok_push: bad token %d or buffer", (int)id);
    const char *p = t->piece_blob + t->piece_off[id];
    size_t n = prints(t, id, d->special) ? t->piece_off[id + 1] - t->piece_off[id] : 0;
    bool strip = d->first && t->add_space_prefix && n && p[0] == ' ';
    int rc = detok_emit(d, p + strip, n - strip, false, buf, cap);
    if (rc >= 0) d->first = false;
    return rc;
}

int sl_detok_flush(struct sl_detok *d, char *buf, size_t cap) {
    if (!buf) return sl_fail(SL_EINVAL, "sl_detok_flush: NULL buffer");
    return detok_emit(d, NULL, 0, true, buf, cap);
}
