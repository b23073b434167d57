/* Byte-level BPE ("gpt2" tokenizer.ggml.model): the GPT-2 byte <-> unicode mapping, the merge
 * table (tokenizer.ggml.merges, rank = index) and the merge loop.
 *
 * A word from the pre-tokenizer is first rewritten byte by byte into the printable characters
 * of the GPT-2 mapping (space -> 'Ġ' ...), so each symbol starts as one such character; then
 * the adjacent pair with the lowest merge rank (ties: leftmost) is merged until none is left,
 * exactly llama.cpp's llm_tokenizer_bpe_session. Merge ranks live in a hash table keyed on
 * slices of the GGUF merge strings themselves (building it copies no text), and again in one
 * keyed on the two halves' token ids, which is what the hot loop uses while both halves are
 * tokens. Each call also caches the ids of the short words it has seen. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "core/tokenizer-internal.h"

/* ---- GPT-2 byte mapping ---------------------------------------------------------------- */

/* Bytes that are printable stay themselves; the other 68 take code points 256.. in order. */
static bool byte_is_printable(int b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

static struct {
    unsigned char enc[256][2]; /* UTF-8 of the code point for each byte (all < U+0800) */
    uint8_t enc_len[256];
    int16_t dec[324];          /* code point -> byte, -1 if not part of the mapping */
} g_map;

static void map_build(void) {
    int extra = 0;
    for (int i = 0; i < 324; i++) g_map.dec[i] = -1;
    for (int b = 0; b < 256; b++) {
        int cp = byte_is_printable(b) ? b : 256 + extra++;
        if (cp < 0x80) {
            g_map.enc[b][0] = (unsigned char)cp;
            g_map.enc_len[b] = 1;
        } else {
            g_map.enc[b][0] = (unsigned char)(0xC0 | (cp >> 6));
            g_map.enc[b][1] = (unsigned char)(0x80 | (cp & 0x3F));
            g_map.enc_len[b] = 2;
        }
        g_map.dec[cp] = (int16_t)b;
    }
}

static void map_init_once(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, map_build);
}

/* Decodes one code point from valid-or-not UTF-8 the way llama.cpp does (0xFFFD and one
 * byte consumed on error); returns the code point and advances *i. */
static uint32_t next_cpt(const unsigned char *s, size_t n, size_t *i) {
    unsigned char c = s[*i];
    size_t need = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (need == 0 || *i + need > n) {
        (*i)++;
        return 0xFFFD;
    }
    uint32_t cp = need == 1 ? c : need == 2 ? (c & 0x1Fu) : need == 3 ? (c & 0x0Fu) : (c & 0x07u);
    for (size_t k = 1; k < need; k++) {
        if ((s[*i + k] & 0xC0) != 0x80) {
            (*i)++;
            return 0xFFFD;
        }
        cp = (cp << 6) | (s[*i + k] & 0x3Fu);
    }
    *i += need;
    return cp;
}

static size_t put(char *out, size_t cap, size_t at, const void *p, size_t n) {
    if (at < cap) memcpy(out + at, p, at + n <= cap ? n : cap - at);
    return at + n;
}

size_t sl_bpe_decode_text(const char *s, size_t n, char *out, size_t cap) {
    map_init_once();
    const unsigned char *u = (const unsigned char *)s;
    size_t at = 0;
    for (size_t i = 0; i < n;) {
        size_t start = i;
        uint32_t cp = next_cpt(u, n, &i);
        if (cp < 324 && g_map.dec[cp] >= 0) {
            char b = (char)g_map.dec[cp];
            at = put(out, cap, at, &b, 1);
        } else {
            /* Not a byte character: llama.cpp prints "[UNK_BYTE_0x<utf8 hex><token text>]". */
            static const char hex[] = "0123456789abcdef";
            at = put(out, cap, at, "[UNK_BYTE_0x", 12);
            for (size_t k = start; k < i; k++) {
                char h[2] = {hex[u[k] >> 4], hex[u[k] & 15]};
                at = put(out, cap, at, h, 2);
            }
            at = put(out, cap, at, s, n);
            at = put(out, cap, at, "]", 1);
        }
    }
    return at;
}

/* ---- merge table ----------------------------------------------------------------------- */

static uint64_t pair_hash(const char *a, size_t alen, const char *b, size_t blen) {
    /* The split point is part of the key: ("ab","c") and ("a","bc") differ. */
    uint64_t h = sl_tok_hash(a, alen, SL_TOK_HASH_SEED);
    h = (h ^ alen) * 0x100000001b3ULL;
    return sl_tok_mix(sl_tok_hash(b, blen, h));
}

