/* Question: how fast are gathers from the KV store, against the limits measured in the same run?
 *
 * One gather = one decode step's reads for one layer: the 3 KV heads' selected positions, one
 * descriptor per head, one submit, K rows (and V rows) of all heads contiguous in the output.
 * Shape: the default model's (30 layers, 3 KV heads, head_dim 64, f16 = 23,040 bytes/token),
 * synthetic random K/V, a store of N committed positions per block size.
 *
 * Selections (per head, m = frac * N distinct positions, sorted, drawn fresh for every rep):
 *   mix     cluster_frac of m as whole blocks (attention locality), the rest uniform random
 *   random  m uniform random positions (the most blocks per row: the upper bound on bytes)
 *   block   m / block_tokens whole blocks (the fewest blocks per row: the lower bound)
 * Consecutive reps use different layers (layer = 7r + 3 mod n_layer) so a small cache sees
 * cold misses.
 *
 * Limits, measured in this run:
 *   memcpy       256 MiB memcpy, bytes copied per second (the host tier's limit)
 *   flat-gather  a plain loop copying the same rows out of one flat (layer, pos, head, dim)
 *                array: the cost of the row-scattered pattern without the store
 *   raw-rand     our own io_uring reader (O_DIRECT, registered buffer and file, the buffer in
 *                huge pages like the store's cache, QD reads kept in flight) reading the blocks an equally drawn selection needs, at the same
 *                block size and QD, from the same store file (block offsets from the store's
 *                layout). It reads another layer's selection than the store's rep, so neither
 *                warms a cache for the other.
 *   raw-seq      1 MiB sequential O_DIRECT reads of the store file (context)
 * File tier: cold = ram_budget too small for the data set (fresh selections, rotating layers);
 * warm = the same gather repeated with a budget that holds it (hit rate reported).
 * Heads: per-KV-head selections (3 descriptors) against the union of the 3 heads' selections
 * read for every head (what an all-heads-same-positions layout would read).
 *
 * Output: long-format CSV (one row per measurement; see CSV_HEADER) to --out (appended; the
 * header is written when the file is empty), progress on stderr. bench/run-kv.sh turns it into
 * bench/results/kv-gather.md. Store files live in --dir and are deleted at the end (--keep
 * keeps and reuses them).
 *   bench-kv-gather [--tokens 65536] [--blocks 16,32,64] [--fracs 0.01,0.02,0.1]
 *       [--qd 1,8,32,64,128] [--patterns mix,random,block] [--tier host|file|both]
 *       [--dir DIR] [--out FILE.csv] [--reps 5] [--max-sec 4] [--cluster 0.5]
 *       [--budget BYTES] [--sqpoll] [--keep] [--no-extras] */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench/bench-util.h"
#include "bench/kv-gather.h"
#include "spotlight/error.h"
#include "spotlight/kv-store.h"

struct kvg_opts opt;
FILE *g_csv;
struct sl_kv_shape g_shape = {30, 3, 64, SL_KV_DTYPE_F16, 16};
const char *const k_pat_name[PAT_N] = {"mix", "random", "block"};

/* ---- limits: memcpy --------------------------------------------------------------------- */

static double memcpy_gbs(void) {
    size_t n = 256u << 20;
    char *a = xalloc(n), *b = xalloc(n);
    memset(a, 1, n);
    memset(b, 2, n);
    double t[7];
    memcpy(b, a, n); /* warm-up */
    for (int r = 0; r < 7; r++) {
        double t0 = bench_now();
        memcpy(b, a, n);
        t[r] = bench_now() - t0;
    }
    struct timing tm = summarize(t, 7);
    free(a);
    free(b);
    struct row r = {.kind = "memcpy", .tier = "host", .useful_bytes = (double)n, .t = tm,
                    .note = "256 MiB; GB/s = bytes copied per second"};
    r.limit_gbs = (double)n / tm.med / 1e9;
    emit(&r);
    fprintf(stderr, "memcpy: %.2f GB/s (bytes copied per second)\n", r.limit_gbs);
    return r.limit_gbs;
}

/* ---- host tier ---------------------------------------------------------------------------- */

