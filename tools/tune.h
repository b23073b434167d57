/* `spotlight tune` (tools/cmd-tune.c): the sweep's configurations and what is measured and
 * planned for each; the measurement (tools/tune-measure.c) and the report — Pareto front,
 * recommendation, CSV, SVG (tools/tune-report.c). */
#ifndef SL_TOOLS_TUNE_H
#define SL_TOOLS_TUNE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "spotlight/context.h"
#include "spotlight/model.h"

enum tune_status { TUNE_NOT_MEASURED = 0, TUNE_OK, TUNE_FAILED };

struct tune_point {
    /* the configuration (the rest of sl_attn_params: its defaults, in struct tune_run) */
    enum sl_attn_mode mode;
    float budget;     /* fraction; 0 for dense */
    int32_t bits;     /* 0 for dense */
    int32_t block;    /* 1 = token-level selection */
    bool kv_file;     /* K/V in a store file (else RAM) */
    int64_t cache_mb; /* file tier: the store's RAM budget; 0 in RAM */
    /* core/mem-plan.h at the run's context: host RAM (weights, K/V, codes, buffers, the store's
     * cache), VRAM if --gpu were used (fast_total of the GPU plan), the store file; and the
     * longest context (a multiple of 256) whose plans fit the budgets */
    int64_t ram_bytes, vram_bytes, disk_bytes, max_ctx;
    bool fits;
    /* measured */
    enum tune_status status;
    double decode_ms;     /* median per decode token, as printed in the CSV */
    double prefill_tok_s; /* the prefill chunk at depth */
    double agree;         /* top-1 agreement with dense over the decoded positions, as printed */
    double kl;            /* mean KL(dense || this) in nats over the same positions */
    double attended;      /* share of earlier positions attended per sparse (layer, KV head) */
    double select_us, gather_us; /* per sparse decode layer */
    bool front, recommended;
};

/* What every point shares. */
struct tune_run {
    const sl_model *model;
    const char *model_path;
    const char *store;      /* the KV store the text is ingested into once */
    const int32_t *tokens;  /* the text's first n_stored tokens (BOS first) */
    int64_t n_ctx;          /* context of every point */
    int64_t n_stored;       /* = n_ctx - n_decode */
    int32_t n_prefill;      /* each point re-evaluates the last n_prefill stored tokens as one chunk */
    int32_t n_decode;       /* decode tokens timed and compared per point */
    int32_t n_threads, n_batch;
    struct sl_attn_params attn; /* sinks, window, min_tokens, dense_layers shared by every sparse point */
    /* the dense reference: its greedy tokens (n_decode) and log-softmax rows (n_decode, n_vocab) */
    int32_t *ref_tokens;
    float *ref_logp;
};

/* The spotlight hash file of `bits` bits for the model in the cache into buf: 0, or -1 when
 * there is none (nothing printed). */
int tune_hash_path(const char *model_path, int32_t bits, char *buf, size_t cap);

/* Ingests run->tokens into run->store (dense, K/V in RAM written through), unless the store
 * already holds them at this context: 0, or -1 after an error line. progress: a line on stderr. */
int tune_ingest(struct tune_run *run, bool progress, double *tok_s);

/* Measures one point on the stored text: resume, the prefill chunk, n_decode decode steps
 * teacher-forced on the reference's tokens (the dense point, measured first, makes them).
 * 0, or -1 after an error line (the point is marked failed). */
int tune_measure(struct tune_run *run, struct tune_point *pt);

/* Flags the Pareto front of the measured points (min decode_ms, min ram_bytes, max agree) and
 * the recommendation: the fastest fitting point whose agreement is at least min_agree times the
 * best fitting agreement. Returns the recommended index or -1 (none fits). */
int tune_select(struct tune_point *pts, int n, double min_agree);

/* A short description ("spotlight 64b 2% block 16, file 64 MiB") into buf. */
void tune_point_name(const struct tune_point *pt, char *buf, size_t cap);

/* PREFIX.csv and PREFIX.svg, atomically: 0 or -1 after an error line. */
int tune_write_csv(const char *path, const struct tune_run *run, const struct tune_point *pts, int n);
int tune_write_svg(const char *path, const struct tune_run *run, const char *model_name,
                   const struct tune_point *pts, int n);

/* The front as a table, to f. */
void tune_print_front(FILE *f, const struct tune_point *pts, int n);

#endif