static bool same_pair(const struct sl_merge *e, const char *a, size_t alen, const char *b, size_t blen) {
    return e->alen == alen && e->blen == blen && !memcmp(e->a, a, alen) && !memcmp(e->b, b, blen);
}

static int32_t merge_rank(const struct sl_merges *m, const char *a, size_t alen, const char *b,
                          size_t blen) {
    uint64_t h = pair_hash(a, alen, b, blen), tag = h >> 32;
    for (uint32_t i = (uint32_t)h & m->mask;; i = (i + 1) & m->mask) {
        uint64_t s = m->slots[i];
        if (!s) return -1;
        uint32_t r = (uint32_t)s - 1;
        if (s >> 32 == tag && same_pair(&m->m[r], a, alen, b, blen)) return (int32_t)r;
    }
}

static int32_t merge_rank_ids(const struct sl_merges *m, int32_t a, int32_t b) {
    uint64_t key = (uint64_t)a << 32 | (uint32_t)b | 1ULL << 63;
    for (uint32_t i = (uint32_t)sl_tok_mix(key) & m->ids_mask;; i = (i + 1) & m->ids_mask) {
        if (m->ids[i].key == key) return m->ids[i].rank;
        if (!m->ids[i].key) return -1;
    }
}

/* Fills the id-keyed table from the string-keyed one (tokens must be loaded). */
int sl_bpe_index(struct sl_tokenizer *t) {
    struct sl_merges *m = &t->merges;
    uint32_t cap = 16;
    while (cap < 2 * (uint64_t)m->n) cap *= 2;
    if (!(m->ids = calloc(cap, sizeof *m->ids))) return sl_fail(SL_ENOMEM, "BPE merge index");
    m->ids_mask = cap - 1;
    for (uint32_t r = 0; r < m->n; r++) {
        const struct sl_merge *e = &m->m[r];
        int32_t a = sl_tok_find(t, e->a, e->alen), b = sl_tok_find(t, e->b, e->blen);
        /* A pair the string table resolves to another rank is a repeat: first one wins. */
        if (a < 0 || b < 0 || merge_rank(m, e->a, e->alen, e->b, e->blen) != (int32_t)r) continue;
        uint64_t key = (uint64_t)a << 32 | (uint32_t)b | 1ULL << 63;
        uint32_t i = (uint32_t)sl_tok_mix(key) & m->ids_mask;
        while (m->ids[i].key) i = (i + 1) & m->ids_mask;
        m->ids[i] = (struct sl_merge_id){key, (int32_t)r};
    }
    for (int b = 0; b < 256; b++) m->byte_id[b] = sl_tok_find(t, (const char *)g_map.enc[b], g_map.enc_len[b]);
    return 0;
}

int sl_bpe_init(struct sl_tokenizer *t, const struct sl_gguf_value *merges) {
    map_init_once();
    struct sl_merges *m = &t->merges;
    uint64_t n = merges->v.arr.n;
    if (n > INT32_MAX / 4) return sl_fail(SL_EFORMAT, "tokenizer.ggml.merges has %llu entries", (unsigned long long)n);
    uint32_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    m->m = calloc(n ? n : 1, sizeof *m->m);
    m->slots = calloc(cap, sizeof *m->slots);
    if (!m->m || !m->slots) return sl_fail(SL_ENOMEM, "BPE merge table (%llu merges)", (unsigned long long)n);
    m->mask = cap - 1;
    m->n = (uint32_t)n;
    for (uint32_t r = 0; r < n; r++) {
        const char *s = merges->v.arr.items[r].v.str.s;
        size_t len = strnlen(s, merges->v.arr.items[r].v.str.len); /* C-string, as llama.cpp */
        /* llama.cpp splits at the first space after position 0; no space -> ("", ""). */
        const char *sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
        struct sl_merge e = {s, s, 0, 0};
        if (sp) e = (struct sl_merge){s, sp + 1, (uint32_t)(sp - s), (uint32_t)(len - (size_t)(sp - s) - 1)};
        m->m[r] = e;
        /* First occurrence of a pair wins, as with std::unordered_map::emplace. */
        if (merge_rank(m, e.a, e.alen, e.b, e.blen) >= 0) continue;
        uint64_t h = pair_hash(e.a, e.alen, e.b, e.blen);
        uint32_t i = (uint32_t)h & m->mask;
        while (m->slots[i]) i = (i + 1) & m->mask;
        m->slots[i] = (h >> 32 << 32) | (r + 1);
    }
    return 0;
}

