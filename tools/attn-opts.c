/* Shared sparse-attention options (see attn-opts.h). */
#include "tools/attn-opts.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "core/mem-plan.h"
#include "spotlight/error.h"
#include "tools/cli.h"

enum { O_ATTN = ATTN_OPT_FIRST, O_BUDGET, O_MINTOK, O_SINKS, O_WINDOW, O_DENSE, O_BITS, O_HASH, O_SPREFILL, O_KV,
       O_CACHE_MB, O_BLOCK, O_RESUME, O_RERANK, O_PREFETCH, O_GPU, O_VRAM, O_VRAM_CACHE, O_KV_OVERWRITE, O_RECOVER };

void attn_opts_init(struct attn_opts *a) {
    a->p = sl_attn_default_params(SL_ATTN_DENSE);
    a->hash = NULL;
    a->kv_path = NULL;
    a->kv_in_ram = false;
    a->kv_ram_budget = 0;
    a->kv_resume = false;
    a->kv_resume_keep = 0;
    a->kv_overwrite = false;
    a->kv_recover = false;
    a->gpu = false;
    a->gpu_device = 0;
    a->vram_budget = 0;
    a->vram_cache = 0;
}

void attn_opts_context(const struct attn_opts *a, struct sl_context_params *cp) {
    cp->kv_path = a->kv_path;
    cp->kv_in_ram = a->kv_in_ram;
    cp->kv_ram_budget = a->kv_ram_budget;
    cp->kv_resume = a->kv_resume;
    cp->kv_resume_keep = a->kv_resume_keep;
    cp->kv_overwrite = a->kv_overwrite;
    cp->kv_recover = a->kv_recover;
    cp->gpu = a->gpu;
    cp->gpu_device = a->gpu_device;
    cp->kv_device_cache = a->vram_cache;
}

void attn_opts_table(const struct option *base, int n_base, struct option *opts) {
    memcpy(opts, base, sizeof *base * (size_t)n_base);
    int n = n_base;
    static const struct option mine[ATTN_OPT_COUNT] = {
        {"attn", required_argument, 0, O_ATTN},         {"budget", required_argument, 0, O_BUDGET},
        {"min-tokens", required_argument, 0, O_MINTOK}, {"sinks", required_argument, 0, O_SINKS},
        {"window", required_argument, 0, O_WINDOW},     {"dense-layers", required_argument, 0, O_DENSE},
        {"bits", required_argument, 0, O_BITS},         {"hash", required_argument, 0, O_HASH},
        {"sparse-prefill", no_argument, 0, O_SPREFILL}, {"kv", required_argument, 0, O_KV},
        {"cache-mb", required_argument, 0, O_CACHE_MB}, {"block", required_argument, 0, O_BLOCK},
        {"resume", optional_argument, 0, O_RESUME}, {"rerank", required_argument, 0, O_RERANK},
        {"prefetch", no_argument, 0, O_PREFETCH}, {"gpu", optional_argument, 0, O_GPU},
        {"vram-mb", required_argument, 0, O_VRAM}, {"vram-cache-mb", required_argument, 0, O_VRAM_CACHE},
        {"kv-overwrite", no_argument, 0, O_KV_OVERWRITE}, {"recover", no_argument, 0, O_RECOVER}};
    for (int i = 0; i < ATTN_OPT_COUNT; i++) opts[n++] = mine[i];
    opts[n] = (struct option){0, 0, 0, 0};
}

const char *attn_mode_name(enum sl_attn_mode m) {
    static const char *const names[] = {"dense", "spotlight", "simhash", "topk-exact"};
    return m >= SL_ATTN_DENSE && m <= SL_ATTN_TOPK_EXACT ? names[m] : "?";
}