static void run_host(int64_t n, double mcpy, struct sel *s, uint8_t *mark) {
    int64_t H = g_shape.n_head_kv, rb = row_bytes(), L = g_shape.n_layer;
    size_t flat_bytes = (size_t)(L * n * H * rb);
    fprintf(stderr, "host tier, %lld tokens: filling 2 x %.2f GB flat arrays\n", (long long)n,
            (double)flat_bytes / 1e9);
    char *fk = xalloc(flat_bytes), *fv = xalloc(flat_bytes);
    for (int32_t l = 0; l < L; l++)
        for (int64_t p = 0; p < n; p++)
            for (int32_t h = 0; h < H; h++) {
                fill_row(fk + ((l * n + p) * H + h) * rb, l, p, h, 0);
                fill_row(fv + ((l * n + p) * H + h) * rb, l, p, h, 1);
            }
    for (int bi = 0; bi < opt.n_blocks; bi++) {
        int64_t bt = opt.blocks[bi];
        if (bi) mcpy = memcpy_gbs(); /* the machine is shared: the limit next to its runs */
        struct sl_kv_shape shape = g_shape;
        shape.block_tokens = (int32_t)bt;
        struct sl_kv_store_params p = sl_kv_store_default_params();
        p.tier = SL_KV_TIER_HOST;
        p.capacity = n;
        sl_kv_store_t st;
        int rc = sl_kv_store_create(&shape, &p, &st);
        if (rc) die("host create", rc);
        double t0 = bench_now();
        const int64_t chunk = 4096;
        for (int64_t p0 = 0; p0 < n; p0 += chunk) {
            int64_t c = n - p0 < chunk ? n - p0 : chunk;
            for (int32_t l = 0; l < L; l++)
                if ((rc = sl_kv_store_append(st, l, c, fk + (l * n + p0) * H * rb,
                                             fv + (l * n + p0) * H * rb)))
                    die("host append", rc);
            if ((rc = sl_kv_store_commit(st, c, NULL))) die("host commit", rc);
        }
        double t_app = bench_now() - t0;
        struct sl_kv_store_stats stt;
        sl_kv_store_get_stats(st, &stt);
        fprintf(stderr, "  block %lld: appended %.2f GB in %.2f s (%.2f GB/s); store RAM %.2f GB\n",
                (long long)bt, (double)(n * L * H * rb * 2) / 1e9, t_app,
                (double)(n * L * H * rb * 2) / t_app / 1e9, (double)stt.ram_bytes / 1e9);
        struct row ar = {.kind = "append", .tier = "host", .tokens = n, .block_tokens = bt,
                         .useful_bytes = (double)(n * L * H * rb * 2),
                         .t = {t_app, t_app, t_app, 1}, .ram_bytes = stt.ram_bytes,
                         .note = "append + commit in chunks of 4096 positions"};
        emit(&ar);
        for (int pi = 0; pi < PAT_N; pi++) {
            if (!opt.pat[pi]) continue;
            for (int fi = 0; fi < opt.n_fracs; fi++) {
                int64_t m = (int64_t)(opt.fracs[fi] * (double)n);
                if (m < 1) m = 1;
                for (int uni = 0; uni < (pi == PAT_MIX && opt.extras ? 2 : 1); uni++) {
                    double ts[MAX_REPS], tf[MAX_REPS], spent = 0, rows = 0;
                    int k = 0;
                    int64_t bad = 0;
                    for (int r = -1; more_reps(k, spent, 0.3); r++) {
                        draw_layer(s, pi, n, bt, m, cfg_seed(n, bt, pi, opt.fracs[fi], 0, r, uni),
                                   rep_layer(r + 1, 0), uni, mark);
                        double a = bench_now();
                        if ((rc = store_gather(st, s))) die("host gather", rc);
                        double b = bench_now();
                        if (r < 0) bad += verify(s, fk, fv, n);
                        double c0 = bench_now();
                        flat_gather(s, fk, fv, n);
                        double c1 = bench_now();
                        if (r < 0) continue;
                        ts[k] = b - a;
                        tf[k] = c1 - c0;
                        rows += (double)sel_rows(s);
                        spent += (b - a) + (c1 - c0);
                        k++;
                    }
                    rows /= k;
                    struct row g = {.kind = uni ? "heads-union" : "gather", .tier = "host",
                                    .tokens = n, .block_tokens = bt, .pattern = k_pat_name[pi],
                                    .frac = opt.fracs[fi], .rows = rows,
                                    .useful_bytes = rows * 2 * (double)rb, .t = summarize(ts, k),
                                    .limit_gbs = mcpy, .ram_bytes = stt.ram_bytes,
                                    .note = bad ? "WRONG ROWS" : ""};
                    g.ratio = g.useful_bytes / g.t.med / 1e9 / mcpy;
                    struct row f = g;
                    f.kind = uni ? "flat-gather-union" : "flat-gather";
                    f.t = summarize(tf, k);
                    f.ratio = f.useful_bytes / f.t.med / 1e9 / mcpy;
                    f.note = "";
                    emit(&g);
                    emit(&f);
                    fprintf(stderr, "  host bt%lld %-6s %4.1f%%%s: %8.1f us (%.2f GB/s, %.0f%% of memcpy; flat loop %.2f GB/s)%s\n",
                            (long long)bt, k_pat_name[pi], opt.fracs[fi] * 100, uni ? " union" : "",
                            g.t.med * 1e6, g.useful_bytes / g.t.med / 1e9, 100 * g.ratio,
                            f.useful_bytes / f.t.med / 1e9, bad ? " WRONG ROWS" : "");
                    if (bad) fprintf(stderr, "  %lld rows differ from the data appended\n", (long long)bad);
                }
            }
        }
        sl_kv_store_free(st);
    }
    free(fk);
    free(fv);
}