void sl_bpe_free(struct sl_tokenizer *t) {
    free(t->merges.m);
    free(t->merges.slots);
    free(t->merges.ids);
    sl_pretok_free(t->pre);
}

/* ---- the merge loop -------------------------------------------------------------------- */

struct sym {
    uint32_t off, n; /* bytes of the encoded word; n = 0 once merged into its left */
    int32_t prev, next;
    int32_t id; /* the token these bytes spell, or -1 */
};

struct bigram {
    int32_t left, right, rank;
    uint32_t size; /* left.n + right.n when queued; a mismatch later means it is stale */
};

/* Scratch kept across the words of one call. */
struct bpe_work {
    char *enc;
    size_t enc_cap;
    struct sym *sym;
    size_t sym_cap;
    struct bigram *heap;
    size_t heap_n, heap_cap;
};

static bool bigram_before(const struct bigram *x, const struct bigram *y) {
    return x->rank < y->rank || (x->rank == y->rank && x->left < y->left);
}

static int heap_push(struct bpe_work *w, struct bigram b) {
    if (w->heap_n == w->heap_cap) {
        size_t cap = w->heap_cap ? w->heap_cap * 2 : 64;
        struct bigram *h = realloc(w->heap, cap * sizeof *h);
        if (!h) return sl_fail(SL_ENOMEM, "BPE queue");
        w->heap = h;
        w->heap_cap = cap;
    }
    size_t i = w->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bigram_before(&b, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = b;
    return 0;
}

static struct bigram heap_pop(struct bpe_work *w) {
    struct bigram top = w->heap[0], last = w->heap[--w->heap_n];
    size_t i = 0, n = w->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && bigram_before(&w->heap[c + 1], &w->heap[c])) c++;
        if (!bigram_before(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n) w->heap[i] = last;
    return top;
}

static int add_bigram(const struct sl_tokenizer *t, struct bpe_work *w, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return 0;
    const struct sym *a = &w->sym[l], *b = &w->sym[r];
    /* Both halves tokens: the id table has the same rank the strings would give. */
    int32_t rank = a->id >= 0 && b->id >= 0
                       ? merge_rank_ids(&t->merges, a->id, b->id)
                       : merge_rank(&t->merges, w->enc + a->off, a->n, w->enc + b->off, b->n);
    if (rank < 0) return 0;
    return heap_push(w, (struct bigram){l, r, rank, a->n + b->n});
}

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return sl_fail(SL_ENOMEM, "BPE scratch (%zu)", need);
    *p = q;
    *cap = c;
    return 0;
}