int attn_opts_parse(const char *cmd, int c, const char *arg, struct attn_opts *a) {
    int64_t v;
    switch (c) {
    case O_ATTN:
        for (int m = SL_ATTN_DENSE; m <= SL_ATTN_TOPK_EXACT; m++)
            if (!strcmp(arg, attn_mode_name((enum sl_attn_mode)m))) {
                a->p.mode = (enum sl_attn_mode)m;
                return 0;
            }
        fprintf(stderr, "spotlight %s: --attn must be dense, spotlight, simhash or topk-exact\n", cmd);
        return 2;
    case O_BUDGET: {
        char buf[64];
        size_t l = strlen(arg);
        bool pct = l > 0 && l < sizeof buf && arg[l - 1] == '%';
        snprintf(buf, sizeof buf, "%.*s", (int)(pct ? l - 1 : l), arg);
        if (cli_parse_f32(cmd, "--budget", buf, pct ? 1e-4f : 1e-6f, pct ? 100.0f : 1.0f, &a->p.budget)) return 2;
        if (pct) a->p.budget /= 100.0f;
        return 0;
    }
    case O_MINTOK: return cli_parse_i64(cmd, "--min-tokens", arg, 0, INT32_MAX, &a->p.min_tokens) ? 2 : 0;
    case O_SINKS:
        if (cli_parse_i64(cmd, "--sinks", arg, 0, 1 << 20, &v)) return 2;
        a->p.n_sink = (int32_t)v;
        return 0;
    case O_WINDOW:
        if (cli_parse_i64(cmd, "--window", arg, 0, 1 << 20, &v)) return 2;
        a->p.n_window = (int32_t)v;
        return 0;
    case O_DENSE:
        if (cli_parse_i64(cmd, "--dense-layers", arg, 0, 4096, &v)) return 2;
        a->p.dense_layers = (int32_t)v;
        return 0;
    case O_BITS:
        if (cli_parse_i64(cmd, "--bits", arg, 32, 1024, &v)) return 2;
        if (v % 32) {
            fprintf(stderr, "spotlight %s: --bits must be a multiple of 32\n", cmd);
            return 2;
        }
        a->p.bits = (int32_t)v;
        return 0;
    case O_HASH: a->hash = arg; return 0;
    case O_SPREFILL: a->p.sparse_prefill = true; return 0;
    case O_KV:
        a->kv_in_ram = !strncmp(arg, "ram", 3);
        if (!strcmp(arg, "ram")) a->kv_path = NULL;
        else if (!strncmp(arg, "file:", 5) && arg[5]) a->kv_path = arg + 5;
        else if (!strncmp(arg, "ram:", 4) && arg[4]) a->kv_path = arg + 4;
        else {
            fprintf(stderr, "spotlight %s: --kv must be ram, ram:PATH or file:PATH\n", cmd);
            return 2;
        }
        return 0;
    case O_RESUME:
        a->kv_resume = true;
        return arg && cli_parse_i64(cmd, "--resume", arg, 1, INT64_MAX, &a->kv_resume_keep) ? 2 : 0;
    case O_PREFETCH: a->p.prefetch = true; return 0;
    case O_KV_OVERWRITE: a->kv_overwrite = true; return 0;
    case O_RECOVER: a->kv_recover = true; return 0;
    case O_GPU:
        a->gpu = true;
        if (arg && cli_parse_i64(cmd, "--gpu", arg, 0, 1023, &v)) return 2;
        a->gpu_device = arg ? (int32_t)v : 0;
        return 0;
    case O_VRAM:
        if (cli_parse_i64(cmd, "--vram-mb", arg, 1, 1 << 24, &v)) return 2;
        a->vram_budget = v << 20;
        return 0;
    case O_VRAM_CACHE:
        if (cli_parse_i64(cmd, "--vram-cache-mb", arg, 0, 1 << 24, &v)) return 2;
        a->vram_cache = v ? v << 20 : -1;
        return 0;
    case O_RERANK:
        if (cli_parse_i64(cmd, "--rerank", arg, 1, 64, &v)) return 2;
        a->p.rerank = (int32_t)v;
        return 0;
    case O_BLOCK:
        if (cli_parse_i64(cmd, "--block", arg, 1, 256, &v)) return 2;
        if (v & (v - 1)) {
            fprintf(stderr, "spotlight %s: --block must be a power of two\n", cmd);
            return 2;
        }
        a->p.block = (int32_t)v;
        return 0;
    case O_CACHE_MB:
        if (cli_parse_i64(cmd, "--cache-mb", arg, 1, 1 << 24, &v)) return 2;
        a->kv_ram_budget = v << 20;
        return 0;
    default: return -1;
    }
}

