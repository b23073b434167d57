/* `spotlight tune`: the capacity-vs-latency tuner. For a model, a context length and memory
 * budgets it sweeps attention configurations (dense, Spotlight, SimHash; budget, code bits,
 * selection granularity; K/V in RAM or in a store file with a cache), plans each one's memory
 * per tier (core/mem-plan.h), measures decode latency and agreement with dense on real text
 * (tools/tune-measure.c), and reports the Pareto front, a recommended `spotlight generate` line,
 * PREFIX.csv and PREFIX.svg (tools/tune-report.c). */
#include <dirent.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "core/mem-plan.h"
#include "spotlight/error.h"
#include "spotlight/tokenizer.h"
#include "core/code-file.h"
#include "tools/attn-opts.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/out-file.h"
#include "tools/tune.h"

#define MAX_AXIS 8

struct axis {
    double v[MAX_AXIS];
    int n;
};

struct tune_opts {
    const char *model, *file, *prefix, *store;
    int64_t n_ctx, ram_mb, disk_mb, vram_mb, n_decode, n_prefill;
    int32_t n_threads;
    bool quick;
    double min_agree;
    struct axis budgets, bits, sim_bits, blocks, cache_mb; /* budgets in percent */
};

static void usage(FILE *f) {
    fprintf(f,
            "usage: spotlight tune [-m MODEL] [-f TEXT] --ctx N [--ram-mb N] [--disk-mb N] [--vram-mb N] [--quick]\n"
            "                      [-t THREADS] [-o PREFIX] [sweep options]\n"
            "Sweeps attention configurations at a context length, measures each on real text, and prints\n"
            "the Pareto front (decode latency, host RAM, agreement with dense) and the fastest configuration\n"
            "that fits the budgets, as a `spotlight generate` command line.\n"
            "  -m, --model FILE      GGUF model (default: the default model in the cache)\n"
            "  -f, --file TEXT       text to measure on, at least --ctx tokens (default: the held-out corpus,\n"
            "                        tools/fetch-corpus.sh)\n"
            "  -c, --ctx N           context length to tune for, up to the model's trained context (the text\n"
            "                        is ingested densely); required unless --quick (then 1024)\n"
            "      --ram-mb N        host RAM budget in MiB (default: the machine's memory)\n"
            "      --disk-mb N       disk budget for a KV store file in MiB (default: free space at PREFIX)\n"
            "      --vram-mb N       VRAM budget in MiB: also check each configuration's GPU memory plan\n"
            "      --min-agree A     recommend the fastest fitting configuration whose top-1 agreement is at\n"
            "                        least A times the best fitting one's (default 0.9)\n"
            "      --quick           a tiny sweep for CI: 11 points at 1024 tokens, 8 decode tokens\n"
            "  -t, --threads N       threads (default: physical cores)\n"
            "  -o, --out PREFIX      write PREFIX.csv and PREFIX.svg (default: tune)\n"
            "      --store PATH      the KV store the text is ingested into once (default PREFIX.slkv, removed\n"
            "                        at the end); a given PATH is kept and reused while it holds the same text\n"
            "  sweep (lists are comma-separated):\n"
            "      --budgets LIST    budgets in percent (default 1,2,5,10; --quick 5,10)\n"
            "      --bits LIST       spotlight code bits, those with a hash file in the cache (default 32,64,128)\n"
            "      --simhash-bits L  simhash code bits, token-level, K/V in RAM (default 64,256)\n"
            "      --blocks LIST     selection granularity, 1 = tokens (default 1,16,64; --quick 1,16)\n"
            "      --cache-mb LIST   file tier: the store's RAM in MiB (default 32,256; --quick 32)\n"
            "      --decode N        decode tokens timed and compared per point (default 32; --quick 8)\n"
            "      --prefill N       prefill chunk timed per point, the last N tokens (default 64; --quick 32)\n"
            "Points: dense; spotlight at every bits x budget x block with K/V in RAM; simhash at every bits x\n"
            "budget; the file tier at every budget x block x cache with the 64-bit hash (else the first).\n"
            "Measured per point: decode ms/token (median of the decode steps, CLOCK_MONOTONIC), prefill tok/s\n"
            "of the chunk at depth, and against dense on the same positions (fed the dense run's greedy\n"
            "tokens): top-1 agreement and mean KL(dense || sparse). Attention-mass recall is not measured:\n"
            "the engine does not expose its selections' attention (spotlight eval-retrieval measures recall\n"
            "on q/k dumps). Memory per tier comes from the memory plan (core/mem-plan.h). When nothing fits\n"
            "the budgets, nothing is measured: the CSV lists every configuration's memory, exit status 1.\n");
}