static int bpe_word(const struct sl_tokenizer *t, struct bpe_work *w, const unsigned char *word,
                    size_t len, struct sl_ids *out) {
    int rc;
    if (len == 0) return 0;
    if ((rc = grow((void **)&w->enc, &w->enc_cap, 2 * len, 1))) return rc;
    if ((rc = grow((void **)&w->sym, &w->sym_cap, len, sizeof *w->sym))) return rc;
    size_t elen = 0;
    for (size_t i = 0; i < len; i++) {
        w->sym[i] = (struct sym){(uint32_t)elen, g_map.enc_len[word[i]], (int32_t)i - 1,
                                 i + 1 < len ? (int32_t)i + 1 : -1, t->merges.byte_id[word[i]]};
        memcpy(w->enc + elen, g_map.enc[word[i]], g_map.enc_len[word[i]]);
        elen += g_map.enc_len[word[i]];
    }
    if (t->ignore_merges) { /* Llama 3: a word that is a token is taken whole */
        int32_t id = sl_tok_find(t, w->enc, elen);
        if (id >= 0) return sl_ids_push(out, id);
    }
    w->heap_n = 0;
    for (size_t i = 1; i < len; i++)
        if ((rc = add_bigram(t, w, (int32_t)i - 1, (int32_t)i))) return rc;
    while (w->heap_n) {
        struct bigram b = heap_pop(w);
        struct sym *l = &w->sym[b.left], *r = &w->sym[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue;
        l->n += r->n;
        r->n = 0;
        l->id = sl_tok_find(t, w->enc + l->off, l->n);
        l->next = r->next;
        if (r->next >= 0) w->sym[r->next].prev = b.left;
        if ((rc = add_bigram(t, w, l->prev, b.left)) || (rc = add_bigram(t, w, b.left, l->next)))
            return rc;
    }
    for (int32_t i = 0; i >= 0; i = w->sym[i].next) {
        const struct sym *s = &w->sym[i];
        int32_t id = s->id;
        if (id >= 0) {
            if ((rc = sl_ids_push(out, id))) return rc;
            continue;
        }
        /* Not a token (a vocabulary without all 256 byte characters): llama.cpp looks up
         * each byte of the encoded text alone and drops the ones that are not tokens. */
        for (uint32_t k = 0; k < s->n; k++) {
            id = sl_tok_find(t, w->enc + s->off + k, 1);
            if (id >= 0 && (rc = sl_ids_push(out, id))) return rc;
        }
    }
    return 0;
}

/* Words repeat (in English prose most of a text is words seen before), so one call keeps the
 * ids of each distinct short word it has tokenized. Same result, several times faster. */
struct word_cache {
    uint64_t *slots; /* entry+1 | hash << 32 */
    uint32_t mask, n;
    struct wc_entry {
        const char *word;
        uint32_t len, ids_off, ids_n;
    } *e;
    struct sl_ids ids;
};

enum { WC_MAX_WORD = 64, WC_MAX_ENTRIES = 1 << 20 };

/* The cached entry for word, or -1; *slot receives where a new entry would go. */
static int64_t wc_find(const struct word_cache *c, const char *w, size_t n, uint64_t h, uint32_t *slot) {
    uint32_t i = (uint32_t)h & c->mask;
    for (;; i = (i + 1) & c->mask) {
        uint64_t x = c->slots[i];
        if (!x) break;
        const struct wc_entry *e = &c->e[(uint32_t)x - 1];
        if (x >> 32 == h >> 32 && e->len == n && !memcmp(e->word, w, n)) return (uint32_t)x - 1;
    }
    *slot = i;
    return -1;
}

static int wc_grow(struct word_cache *c) {
    uint32_t cap = c->mask ? 2 * (c->mask + 1) : 4096;
    uint64_t *slots = calloc(cap, sizeof *slots);
    struct wc_entry *e = realloc(c->e, (cap / 2) * sizeof *e);
    if (!slots || !e) {
        free(slots);
        if (e) c->e = e;
        return sl_fail(SL_ENOMEM, "BPE word cache");
    }
    c->e = e;
    for (uint32_t k = 0; c->mask && k <= c->mask; k++) {
        uint64_t x = c->slots[k];
        if (!x) continue;
        uint32_t i = (uint32_t)(sl_tok_mix(sl_tok_hash(e[(uint32_t)x - 1].word, e[(uint32_t)x - 1].len, SL_TOK_HASH_SEED))) & (cap - 1);
        while (slots[i]) i = (i + 1) & (cap - 1);
        slots[i] = x;
    }
    free(c->slots);
    c->slots = slots;
    c->mask = cap - 1;
    return 0;
}

int sl_bpe_tokenize(const struct sl_tokenizer *t, const char *text, size_t len, struct sl_ids *out) {
    struct sl_span *words = NULL;
    size_t n_words = 0;
    int rc = sl_pretok_split(t->pre, text, len, &words, &n_words);
    if (rc) return rc;
    struct bpe_work w = {0};
    struct word_cache c = {0};
    for (size_t i = 0; i < n_words && !rc; i++) {
        const char *word = text + words[i].off;
        size_t n = words[i].len;
        if (n > WC_MAX_WORD) {
            rc = bpe_word(t, &w, (const unsigned char *)word, n, out);
            continue;
        }
        if (c.n * 2 >= c.mask && c.n < WC_MAX_ENTRIES && (rc = wc_grow(&c))) break;
        uint64_t h = sl_tok_mix(sl_tok_hash(word, n, SL_TOK_HASH_SEED));
        uint32_t slot;
        int64_t hit = wc_find(&c, word, n, h, &slot);
        if (hit >= 0) {
            const struct wc_entry *e = &c.e[hit];
            for (uint32_t k = 0; k < e->ids_n && !rc; k++) rc = sl_ids_push(out, c.ids.v[e->ids_off + k]);
            continue;
        }
        size_t first = out->n;
        if ((rc = bpe_word(t, &w, (const unsigned char *)word, n, out))) break;
        if (c.n * 2 >= c.mask) continue; /* full: stop caching */
        struct wc_entry e = {word, (uint32_t)n, (uint32_t)c.ids.n, (uint32_t)(out->n - first)};
        for (size_t k = first; k < out->n && !rc; k++) rc = sl_ids_push(&c.ids, out->v[k]);
        c.e[c.n] = e;
        c.slots[slot] = (h >> 32 << 32) | ++c.n;
    }
    free(words);
    free(w.enc);
    free(w.sym);
    free(w.heap);
    free(c.slots);
    free(c.e);
    free(c.ids.v);
    return rc;
}