void attn_opts_usage(FILE *f) {
    fprintf(f, "  sparse attention (decode; prefill too with --sparse-prefill):\n"
               "      --attn MODE         dense (default), spotlight, simhash or topk-exact\n"
               "      --budget B          share of the context attended: 2%% or 0.02 (default 2%%)\n"
               "      --min-tokens N      attend at least N selected tokens (default 64)\n"
               "      --sinks N           first tokens always attended (default 4)\n"
               "      --window N          most recent tokens always attended (default 64)\n"
               "      --dense-layers N    the first N layers stay dense (default 2)\n"
               "      --bits B            simhash code bits; spotlight: which hash file (default 64)\n"
               "      --hash FILE         spotlight hash file (default <cache>/hash/<model file>.b<B>.slhash,\n"
               "                          made by tools/make-hash.sh)\n"
               "      --rerank R          the hash picks R x the budget, exact attention over those keeps\n"
               "                          the budget (default 1: the hash alone)\n"
               "      --block N           select blocks of N positions (a power of two) instead of tokens\n"
               "                          (default 1; 16 matches the KV store's blocks)\n"
               "      --sparse-prefill    prefill chunks attend sparsely too (inputs beyond dense reach)\n"
               "      --kv ram|file:PATH  where K/V live: RAM (default), or a store file read with io_uring\n"
               "                          behind a block cache (spotlight/simhash; implies --sparse-prefill)\n"
               "      --kv ram:PATH       K/V in RAM, written through to a store file that --resume reopens\n"
               "                          (any --attn)\n"
               "      --cache-mb N        RAM the file store may use, cache included (default 256)\n"
               "      --prefetch          with a store: read the next layer's previous selection ahead\n"
               "                          (for slow storage; off by default)\n"
               "      --resume[=N]        reopen the --kv store a previous run left and continue after its\n"
               "                          tokens (the prompt is appended, without BOS; same attention options);\n"
               "                          =N: after its first N tokens, dropping the rest from the store.\n"
               "                          Each prefill chunk is durable when committed, decode tokens at\n"
               "                          least once a second: a crashed run resumes from its last one\n"
               "      --kv-overwrite      replace a store already at the --kv path (without it, or --resume,\n"
               "                          an existing store is refused; nothing but a store or an empty file is\n"
               "                          ever replaced)\n"
               "      --recover           with --resume: a store whose newest header is damaged is refused;\n"
               "                          this restores it (a one-bit repair that checks out) or goes back to\n"
               "                          its previous commit point, overwriting the damaged state\n"
               "      --gpu[=N]           run on CUDA device N (default 0): weights in VRAM; dense keeps\n"
               "                          all K/V there, spotlight/simhash only the key codes (the K/V in\n"
               "                          pinned host memory, or the --kv file; decode fetches what it selects)\n"
               "      --vram-mb N         with --gpu: check the run fits N MiB of VRAM first (weights, K/V,\n"
               "                          codes, buffers), else say how long a context would fit\n"
               "      --vram-cache-mb N   with --gpu and sparse attention: VRAM block cache for fetched K/V\n"
               "                          (default 64; 0: none)\n");
}

