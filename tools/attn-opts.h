/* The sparse-attention options every command that evaluates the model shares (generate,
 * perplexity, ...): parsing and applying them to a context.
 *   --attn dense|spotlight|simhash|topk-exact  --budget 2%|0.02  --min-tokens N  --sinks N
 *   --window N  --dense-layers N  --bits B  --hash FILE  --block N  --rerank R  --sparse-prefill
 *   --kv ram|ram:PATH|file:PATH  --cache-mb N  --resume[=N]  --kv-overwrite  --recover  --prefetch
 *                                                                 (where K/V live: context params, see context.h)
 *   --gpu[=N]  --vram-mb N  --vram-cache-mb N                     (the backend: context params; a memory plan) */
#ifndef SL_TOOLS_ATTN_OPTS_H
#define SL_TOOLS_ATTN_OPTS_H

#include <getopt.h>
#include <stdio.h>

#include "spotlight/context.h"

/* getopt_long codes of the options: ATTN_OPT_FIRST .. ATTN_OPT_FIRST + ATTN_OPT_COUNT - 1. */
#define ATTN_OPT_FIRST 1000
#define ATTN_OPT_COUNT 20

struct attn_opts {
    struct sl_attn_params p;
    const char *hash;      /* --hash, else the cache's file for the model and --bits */
    const char *kv_path;   /* --kv file:PATH or ram:PATH; NULL for --kv ram (default) */
    bool kv_in_ram;        /* --kv ram:PATH: K/V in RAM, the file a write-through copy */
    int64_t kv_ram_budget; /* --cache-mb, in bytes; 0: the store's default */
    bool kv_resume;        /* --resume */
    int64_t kv_resume_keep; /* --resume=N: N, else 0 (all) */
    bool kv_overwrite;      /* --kv-overwrite: replace a store already at the path */
    bool kv_recover;        /* --recover: with --resume, restore or roll back a damaged store */
    bool gpu;               /* --gpu[=N]: the CUDA backend on device gpu_device */
    int32_t gpu_device;
    int64_t vram_budget;    /* --vram-mb, in bytes; 0: no check */
    int64_t vram_cache;     /* --vram-cache-mb, in bytes: the GPU's block cache for fetched K/V
                               (0: the default 64 MiB; -1: none) */
};

void attn_opts_init(struct attn_opts *a);
/* A command's getopt_long table: its n_base options, then these, then the terminator, into
 * opts (room for n_base + ATTN_OPT_COUNT + 1). */
void attn_opts_table(const struct option *base, int n_base, struct option *opts);
/* Handles code c with optarg: 0 done, 2 bad value (error printed), -1 not one of ours. */
int attn_opts_parse(const char *cmd, int c, const char *arg, struct attn_opts *a);
/* The help lines. */
void attn_opts_usage(FILE *f);
/* Copies --kv and --cache-mb into context parameters (before sl_context_create). */
void attn_opts_context(const struct attn_opts *a, struct sl_context_params *cp);
/* Applies the mode to a fresh context (no-op for dense): 0, or -1 after an error line. */
int attn_opts_apply(const char *cmd, struct attn_opts *a, sl_context *ctx, const char *model_path);
const char *attn_mode_name(enum sl_attn_mode m);
/* --vram-mb: 0 when the run's memory plan (core/mem-plan.h) fits the budget (or none was
 * given); else -1 after a line saying what it needs and what context would fit. */
int attn_opts_check_memory(const char *cmd, const struct attn_opts *a, const sl_model *m,
                           const struct sl_context_params *cp);

#endif