/* ---- main --------------------------------------------------------------------------------- */

static int parse_list(const char *s, int64_t *out) {
    int n = 0;
    while (*s && n < MAX_LIST) {
        char *e;
        double v = strtod(s, &e);
        if (e == s) break;
        if (*e == 'K' || *e == 'k') v *= 1024, e++;
        else if (*e == 'M' || *e == 'm') v *= 1048576, e++;
        out[n++] = (int64_t)v;
        s = *e == ',' ? e + 1 : e;
    }
    return n;
}

int main(int argc, char **argv) {
    opt.tokens[0] = 65536, opt.n_tokens = 1;
    opt.n_blocks = parse_list("16,32,64", opt.blocks);
    opt.fracs[0] = 0.01, opt.fracs[1] = 0.02, opt.fracs[2] = 0.1, opt.n_fracs = 3;
    opt.n_qds = parse_list("1,8,32,64,128", opt.qds);
    opt.pat[0] = opt.pat[1] = opt.pat[2] = true;
    opt.host = opt.file = opt.extras = true;
    opt.reps = 5;
    opt.max_sec = 4;
    opt.cluster = 0.5;
    opt.dir = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--sqpoll")) opt.sqpoll = true;
        else if (!strcmp(a, "--keep")) opt.keep = true;
        else if (!strcmp(a, "--no-extras")) opt.extras = false;
        else if (!v) goto usage;
        else if (++i, !strcmp(a, "--tokens")) opt.n_tokens = parse_list(v, opt.tokens);
        else if (!strcmp(a, "--blocks")) opt.n_blocks = parse_list(v, opt.blocks);
        else if (!strcmp(a, "--qd")) opt.n_qds = parse_list(v, opt.qds);
        else if (!strcmp(a, "--fracs")) {
            opt.n_fracs = 0;
            for (char *e; *v && opt.n_fracs < MAX_LIST; v = *e == ',' ? e + 1 : e) {
                opt.fracs[opt.n_fracs] = strtod(v, &e);
                if (e == v) break;
                if (*e == '%') opt.fracs[opt.n_fracs] /= 100, e++;
                opt.n_fracs++;
            }
        } else if (!strcmp(a, "--patterns")) {
            for (int p = 0; p < PAT_N; p++) opt.pat[p] = strstr(v, k_pat_name[p]) != NULL;
        } else if (!strcmp(a, "--tier")) {
            opt.host = !strcmp(v, "host") || !strcmp(v, "both");
            opt.file = !strcmp(v, "file") || !strcmp(v, "both");
        } else if (!strcmp(a, "--dir")) opt.dir = v;
        else if (!strcmp(a, "--out")) opt.out = v;
        else if (!strcmp(a, "--reps")) opt.reps = atoi(v);
        else if (!strcmp(a, "--max-sec")) opt.max_sec = atof(v);
        else if (!strcmp(a, "--cluster")) opt.cluster = atof(v);
        else if (!strcmp(a, "--budget")) opt.budget = strtoll(v, NULL, 10);
        else goto usage;
    }
    if (!opt.n_tokens || !opt.n_blocks || !opt.n_fracs || !opt.n_qds || (!opt.host && !opt.file)) goto usage;
    for (int i = 0; i < opt.n_tokens; i++) {
        int64_t big = 64; /* whole blocks of every size: no partial tail block */
        opt.tokens[i] = opt.tokens[i] / big * big;
        if (opt.tokens[i] < 4096) goto usage;
    }
    for (int i = 0; i < opt.n_blocks; i++)
        if (opt.blocks[i] < 4 || opt.blocks[i] > 64 || (opt.blocks[i] & (opt.blocks[i] - 1))) goto usage;

    g_csv = stdout;
    if (opt.out) {
        g_csv = fopen(opt.out, "a");
        if (!g_csv) {
            perror(opt.out);
            return 1;
        }
        if (ftell(g_csv) == 0) fputs(CSV_HEADER, g_csv);
    } else {
        fputs(CSV_HEADER, g_csv);
    }
    char dir[2048];
    if (opt.file) {
        snprintf(dir, sizeof dir, "%s/spotlight-kv-bench%s", opt.dir, opt.keep ? "" : ".XXXXXX");
        if (opt.keep ? (mkdir(dir, 0700) && errno != EEXIST) : !mkdtemp(dir)) {
            perror(dir);
            return 1;
        }
    }

    /* memcpy's 2 x 256 MiB would dominate a file-tier run's peak RSS: there it runs last. */
    double mcpy = opt.host ? memcpy_gbs() : 0;

    int64_t max_n = 0, max_m = 0;
    for (int i = 0; i < opt.n_tokens; i++) max_n = opt.tokens[i] > max_n ? opt.tokens[i] : max_n;
    double max_f = 0;
    for (int i = 0; i < opt.n_fracs; i++) max_f = opt.fracs[i] > max_f ? opt.fracs[i] : max_f;
    max_m = (int64_t)(max_f * (double)max_n) + 64;
    /* Outputs: the union of 3 heads' selections, read for each of the 3 heads. */
    int64_t H = g_shape.n_head_kv, max_rows = H * H * max_m;
    g_kout = xalloc((size_t)(max_rows * row_bytes()));
    g_vout = xalloc((size_t)(max_rows * row_bytes()));
    uint8_t *mark = calloc((size_t)max_n, 1);
    struct sel s;
    for (int h = 0; h < H; h++) s.idx[h] = malloc(sizeof(int64_t) * (size_t)(H * max_m));

    for (int i = 0; i < opt.n_tokens; i++) {
        if (opt.file) run_file(opt.tokens[i], dir, &s, mark);
        if (opt.host) run_host(opt.tokens[i], mcpy, &s, mark);
    }
    char note[160];
    snprintf(note, sizeof note, "ru_maxrss of this process; bench output buffers %.1f MB",
             2.0 * (double)(max_rows * row_bytes()) / 1e6);
    struct row mem = {.kind = "peak-rss", .tier = opt.host && opt.file ? "both" : opt.host ? "host" : "file",
                      .tokens = max_n, .ram_bytes = peak_rss_bytes(), .note = note};
    emit(&mem);
    if (!opt.host) memcpy_gbs();
    for (int h = 0; h < H; h++) free(s.idx[h]);
    free(mark);
    free(g_kout);
    free(g_vout);
    if (opt.file && !opt.keep) rmdir(dir);
    if (g_csv != stdout) fclose(g_csv);
    return 0;
usage:
    fprintf(stderr, "usage: bench-kv-gather [--tokens 65536,1M] [--blocks 16,32,64] [--fracs 0.01,0.02,0.1]\n"
                    "  [--qd 1,8,32,64,128] [--patterns mix,random,block] [--tier host|file|both]\n"
                    "  [--dir DIR] [--out FILE.csv] [--reps 5] [--max-sec 4] [--cluster 0.5]\n"
                    "  [--budget BYTES] [--sqpoll] [--keep] [--no-extras]\n");
    return 2;
}