int attn_opts_apply(const char *cmd, struct attn_opts *a, sl_context *ctx, const char *model_path) {
    if (a->kv_resume && !a->kv_path) {
        fprintf(stderr, "spotlight %s: --resume needs --kv file:PATH or ram:PATH\n", cmd);
        return -1;
    }
    if (a->kv_overwrite && (!a->kv_path || a->kv_resume)) {
        fprintf(stderr, "spotlight %s: --kv-overwrite needs --kv file:PATH or ram:PATH, and no --resume\n", cmd);
        return -1;
    }
    if (a->kv_recover && !a->kv_resume) {
        fprintf(stderr, "spotlight %s: --recover needs --resume\n", cmd);
        return -1;
    }
    if (a->p.mode == SL_ATTN_DENSE && !a->kv_path) return 0;
    if (a->kv_path && !a->kv_in_ram && a->p.mode != SL_ATTN_SPOTLIGHT && a->p.mode != SL_ATTN_SIMHASH) {
        fprintf(stderr, "spotlight %s: --kv file:PATH needs --attn spotlight or simhash (--kv ram:PATH takes any)\n",
                cmd);
        return -1;
    }
    char hash[8400], cache[4096];
    if (a->p.mode == SL_ATTN_SPOTLIGHT) {
        if (a->hash) snprintf(hash, sizeof hash, "%s", a->hash);
        else {
            const char *base = strrchr(model_path, '/') ? strrchr(model_path, '/') + 1 : model_path;
            if (cli_model_dir(cache, sizeof cache) != 0) {
                fprintf(stderr, "spotlight %s: no cache directory for the hash file (give --hash)\n", cmd);
                return -1;
            }
            snprintf(hash, sizeof hash, "%s/hash/%.255s.b%d.slhash", cache, base, a->p.bits);
            if (access(hash, R_OK) != 0) {
                fprintf(stderr, "spotlight %s: no hash file %s; make it with tools/make-hash.sh --bits %d, "
                                "or give --hash\n", cmd, hash, a->p.bits);
                return -1;
            }
        }
        a->p.hash_path = hash;
    }
    int rc = sl_context_set_attention(ctx, &a->p);
    a->p.hash_path = NULL;
    if (rc) {
        cli_report(cmd, rc); /* the mode, its hash or its KV store */
        return -1;
    }
    return 0;
}

int attn_opts_check_memory(const char *cmd, const struct attn_opts *a, const sl_model *m,
                           const struct sl_context_params *cp) {
    if (!a->vram_budget) return 0;
    if (!a->gpu) {
        fprintf(stderr, "spotlight %s: --vram-mb needs --gpu\n", cmd);
        return -1;
    }
    struct sl_mem_plan_params p = {.gpu = true, .n_ctx = cp->n_ctx, .n_batch = cp->n_batch, .attn = &a->p,
                                   .kv_file = a->kv_path && !a->kv_in_ram, .cache_bytes = a->kv_ram_budget,
                                   .device_cache_bytes = a->vram_cache};
    struct sl_mem_plan pl;
    if (sl_mem_plan_compute(m, &p, &pl)) {
        fprintf(stderr, "spotlight %s: %s\n", cmd, sl_error_detail());
        return -1;
    }
    if (pl.fast_total <= a->vram_budget) return 0;
    const int64_t fit = sl_mem_plan_max_ctx(m, &p, a->vram_budget, INT64_C(1) << 40);
    const double mib = 1.0 / (1 << 20);
    char fits[64];
    if (fit) snprintf(fits, sizeof fits, "at most %lld tokens (-c %lld)", (long long)fit, (long long)fit);
    else snprintf(fits, sizeof fits, "not even 256 tokens");
    fprintf(stderr, "spotlight %s: %lld tokens need %.0f MiB of VRAM (weights %.0f, K/V %.0f, codes %.0f, buffers %.0f); "
                    "%lld MiB holds %s\n",
            cmd, (long long)p.n_ctx, pl.fast_total * mib, pl.weights * mib, pl.kv_fast * mib, pl.codes * mib,
            pl.work * mib, (long long)(a->vram_budget >> 20), fits);
    return -1;
}
