/* bench-kv-gather's parts (see the question and method at the top of bench-kv-gather.c):
 *   bench-kv-gather.c   options, the memcpy limit, the host tier, main
 *   kv-gather-file.c    the file tier: cold and warm gathers against the raw io_uring reader
 *   kv-gather-util.c    what both tiers use: repetition and medians, synthetic rows, the CSV,
 *                       the raw reader, selections and gathers
 * Benches only: errors end the process (die), nothing here is a library API. */
#ifndef SL_BENCH_KV_GATHER_H
#define SL_BENCH_KV_GATHER_H

#include <liburing.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "spotlight/kv-store.h"
#include "storage/kv-format.h"

#define MAX_LIST 16
#define MAX_REPS 400
#define HUGE_BYTES ((size_t)2 << 20)

enum pattern { PAT_MIX, PAT_RANDOM, PAT_BLOCK, PAT_N };
extern const char *const k_pat_name[PAT_N];

struct kvg_opts {
    int64_t tokens[MAX_LIST];
    int n_tokens;
    int64_t blocks[MAX_LIST];
    int n_blocks;
    double fracs[MAX_LIST];
    int n_fracs;
    int64_t qds[MAX_LIST];
    int n_qds;
    bool pat[PAT_N];
    bool host, file, sqpoll, keep, extras;
    const char *dir, *out;
    int reps;
    double max_sec, cluster;
    int64_t budget; /* cold ram_budget; 0: computed */
};
extern struct kvg_opts opt;
extern FILE *g_csv;
extern struct sl_kv_shape g_shape;  /* the default model's: 30 layers, 3 KV heads, dim 64, f16 */
extern char *g_kout, *g_vout;       /* output rows of all heads, contiguous */

/* ---- repetition, memory, synthetic rows ---------------------------------------------------- */
struct timing {
    double med, min, max;
    int n;
};
struct timing summarize(double *t, int n); /* sorts t */
/* Keeps repeating until --reps are done (and at least min_sec spent, for sub-millisecond
 * work); stops early past --max-sec once 3 are done. */
bool more_reps(int done, double spent, double min_sec);
int cmp_u64(const void *a, const void *b);
uint64_t splitmix(uint64_t *s);
void *xalloc(size_t bytes);      /* 4 KiB-aligned; exits when out of memory */
void *xalloc_huge(size_t bytes); /* a multiple of 2 MiB, 2 MiB-aligned, THP advised; munmap it */
void die(const char *what, int rc);
int64_t row_bytes(void);
/* Synthetic K/V: the row of (layer, pos, head, k or v) is a pure function of those, so any
 * gathered row can be checked without keeping the data. */
void fill_row(void *dst, int32_t layer, int64_t pos, int32_t head, int kv);
int64_t peak_rss_bytes(void);

/* ---- CSV: one row per measurement ---------------------------------------------------------- */
#define CSV_HEADER                                                                               \
    "kind,tier,tokens,block_tokens,pattern,frac,qd,cache,rows,useful_bytes,need_bytes,"          \
    "disk_bytes,reps,us_med,us_min,us_max,useful_gbs,need_gbs,disk_gbs,limit_gbs,ratio,"         \
    "hit_rate,ram_bytes,ram_budget,peak_rss,note\n"
struct row {
    const char *kind, *tier, *pattern, *cache, *note;
    int64_t tokens, block_tokens, qd;
    double frac;
    double rows, useful_bytes, need_bytes, disk_bytes; /* per gather (means over reps) */
    struct timing t;
    double limit_gbs, ratio, hit_rate;
    int64_t ram_bytes, ram_budget;
};
void emit(const struct row *r);

/* ---- the raw io_uring reader: O_DIRECT, registered buffer and file, qd reads in flight ---- */
struct raw_reader {
    struct io_uring ring;
    int fd, qd;
    size_t len;
    char *buf; /* qd slots of len bytes, registered */
    size_t buf_bytes;
    int *free_slot;
};
int raw_open(struct raw_reader *r, const char *path, int qd, size_t len, bool sqpoll);
void raw_close(struct raw_reader *r);
/* Reads len bytes at each offset, keeping qd reads in flight; seconds, or < 0 on an error. */
double raw_read(struct raw_reader *r, const uint64_t *off, int64_t n);

/* ---- selections and gathers ---------------------------------------------------------------- */
/* One layer's selection: per head, or (union) every head gets the union of the heads'. */
struct sel {
    int64_t *idx[8];
    int64_t n[8];
    int32_t layer;
};
/* Draws one head's selection of about m positions out of [0, n) into out (sorted); returns the
 * count. mark: n zero bytes, left zeroed. */
int64_t draw_sel(enum pattern pat, int64_t n, int64_t bt, int64_t m, uint64_t *rng, uint8_t *mark,
                 int64_t *out);
void draw_layer(struct sel *s, enum pattern pat, int64_t n, int64_t bt, int64_t m, uint64_t seed,
                int32_t layer, bool uni, uint8_t *mark);
int64_t sel_rows(const struct sel *s);
/* File offsets of the distinct blocks the selection touches, in descriptor order (head by
 * head, ascending: the request stream the store is handed) or sorted by offset across heads
 * (then the block layer may merge one block's heads, which lie side by side in the file, into
 * one larger request); returns the count. */
int64_t sel_blocks(const struct sel *s, const struct sl_kv_layout *lay, int64_t bt, uint64_t *off,
                   bool sorted);
int store_gather(sl_kv_store_t st, const struct sel *s); /* into g_kout, g_vout */
/* Rows in g_kout/g_vout that differ from the generator (flat_k == NULL) or the flat arrays. */
int64_t verify(const struct sel *s, const char *flat_k, const char *flat_v, int64_t n);
/* The plain-loop limit: the same rows out of flat (layer, pos, head, dim) K and V arrays. */
void flat_gather(const struct sel *s, const char *fk, const char *fv, int64_t n);
int32_t rep_layer(int r, int shift); /* consecutive reps use different layers */
uint64_t cfg_seed(int64_t n, int64_t bt, int pat, double frac, int64_t qd, int r, int salt);

/* ---- the file tier (kv-gather-file.c) ------------------------------------------------------ */
void run_file(int64_t n, const char *dir, struct sel *s, uint8_t *mark);

#endif