static int parse_axis(const char *opt, const char *s, double lo, double hi, bool integer, struct axis *a) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    a->n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *end;
        double v = strtod(tok, &end);
        if (a->n == MAX_AXIS || *end || end == tok || !(v >= lo && v <= hi) || (integer && v != floor(v))) {
            fprintf(stderr, "spotlight tune: %s takes up to %d comma-separated %s in [%g, %g], got '%s'\n", opt,
                    MAX_AXIS, integer ? "integers" : "numbers", lo, hi, s);
            return -1;
        }
        a->v[a->n++] = v;
    }
    if (!a->n) {
        fprintf(stderr, "spotlight tune: %s needs at least one value\n", opt);
        return -1;
    }
    return 0;
}

static int parse_args(int argc, char **argv, struct tune_opts *o) {
    enum { O_RAM = 256, O_DISK, O_VRAM, O_AGREE, O_QUICK, O_BUDGETS, O_BITS, O_SIMBITS, O_BLOCKS, O_CACHE, O_DECODE,
           O_PREFILL, O_STORE };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"file", required_argument, 0, 'f'},
        {"ctx", required_argument, 0, 'c'}, {"ctx-size", required_argument, 0, 'c'},
        {"threads", required_argument, 0, 't'}, {"out", required_argument, 0, 'o'},
        {"ram-mb", required_argument, 0, O_RAM}, {"disk-mb", required_argument, 0, O_DISK},
        {"vram-mb", required_argument, 0, O_VRAM}, {"min-agree", required_argument, 0, O_AGREE},
        {"quick", no_argument, 0, O_QUICK}, {"budgets", required_argument, 0, O_BUDGETS},
        {"bits", required_argument, 0, O_BITS}, {"simhash-bits", required_argument, 0, O_SIMBITS},
        {"blocks", required_argument, 0, O_BLOCKS}, {"cache-mb", required_argument, 0, O_CACHE},
        {"decode", required_argument, 0, O_DECODE}, {"prefill", required_argument, 0, O_PREFILL},
        {"store", required_argument, 0, O_STORE}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->prefix = "tune";
    o->min_agree = 0.9;
    struct axis budgets = {{1, 2, 5, 10}, 4}, bits = {{32, 64, 128}, 3}, sim = {{64, 256}, 2},
                blocks = {{1, 16, 64}, 3}, cache = {{32, 256}, 2};
    bool given[5] = {0};
    optind = 1;
    opterr = 0;
    int c;
    int64_t v;
    float fv;
    while ((c = getopt_long(argc, argv, "m:f:c:t:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'f': o->file = optarg; break;
        case 'o': o->prefix = optarg; break;
        case O_STORE: o->store = optarg; break;
        case O_QUICK: o->quick = true; break;
        case 'c': if (cli_parse_i64("tune", "--ctx", optarg, 512, INT32_MAX, &o->n_ctx)) return 2; break;
        case 't': if (cli_parse_i64("tune", "-t", optarg, 1, 1024, &v)) return 2; o->n_threads = (int32_t)v; break;
        case O_RAM: if (cli_parse_i64("tune", "--ram-mb", optarg, 1, INT64_C(1) << 30, &o->ram_mb)) return 2; break;
        case O_DISK: if (cli_parse_i64("tune", "--disk-mb", optarg, 1, INT64_C(1) << 40, &o->disk_mb)) return 2; break;
        case O_VRAM: if (cli_parse_i64("tune", "--vram-mb", optarg, 1, INT64_C(1) << 30, &o->vram_mb)) return 2; break;
        case O_DECODE: if (cli_parse_i64("tune", "--decode", optarg, 2, 256, &o->n_decode)) return 2; break;
        case O_PREFILL: if (cli_parse_i64("tune", "--prefill", optarg, 1, 256, &o->n_prefill)) return 2; break;
        case O_AGREE:
            if (cli_parse_f32("tune", "--min-agree", optarg, 0, 1, &fv)) return 2;
            o->min_agree = strtod(optarg, NULL);
            break;
        case O_BUDGETS: if (parse_axis("--budgets", optarg, 0.01, 100, false, &budgets)) return 2; given[0] = true; break;
        case O_BITS: if (parse_axis("--bits", optarg, 32, 1024, true, &bits)) return 2; given[1] = true; break;
        case O_SIMBITS: if (parse_axis("--simhash-bits", optarg, 32, 1024, true, &sim)) return 2; given[2] = true; break;
        case O_BLOCKS: if (parse_axis("--blocks", optarg, 1, 256, true, &blocks)) return 2; given[3] = true; break;
        case O_CACHE: if (parse_axis("--cache-mb", optarg, 1, 1 << 20, true, &cache)) return 2; given[4] = true; break;
        case 'h': usage(stdout); return 1;
        default:
            fprintf(stderr, "spotlight tune: unknown or incomplete option '%s' (see --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "spotlight tune: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    for (int i = 0; i < bits.n + sim.n; i++)
        if ((int)(i < bits.n ? bits.v[i] : sim.v[i - bits.n]) % 32) {
            fprintf(stderr, "spotlight tune: code bits must be multiples of 32\n");
            return 2;
        }
    for (int i = 0; i < blocks.n; i++)
        if ((int)blocks.v[i] & ((int)blocks.v[i] - 1)) {
            fprintf(stderr, "spotlight tune: --blocks must be powers of two\n");
            return 2;
        }
    if (!o->n_ctx && !o->quick) {
        fprintf(stderr, "spotlight tune: give the context length to tune for with --ctx N (or --quick)\n");
        return 2;
    }
    if (o->quick) { /* the CI sweep, unless an axis is given */
        if (!o->n_ctx) o->n_ctx = 1024;
        if (!given[0]) budgets = (struct axis){{5, 10}, 2};
        if (!given[1]) bits = (struct axis){{64}, 1};
        if (!given[2]) sim = (struct axis){{64}, 1};
        if (!given[3]) blocks = (struct axis){{1, 16}, 2};
        if (!given[4]) cache = (struct axis){{32}, 1};
    }
    if (!o->n_decode) o->n_decode = o->quick ? 8 : 32;
    if (!o->n_prefill) o->n_prefill = o->quick ? 32 : 64;
    if (o->n_ctx < 4 * (o->n_decode + o->n_prefill)) {
        fprintf(stderr, "spotlight tune: --ctx %" PRId64 " is too short for %" PRId64 " prefill and %" PRId64
                        " decode tokens per point\n", o->n_ctx, o->n_prefill, o->n_decode);
        return 2;
    }
    o->budgets = budgets, o->bits = bits, o->sim_bits = sim, o->blocks = blocks, o->cache_mb = cache;
    return 0;
}

/* The text: -f, or the held-out corpus files in name order, up to `want` bytes (a cut moved
 * back to a UTF-8 character boundary). NULL after an error line. */
static char *read_text(const struct tune_opts *o, size_t want, size_t *len) {
    if (o->file) {
        char *t = cli_read_file("tune", o->file, len);
        if (t && *len > want) { /* more than enough: tokenize no more than is needed */
            while (want > 0 && ((unsigned char)t[want] & 0xc0) == 0x80) want--;
            t[*len = want] = '\0';
        }
        return t;
    }
    char dir[4096], path[8192];
    if (cli_model_dir(dir, sizeof dir) != 0) {
        fprintf(stderr, "spotlight tune: no -f TEXT and no cache directory for the corpus\n");
        return NULL;
    }
    strncat(dir, "/corpus/heldout", sizeof dir - strlen(dir) - 1);
    struct dirent **names = NULL;
    int n = scandir(dir, &names, NULL, alphasort);
    char *buf = malloc(want + 1);
    size_t got = 0;
    bool bad = false;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(names[i]->d_name);
        if (buf && !bad && got < want && l > 4 && !strcmp(names[i]->d_name + l - 4, ".txt")) {
            snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
            int fd = cli_open_input("tune", path); /* a FIFO is refused, not waited on */
            FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
            if (f) {
                got += fread(buf + got, 1, want - got, f);
                fclose(f);
            } else {
                if (fd >= 0) close(fd);
                bad = true;
            }
        }
        free(names[i]);
    }
    if (bad) {
        free(names);
        free(buf);
        return NULL;
    }
    free(names);
    while (buf && got > 0 && got == want && ((unsigned char)buf[got] & 0xc0) == 0x80) got--;
    if (!buf || got == 0) {
        free(buf);
        fprintf(stderr, "spotlight tune: no -f TEXT and no held-out corpus in %s (run tools/fetch-corpus.sh)\n", dir);
        return NULL;
    }
    buf[got] = '\0';
    *len = got;
    return buf;
}

/* Memory plans of a point at n_ctx: host RAM and disk on the CPU, VRAM on the GPU. */
static int plan_point(const sl_model *m, const struct tune_run *run, const struct tune_point *pt, int64_t n_ctx,
                      int64_t *ram, int64_t *vram, int64_t *disk) {
    struct sl_attn_params ap = run->attn;
    ap.mode = pt->mode, ap.budget = pt->mode == SL_ATTN_DENSE ? 1.0f : pt->budget, ap.bits = pt->bits ? pt->bits : 64;
    ap.block = pt->block;
    struct sl_mem_plan_params p = {.gpu = false, .n_ctx = n_ctx, .n_batch = (int32_t)(run->n_batch < n_ctx ? run->n_batch : n_ctx),
                                   .attn = &ap, .kv_file = pt->kv_file, .cache_bytes = pt->cache_mb << 20};
    struct sl_mem_plan cpu, gpu;
    int rc = sl_mem_plan_compute(m, &p, &cpu);
    p.gpu = true;
    if (!rc) rc = sl_mem_plan_compute(m, &p, &gpu);
    if (rc) return rc;
    *ram = cpu.fast_total + cpu.host_kv, *vram = gpu.fast_total, *disk = cpu.disk;
    return 0;
}

struct budgets {
    int64_t ram, disk, vram; /* bytes; vram 0: unchecked */
};

static bool fits(const struct budgets *b, int64_t ram, int64_t vram, int64_t disk) {
    return ram <= b->ram && disk <= b->disk && (!b->vram || vram <= b->vram);
}

static int plan_all(const sl_model *m, const struct tune_run *run, const struct budgets *b, struct tune_point *pts, int n) {
    for (int i = 0; i < n; i++) {
        struct tune_point *p = &pts[i];
        int rc = plan_point(m, run, p, run->n_ctx, &p->ram_bytes, &p->vram_bytes, &p->disk_bytes);
        if (rc) {
            cli_report("tune: memory plan", rc);
            return -1;
        }
        p->fits = fits(b, p->ram_bytes, p->vram_bytes, p->disk_bytes);
        /* capacity: the longest context within the budgets, bisected over multiples of 256 */
        int64_t lo = 0, hi = INT64_C(1) << 16, ram, vram, disk; /* up to 16M positions */
        while (lo < hi) {
            const int64_t mid = lo + (hi - lo + 1) / 2;
            if (plan_point(m, run, p, mid * 256, &ram, &vram, &disk) == 0 && fits(b, ram, vram, disk)) lo = mid;
            else hi = mid - 1;
        }
        p->max_ctx = lo * 256;
    }
    return 0;
}

/* The sweep's size for allocation: every point build_sweep may add. */
static int sweep_cap(const struct tune_opts *o) {
    return 1 + o->bits.n * o->budgets.n * o->blocks.n + o->sim_bits.n * o->budgets.n +
           o->budgets.n * o->blocks.n * o->cache_mb.n;
}

static int build_sweep(const struct tune_opts *o, const char *model_path, struct tune_point *pts) {
    int n = 0;
    pts[n++] = (struct tune_point){.mode = SL_ATTN_DENSE, .block = 1};
    int32_t spot_bits[MAX_AXIS], n_spot = 0;
    char hash[4400];
    for (int i = 0; i < o->bits.n; i++) {
        if (tune_hash_path(model_path, (int32_t)o->bits.v[i], hash, sizeof hash) == 0) spot_bits[n_spot++] = (int32_t)o->bits.v[i];
        else fprintf(stderr, "tune: no %d-bit Spotlight hash for this model in the cache (tools/make-hash.sh --bits %d): "
                             "skipped\n", (int)o->bits.v[i], (int)o->bits.v[i]);
    }
    for (int b = 0; b < n_spot; b++)
        for (int u = 0; u < o->budgets.n; u++)
            for (int k = 0; k < o->blocks.n; k++)
                pts[n++] = (struct tune_point){.mode = SL_ATTN_SPOTLIGHT, .budget = (float)(o->budgets.v[u] / 100),
                                               .bits = spot_bits[b], .block = (int32_t)o->blocks.v[k]};
    for (int b = 0; b < o->sim_bits.n; b++)
        for (int u = 0; u < o->budgets.n; u++)
            pts[n++] = (struct tune_point){.mode = SL_ATTN_SIMHASH, .budget = (float)(o->budgets.v[u] / 100),
                                           .bits = (int32_t)o->sim_bits.v[b], .block = 1};
    /* the file tier with the 64-bit hash, else the first spotlight bits, else simhash */
    enum sl_attn_mode fmode = n_spot ? SL_ATTN_SPOTLIGHT : SL_ATTN_SIMHASH;
    int32_t fbits = n_spot ? spot_bits[0] : (int32_t)o->sim_bits.v[0];
    for (int b = 0; b < n_spot; b++)
        if (spot_bits[b] == 64) fbits = 64;
    for (int u = 0; u < o->budgets.n; u++)
        for (int k = 0; k < o->blocks.n; k++)
            for (int c = 0; c < o->cache_mb.n; c++)
                pts[n++] = (struct tune_point){.mode = fmode, .budget = (float)(o->budgets.v[u] / 100), .bits = fbits,
                                               .block = (int32_t)o->blocks.v[k], .kv_file = true,
                                               .cache_mb = (int64_t)o->cache_mb.v[c]};
    return n;
}

/* The recommended configuration as a `spotlight generate` line. */
static void print_command(FILE *f, const struct tune_opts *o, const struct tune_point *p) {
    fprintf(f, "  spotlight generate");
    if (o->model) fprintf(f, " -m %s", o->model);
    fprintf(f, " -f %s -c %" PRId64, o->file ? o->file : "DOC.txt", o->n_ctx);
    if (o->n_threads) fprintf(f, " -t %d", o->n_threads);
    if (p->mode != SL_ATTN_DENSE) {
        fprintf(f, " --attn %s --bits %d --budget %g%%", attn_mode_name(p->mode), p->bits, 100.0 * p->budget);
        if (p->block > 1) fprintf(f, " --block %d", p->block);
        if (p->kv_file) fprintf(f, " --kv file:doc.slkv --cache-mb %" PRId64, p->cache_mb);
    }
    fputc('\n', f);
    if (!o->file) fprintf(f, "  (DOC.txt: your document; it and -n must fit in %" PRId64 " tokens)\n", o->n_ctx);
    if (p->kv_file)
        fprintf(f, "  (this ingests with sparse prefill; the tuner measured decode over a densely ingested store: "
                   "`generate -f DOC -c %" PRId64 " -n 0 --kv ram:doc.slkv`, then the line above with -p PROMPT "
                   "--resume)\n", o->n_ctx);
}

int cmd_tune(int argc, char **argv) {
    struct tune_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    cli_check_threads("tune", o.n_threads);
    char path[4096], csv[4200], svg[4200], store[4200];
    snprintf(csv, sizeof csv, "%s.csv", o.prefix);
    snprintf(svg, sizeof svg, "%s.svg", o.prefix);
    snprintf(store, sizeof store, "%s", o.store ? o.store : o.prefix);
    if (!o.store) strncat(store, ".slkv", sizeof store - strlen(store) - 1);
    if (cli_model_path(o.model, path, sizeof path) != 0) return 1;
    /* before the sweep: the outputs' folders made, files creatable there */
    if (out_file_check("tune", csv) || out_file_check("tune", svg) || out_file_check("tune", store)) return 1;
    size_t len = 0;
    char *text = read_text(&o, (size_t)o.n_ctx * 16 + 4096, &len);
    if (!text) return 1;

    int status = 1;
    sl_model *m = NULL;
    sl_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    struct tune_point *pts = calloc((size_t)sweep_cap(&o), sizeof *pts);
    struct tune_run run = {0};
    bool ingested = false;
    if (!pts) goto done;
    if ((rc = sl_model_load(path, &m)) || (rc = sl_tokenizer_from_gguf(sl_model_gguf(m), &tok))) {
        cli_report(path, rc);
        goto done;
    }
    const struct sl_model_config *cfg = sl_model_config(m);
    if (o.n_ctx > cfg->n_ctx_train) {
        fprintf(stderr, "spotlight tune: --ctx %" PRId64 " is past the model's trained context of %d (the tuner "
                        "ingests the text densely)\n", o.n_ctx, cfg->n_ctx_train);
        goto done;
    }
    const int64_t need = o.n_ctx - o.n_decode;
    int64_t n_tok = sl_tokenize(tok, text, len, true, false, NULL, 0);
    if (n_tok >= need && (ids = malloc((size_t)n_tok * sizeof *ids))) n_tok = sl_tokenize(tok, text, len, true, false, ids, n_tok);
    if (n_tok < 0) {
        cli_report(o.file ? o.file : "corpus", (int)n_tok);
        goto done;
    }
    if (n_tok < need) {
        fprintf(stderr, "spotlight tune: %s has %" PRId64 " tokens; --ctx %" PRId64 " needs at least %" PRId64
                        " (a longer text or a smaller --ctx)\n", o.file ? o.file : "the corpus", n_tok, o.n_ctx, need);
        goto done;
    }
    if (!ids) goto done;
    run = (struct tune_run){.model = m, .model_path = path, .store = store, .tokens = ids, .n_ctx = o.n_ctx,
                            .n_stored = need, .n_prefill = (int32_t)o.n_prefill, .n_decode = (int32_t)o.n_decode,
                            .n_threads = o.n_threads, .n_batch = 256, .attn = sl_attn_default_params(SL_ATTN_SPOTLIGHT)};
    struct budgets b = {.vram = o.vram_mb << 20};
    b.ram = o.ram_mb ? o.ram_mb << 20 : (int64_t)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE);
    if (o.disk_mb) b.disk = o.disk_mb << 20;
    else {
        char dir[4200];
        snprintf(dir, sizeof dir, "%s", store);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = '\0';
        struct statvfs sv;
        b.disk = statvfs(slash ? (dir[0] ? dir : "/") : ".", &sv) == 0 ? (int64_t)sv.f_bavail * (int64_t)sv.f_frsize : 0;
    }
    const int n = build_sweep(&o, path, pts);
    if (plan_all(m, &run, &b, pts, n)) goto done;
    int n_fit = 0;
    for (int i = 0; i < n; i++) n_fit += pts[i].fits;
    const char *model_name = cfg->name[0] ? cfg->name : (strrchr(path, '/') ? strrchr(path, '/') + 1 : path);
    if (!n_fit) {
        if (tune_write_csv(csv, &run, pts, n) == 0 && tune_write_svg(svg, &run, model_name, pts, n) == 0) {
            char vram[48] = "";
            if (b.vram) snprintf(vram, sizeof vram, ", VRAM %" PRId64 " MiB", b.vram >> 20);
            fprintf(stderr, "spotlight tune: none of the %d configurations fits the budgets (RAM %" PRId64
                            " MiB, disk %" PRId64 " MiB%s); nothing measured, %s lists what each needs\n", n,
                    b.ram >> 20, b.disk >> 20, vram, csv);
        }
        goto done;
    }
    printf("tune: %d configurations at %" PRId64 " tokens (%d fit: RAM %" PRId64 " MiB, disk %" PRId64 " MiB",
           n, o.n_ctx, n_fit, b.ram >> 20, b.disk >> 20);
    if (b.vram) printf(", VRAM %" PRId64 " MiB", b.vram >> 20);
    printf("); %" PRId64 " stored tokens, a %" PRId64 "-token prefill chunk and %" PRId64 " decode tokens per point\n",
           need, o.n_prefill, o.n_decode);
    fflush(stdout);

    run.ref_tokens = malloc((size_t)o.n_decode * sizeof *run.ref_tokens);
    run.ref_logp = malloc((size_t)o.n_decode * (size_t)cfg->n_vocab * sizeof *run.ref_logp);
    if (!run.ref_tokens || !run.ref_logp) {
        fprintf(stderr, "spotlight tune: out of memory\n");
        goto done;
    }
    double ingest_tok_s;
    ingested = true;
    if (tune_ingest(&run, !o.quick, &ingest_tok_s)) goto done;
    if (!o.quick && !isnan(ingest_tok_s)) fprintf(stderr, "tune: ingested %" PRId64 " tokens at %.1f tok/s\n", need, ingest_tok_s);
    const double t0 = cli_now();
    int n_ok = 0;
    for (int i = 0; i < n; i++) {
        char name[128];
        tune_point_name(&pts[i], name, sizeof name);
        if (!o.quick) {
            const double el = cli_now() - t0, eta = i ? el / i * (n - i) : NAN;
            fprintf(stderr, "\rtune: [%3d/%d] ", i + 1, n);
            if (isnan(eta)) fprintf(stderr, "ETA ?      ");
            else fprintf(stderr, "ETA %dm%02ds ", (int)eta / 60, (int)eta % 60);
            fprintf(stderr, "%-40s", name);
        }
        if (tune_measure(&run, &pts[i]) == 0) n_ok++;
        else if (i == 0) goto done; /* no dense reference: nothing to compare with */
    }
    if (!o.quick) fprintf(stderr, "\rtune: %d points measured in %.0f s%40s\n", n, cli_now() - t0, "");
    const int rec = tune_select(pts, n, o.min_agree);
    if (tune_write_csv(csv, &run, pts, n) || tune_write_svg(svg, &run, model_name, pts, n)) goto done;
    int n_front = 0;
    for (int i = 0; i < n; i++) n_front += pts[i].front;
    printf("\nPareto front: %d of %d measured configurations (minimum decode latency and host RAM, maximum top-1\n"
           "agreement with dense):\n", n_front, n_ok);
    tune_print_front(stdout, pts, n);
    if (rec < 0) {
        printf("\nwrote %s, %s\n", csv, svg);
        fprintf(stderr, "spotlight tune: no measured configuration fits the budgets\n");
        goto done;
    }
    char name[128];
    tune_point_name(&pts[rec], name, sizeof name);
    printf("\nrecommended: %s: %.2f ms/token (%.2fx dense), top-1 agreement %.3f, KL %.4f, host RAM %.1f MiB, "
           "disk %.1f MiB, fits up to %" PRId64 " tokens\n",
           name, pts[rec].decode_ms, pts[0].decode_ms / pts[rec].decode_ms, pts[rec].agree, pts[rec].kl,
           pts[rec].ram_bytes / 1048576.0, pts[rec].disk_bytes / 1048576.0, pts[rec].max_ctx);
    print_command(stdout, &o, &pts[rec]);
    printf("wrote %s, %s\n", csv, svg);
    status = 0;
done:
    if (ingested && !o.store) { /* the store and the key codes saved beside it */
        unlink(store);
        strncat(store, SL_CODE_FILE_SUFFIX, sizeof store - strlen(store) - 1);
        unlink(store);
    }
    free(run.ref_tokens);
    free(run.ref_logp);
    free(pts);
    free(ids);
    free(text);
    sl_tokenizer_free(tok);
    sl_model_free(m);
    return status;
}
