/* Stop strings and held-back streaming for generated text. */
#include "tools/gen-output.h"

#include <stdlib.h>
#include <string.h>

void gen_output_init(struct gen_output *o, const char *const *stops, int n_stops, FILE *stream) {
    memset(o, 0, sizeof *o);
    o->stops = stops;
    o->n_stops = n_stops;
    o->stream = stream;
}

/* Length of the longest suffix of text that is a proper prefix of some stop string. */
static size_t held_back(const struct gen_output *o) {
    size_t best = 0;
    for (int s = 0; s < o->n_stops; s++) {
        size_t sl = strlen(o->stops[s]);
        for (size_t k = sl - 1; k > best; k--)
            if (k <= o->len && memcmp(o->text + o->len - k, o->stops[s], k) == 0) {
                best = k;
                break;
            }
    }
    return best;
}

static void emit(struct gen_output *o, size_t upto) {
    if (o->stream && upto > o->printed) {
        fwrite(o->text + o->printed, 1, upto - o->printed, o->stream);
        fflush(o->stream);
    }
    if (upto > o->printed) o->printed = upto;
}

int gen_output_append(struct gen_output *o, const char *bytes, size_t n) {
    if (o->len + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap < o->len + n + 1) cap *= 2;
        char *t = realloc(o->text, cap);
        if (!t) return -1;
        o->text = t;
        o->cap = cap;
    }
    memcpy(o->text + o->len, bytes, n);
    o->len += n;
    o->text[o->len] = '\0';
    /* A stop string can only complete within the new bytes' reach. */
    for (int s = 0; s < o->n_stops; s++) {
        size_t sl = strlen(o->stops[s]);
        size_t from = o->len >= n + sl ? o->len - n - sl + 1 : 0;
        char *hit = strstr(o->text + from, o->stops[s]);
        if (hit) {
            o->len = (size_t)(hit - o->text);
            o->text[o->len] = '\0';
            emit(o, o->len);
            return 1;
        }
    }
    emit(o, o->len - held_back(o));
    return 0;
}

void gen_output_finish(struct gen_output *o) { emit(o, o->len); }

void gen_output_free(struct gen_output *o) {
    free(o->text);
    memset(o, 0, sizeof *o);
}
