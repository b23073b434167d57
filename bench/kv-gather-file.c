/* bench-kv-gather, the file tier (bench/kv-gather.h): a store file of N positions per block
 * size; cold gathers (a ram_budget too small for the data set, fresh selections, rotating
 * layers) against the raw io_uring reader reading the same blocks at the same QD, and warm
 * gathers (the same gather repeated with a budget that holds it). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench/bench-util.h"
#include "bench/kv-gather.h"
#include "spotlight/error.h"

/* 1 MiB sequential reads of up to 2 GiB of the data region, QD 8. */
static void raw_seq(const char *path, const struct sl_kv_layout *lay, int64_t tokens, int64_t bt) {
    struct raw_reader r;
    size_t len = 1u << 20;
    if (raw_open(&r, path, 8, len, opt.sqpoll)) return;
    int64_t span = lay->file_size - lay->data_off;
    if (span > (INT64_C(2) << 30)) span = INT64_C(2) << 30;
    int64_t n = span / (int64_t)len;
    uint64_t *off = malloc(sizeof *off * (size_t)n);
    for (int64_t i = 0; i < n; i++) off[i] = (uint64_t)(lay->data_off + i * (int64_t)len);
    double t[3];
    int k = 0;
    for (; k < 3; k++)
        if ((t[k] = raw_read(&r, off, n)) < 0) break;
    if (k == 3) {
        struct row row = {.kind = "raw-seq", .tier = "file", .tokens = tokens, .block_tokens = bt,
                          .qd = 8, .need_bytes = (double)n * (double)len,
                          .disk_bytes = (double)n * (double)len, .t = summarize(t, 3),
                          .note = "1 MiB O_DIRECT reads"};
        row.limit_gbs = row.need_bytes / row.t.med / 1e9;
        emit(&row);
        fprintf(stderr, "  raw-seq 1 MiB QD8: %.2f GB/s\n", row.limit_gbs);
    }
    free(off);
    raw_close(&r);
}

static void build_file(const char *path, const struct sl_kv_shape *shape, int64_t n) {
    struct stat sb;
    if (opt.keep && stat(path, &sb) == 0) {
        struct sl_kv_store_params p = sl_kv_store_default_params();
        p.tier = SL_KV_TIER_FILE;
        p.path = path;
        sl_kv_store_t st;
        if (sl_kv_store_open(shape, &p, &st) == 0 && sl_kv_store_n_tokens(st) == n) {
            sl_kv_store_free(st);
            fprintf(stderr, "  reusing %s\n", path);
            return;
        }
        sl_kv_store_free(st);
    }
    struct sl_kv_store_params p = sl_kv_store_default_params();
    p.tier = SL_KV_TIER_FILE;
    p.capacity = n;
    p.path = path;
    p.overwrite = true;
    p.max_pending = 4096; /* the append chunk below */
    struct sl_kv_layout lay;
    int rc = sl_kv_layout_compute(shape, n, &lay);
    if (rc) die("layout", rc);
    /* the fixed parts (checksums, tags, a pending window of 4096 positions) + 32 MiB */
    p.ram_budget = lay.crc_bytes + lay.tag_bytes + (INT64_C(32) << 20) +
                   (int64_t)shape->n_layer * (4096 / shape->block_tokens + 2) * shape->n_head_kv *
                       lay.block_stride;
    sl_kv_store_t st;
    rc = sl_kv_store_create(shape, &p, &st);
    if (rc) die("file create", rc);
    int64_t H = shape->n_head_kv, rb = row_bytes(), L = shape->n_layer;
    const int64_t chunk = 4096;
    char *k = xalloc((size_t)(chunk * H * rb)), *v = xalloc((size_t)(chunk * H * rb));
    double t0 = bench_now(), t_last = t0, t_fill = 0;
    for (int64_t p0 = 0; p0 < n; p0 += chunk) {
        int64_t c = n - p0 < chunk ? n - p0 : chunk;
        for (int32_t l = 0; l < L; l++) {
            double a = bench_now();
            for (int64_t i = 0; i < c; i++)
                for (int32_t h = 0; h < H; h++) {
                    fill_row(k + (i * H + h) * rb, l, p0 + i, h, 0);
                    fill_row(v + (i * H + h) * rb, l, p0 + i, h, 1);
                }
            t_fill += bench_now() - a;
            if ((rc = sl_kv_store_append(st, l, c, k, v))) die("file append", rc);
        }
        if ((rc = sl_kv_store_commit(st, c, NULL))) die("file commit", rc);
        if (bench_now() - t_last > 2 || p0 + c == n) {
            t_last = bench_now();
            fprintf(stderr, "\r  writing %s: %lld / %lld positions, %.0f s", path,
                    (long long)(p0 + c), (long long)n, t_last - t0);
        }
    }
    double t1 = bench_now();
    if ((rc = sl_kv_store_sync(st))) die("file sync", rc);
    double t_all = bench_now() - t0;
    struct sl_kv_store_stats stt;
    sl_kv_store_get_stats(st, &stt);
    fprintf(stderr, "\n  wrote %.2f GB in %.1f s (%.1f s generating data, sync %.1f s): %.0f MB/s; store RAM %.1f MB of budget %.1f MB\n",
            (double)stt.bytes_written / 1e9, t_all, t_fill, bench_now() - t1,
            (double)stt.bytes_written / (t_all - t_fill) / 1e6, (double)stt.ram_bytes / 1e6,
            (double)stt.ram_budget / 1e6);
    struct row ar = {.kind = "append", .tier = "file", .tokens = n,
                     .block_tokens = shape->block_tokens,
                     .useful_bytes = (double)(n * L * H * rb * 2),
                     .disk_bytes = (double)stt.bytes_written,
                     .t = {t_all - t_fill, t_all - t_fill, t_all - t_fill, 1},
                     .ram_bytes = stt.ram_bytes, .ram_budget = stt.ram_budget,
                     .note = "append + commit in chunks of 4096 positions + sync (data generation excluded)"};
    emit(&ar);
    if ((rc = sl_kv_store_close(st))) die("file close", rc);
    sl_kv_store_free(st);
    free(k);
    free(v);
}

static sl_kv_store_t open_file(const char *path, const struct sl_kv_shape *shape, int64_t qd,
                               int64_t budget) {
    struct sl_kv_store_params p = sl_kv_store_default_params();
    p.tier = SL_KV_TIER_FILE;
    p.path = path;
    p.queue_depth = (int32_t)qd;
    p.ram_budget = budget;
    p.sqpoll = opt.sqpoll;
    sl_kv_store_t st;
    int rc = sl_kv_store_open(shape, &p, &st);
    if (rc) die("file open", rc);
    return st;
}

/* The smallest budget the store accepts at or above want (it needs its fixed parts). */
static int64_t cold_budget(const char *path, const struct sl_kv_shape *shape,
                           const struct sl_kv_layout *lay) {
    int64_t want = opt.budget;
    if (!want) { /* the fixed parts (checksums, tags, the default pending window) + 16 MiB */
        int64_t max_pending = sl_kv_store_default_params().max_pending;
        int64_t win = (int64_t)shape->n_layer * (max_pending / shape->block_tokens + 2) *
                      shape->n_head_kv * lay->block_stride;
        want = lay->crc_bytes + lay->tag_bytes + win + (INT64_C(16) << 20);
    }
    for (int i = 0; i < 8; i++, want *= 2) {
        struct sl_kv_store_params p = sl_kv_store_default_params();
        p.tier = SL_KV_TIER_FILE;
        p.path = path;
        p.ram_budget = want;
        sl_kv_store_t st;
        int rc = sl_kv_store_open(shape, &p, &st);
        sl_kv_store_free(st);
        if (rc == 0) return want;
        fprintf(stderr, "  budget %.1f MB refused (%s); doubling\n", (double)want / 1e6, sl_strerror(rc));
    }
    die("no ram_budget accepted", SL_EINVAL);
    return 0;
}

struct file_cfg {
    const char *path;
    const struct sl_kv_layout *lay;
    int64_t n, bt, qd, m;
    int pat;
    double frac;
    uint64_t *off;
    uint8_t *mark;
    struct sel *s;
    bool sorted_too; /* also time raw reads sorted by offset across heads */
};

/* Cold: store gathers (fresh selections, rotating layers) interleaved with raw reads of
 * equally drawn selections of other layers. mode 0: per head, 1: union (no raw then). */
static void file_cold(const struct file_cfg *c, const struct sl_kv_shape *shape,
                      struct raw_reader *raw, int uni, int64_t budget, double *raw_gbs_out,
                      struct sl_kv_store_stats *peak) {
    /* A fresh open per configuration: nothing cached from the one before. */
    sl_kv_store_t st = open_file(c->path, shape, c->qd, budget);
    double ts[MAX_REPS], tr[MAX_REPS], tq[MAX_REPS], spent = 0, rows = 0, need = 0,
           raw_bytes = 0, rawq_bytes = 0;
    int k = 0;
    int64_t bad = 0, rc;
    sl_kv_store_reset_counters(st);
    struct sl_kv_store_stats a0, a1;
    for (int r = -1; more_reps(k, spent, 0.5); r++) {
        if (raw && !uni) {
            draw_layer(c->s, c->pat, c->n, c->bt, c->m, cfg_seed(c->n, c->bt, c->pat, c->frac, c->qd, r, 7),
                       rep_layer(r + 1, g_shape.n_layer / 2), false, c->mark);
            int64_t nb = sel_blocks(c->s, c->lay, c->bt, c->off, false);
            double t = raw_read(raw, c->off, nb);
            if (t < 0) die("raw read", SL_EIO);
            if (r >= 0) tr[k] = t, raw_bytes += (double)nb * (double)c->lay->block_stride;
            if (c->sorted_too) { /* a third layer: nothing read twice */
                draw_layer(c->s, c->pat, c->n, c->bt, c->m, cfg_seed(c->n, c->bt, c->pat, c->frac, c->qd, r, 9),
                           rep_layer(r + 1, g_shape.n_layer / 3), false, c->mark);
                nb = sel_blocks(c->s, c->lay, c->bt, c->off, true);
                if ((t = raw_read(raw, c->off, nb)) < 0) die("raw read", SL_EIO);
                if (r >= 0) tq[k] = t, rawq_bytes += (double)nb * (double)c->lay->block_stride;
            }
        }
        draw_layer(c->s, c->pat, c->n, c->bt, c->m, cfg_seed(c->n, c->bt, c->pat, c->frac, c->qd, r, uni),
                   rep_layer(r + 1, 0), uni, c->mark);
        int64_t nb = sel_blocks(c->s, c->lay, c->bt, c->off, false);
        if (r == 0) sl_kv_store_get_stats(st, &a0);
        double t0 = bench_now();
        if ((rc = store_gather(st, c->s))) die("file gather", (int)rc);
        double t1 = bench_now();
        if (r < 0) {
            bad += verify(c->s, NULL, NULL, 0);
            continue;
        }
        ts[k] = t1 - t0;
        rows += (double)sel_rows(c->s);
        need += (double)nb * (double)c->lay->block_stride;
        spent += (t1 - t0) + (raw && !uni ? tr[k] : 0) + (raw && !uni && c->sorted_too ? tq[k] : 0);
        k++;
    }
    sl_kv_store_get_stats(st, &a1);
    if (a1.ram_bytes >= peak->ram_bytes) *peak = a1;
    sl_kv_store_free(st);
    struct row g = {.kind = uni ? "heads-union" : "gather", .tier = "file", .tokens = c->n,
                    .block_tokens = c->bt, .pattern = k_pat_name[c->pat], .frac = c->frac,
                    .qd = c->qd, .cache = "cold", .rows = rows / k,
                    .useful_bytes = rows / k * 2 * (double)row_bytes(), .need_bytes = need / k,
                    .disk_bytes = (double)(a1.bytes_read - a0.bytes_read) / k,
                    .t = summarize(ts, k), .ram_bytes = a1.ram_bytes, .ram_budget = budget,
                    .note = bad ? "WRONG ROWS" : ""};
    int64_t hits = a1.cache_hits - a0.cache_hits, miss = a1.cache_misses - a0.cache_misses;
    g.hit_rate = hits + miss ? (double)hits / (double)(hits + miss) : 0;
    if (raw && !uni) {
        struct row rr = {.kind = "raw-rand", .tier = "file", .tokens = c->n, .block_tokens = c->bt,
                         .pattern = k_pat_name[c->pat], .frac = c->frac, .qd = c->qd,
                         .need_bytes = raw_bytes / k, .disk_bytes = raw_bytes / k,
                         .t = summarize(tr, k), .note = "own io_uring reader"};
        rr.limit_gbs = rr.need_bytes / rr.t.med / 1e9;
        *raw_gbs_out = rr.limit_gbs;
        emit(&rr);
        if (c->sorted_too) {
            rr.kind = "raw-rand-sorted";
            rr.need_bytes = rr.disk_bytes = rawq_bytes / k;
            rr.t = summarize(tq, k);
            rr.limit_gbs = rr.need_bytes / rr.t.med / 1e9;
            rr.note = "own io_uring reader; reads sorted by offset across heads";
            emit(&rr);
        }
    }
    g.limit_gbs = *raw_gbs_out;
    g.ratio = g.need_bytes / g.t.med / 1e9 / g.limit_gbs;
    emit(&g);
    fprintf(stderr, "  file bt%lld %-6s %4.1f%% QD%-3lld%s: %9.1f us, need %.2f MB -> %.3f GB/s (raw %.3f GB/s, %3.0f%%), disk %.2f MB, hits %.1f%%%s\n",
            (long long)c->bt, k_pat_name[c->pat], c->frac * 100, (long long)c->qd,
            uni ? " union" : "", g.t.med * 1e6, g.need_bytes / 1e6, g.need_bytes / g.t.med / 1e9,
            g.limit_gbs, 100 * g.ratio, g.disk_bytes / 1e6, 100 * g.hit_rate, bad ? " WRONG ROWS" : "");
}

/* Warm: one selection gathered repeatedly through a cache big enough to hold it. */
static void file_warm(const struct file_cfg *c, const struct sl_kv_shape *shape, int64_t cold_b,
                      double raw_gbs) {
    draw_layer(c->s, c->pat, c->n, c->bt, c->m, cfg_seed(c->n, c->bt, c->pat, c->frac, c->qd, 0, 3),
               rep_layer(0, 0), false, c->mark);
    int64_t nb = sel_blocks(c->s, c->lay, c->bt, c->off, false);
    int64_t budget = cold_b + 2 * nb * c->lay->block_stride + (INT64_C(64) << 20);
    sl_kv_store_t st = open_file(c->path, shape, c->qd, budget);
    double ts[MAX_REPS], spent = 0;
    int k = 0, rc;
    if ((rc = store_gather(st, c->s))) die("warm gather", rc); /* fills the cache */
    int64_t bad = verify(c->s, NULL, NULL, 0);
    sl_kv_store_reset_counters(st);
    for (; more_reps(k, spent, 0.3); k++) {
        double t0 = bench_now();
        if ((rc = store_gather(st, c->s))) die("warm gather", rc);
        ts[k] = bench_now() - t0;
        spent += ts[k];
    }
    struct sl_kv_store_stats a;
    sl_kv_store_get_stats(st, &a);
    double rows = (double)sel_rows(c->s);
    struct row g = {.kind = "gather", .tier = "file", .tokens = c->n, .block_tokens = c->bt,
                    .pattern = k_pat_name[c->pat], .frac = c->frac, .qd = c->qd, .cache = "warm",
                    .rows = rows, .useful_bytes = rows * 2 * (double)row_bytes(),
                    .need_bytes = (double)(nb * c->lay->block_stride),
                    .disk_bytes = (double)a.bytes_read / k, .t = summarize(ts, k),
                    .limit_gbs = raw_gbs, .ram_bytes = a.ram_bytes, .ram_budget = budget,
                    .note = bad ? "WRONG ROWS" : ""};
    g.ratio = g.need_bytes / g.t.med / 1e9 / raw_gbs;
    g.hit_rate = a.cache_hits + a.cache_misses
                     ? (double)a.cache_hits / (double)(a.cache_hits + a.cache_misses) : 0;
    emit(&g);
    fprintf(stderr, "  file bt%lld %-6s %4.1f%% QD%-3lld warm: %9.1f us (%.2f GB/s useful), hits %.1f%%, disk %.2f MB/gather%s\n",
            (long long)c->bt, k_pat_name[c->pat], c->frac * 100, (long long)c->qd, g.t.med * 1e6,
            g.useful_bytes / g.t.med / 1e9, 100 * g.hit_rate, g.disk_bytes / 1e6, bad ? " WRONG ROWS" : "");
    sl_kv_store_free(st);
}

void run_file(int64_t n, const char *dir, struct sel *s, uint8_t *mark) {
    for (int bi = 0; bi < opt.n_blocks; bi++) {
        int64_t bt = opt.blocks[bi];
        struct sl_kv_shape shape = g_shape;
        shape.block_tokens = (int32_t)bt;
        struct sl_kv_layout lay;
        int rc = sl_kv_layout_compute(&shape, n, &lay);
        if (rc) die("layout", rc);
        char path[4096];
        snprintf(path, sizeof path, "%s/kv-%lld-b%lld.slkv", dir, (long long)n, (long long)bt);
        fprintf(stderr, "file tier, %lld tokens, block %lld (%lld KiB), %.2f GB\n", (long long)n,
                (long long)bt, (long long)(lay.block_stride >> 10), (double)lay.file_size / 1e9);
        build_file(path, &shape, n);
        raw_seq(path, &lay, n, bt);
        int64_t budget = cold_budget(path, &shape, &lay);
        int64_t max_m = (int64_t)(opt.fracs[opt.n_fracs - 1] * (double)n) + 1;
        for (int i = 0; i < opt.n_fracs; i++)
            if ((int64_t)(opt.fracs[i] * (double)n) + 1 > max_m) max_m = (int64_t)(opt.fracs[i] * (double)n) + 1;
        /* Block offsets of one gather: per head at most its rows (3 x max_m in the union
         * case) and at most every block. */
        int64_t per_head = g_shape.n_head_kv * max_m < n / bt ? g_shape.n_head_kv * max_m : n / bt;
        uint64_t *off = malloc(sizeof *off * (size_t)(g_shape.n_head_kv * (per_head + 1)));
        double raw_mix64[MAX_LIST] = {0}; /* raw GB/s of the mix pattern per frac at the extras' QD */
        int64_t qd_x = opt.qds[opt.n_qds - 1];
        for (int i = 0; i < opt.n_qds; i++)
            if (opt.qds[i] == 64) qd_x = 64;
        for (int qi = 0; qi < opt.n_qds; qi++) {
            int64_t qd = opt.qds[qi];
            struct sl_kv_store_stats stt = {0};
            struct raw_reader raw;
            if ((rc = raw_open(&raw, path, (int)qd, (size_t)lay.block_stride, opt.sqpoll)))
                die("raw io_uring setup", rc);
            for (int pi = 0; pi < PAT_N; pi++) {
                if (!opt.pat[pi]) continue;
                for (int fi = 0; fi < opt.n_fracs; fi++) {
                    struct file_cfg c = {path, &lay, n, bt, qd, (int64_t)(opt.fracs[fi] * (double)n),
                                         pi, opt.fracs[fi], off, mark, s, qd == qd_x && opt.extras};
                    if (c.m < 1) c.m = 1;
                    double raw_gbs = 0;
                    file_cold(&c, &shape, &raw, 0, budget, &raw_gbs, &stt);
                    if (pi == PAT_MIX && qd == qd_x) raw_mix64[fi] = raw_gbs;
                    if (pi == PAT_MIX && qd == qd_x && opt.extras)
                        file_cold(&c, &shape, NULL, 1, budget, &raw_gbs, &stt);
                }
            }
            char note[160];
            snprintf(note, sizeof note, "store after the cold gathers (largest RAM seen): uring %d direct %d regbuf %d sqpoll %d cache_slots %lld",
                     stt.uring, stt.direct_io, stt.registered_buffers, stt.sqpoll, (long long)stt.cache_slots);
            struct row mem = {.kind = "mem", .tier = "file", .tokens = n, .block_tokens = bt, .qd = qd,
                              .cache = "cold", .ram_bytes = stt.ram_bytes, .ram_budget = stt.ram_budget,
                              .note = note};
            emit(&mem);
            fprintf(stderr, "  store RAM %.1f MB of budget %.1f MB (cache %lld blocks); peak RSS %.1f MB; uring %d direct %d regbuf %d sqpoll %d\n",
                    (double)stt.ram_bytes / 1e6, (double)stt.ram_budget / 1e6,
                    (long long)stt.cache_slots, (double)peak_rss_bytes() / 1e6, stt.uring,
                    stt.direct_io, stt.registered_buffers, stt.sqpoll);
            raw_close(&raw);
        }
        if (opt.extras && opt.pat[PAT_MIX])
            for (int fi = 0; fi < opt.n_fracs; fi++) {
                struct file_cfg c = {path, &lay, n, bt, qd_x, (int64_t)(opt.fracs[fi] * (double)n),
                                     PAT_MIX, opt.fracs[fi], off, mark, s, false};
                file_warm(&c, &shape, budget, raw_mix64[fi]);
            }
        free(off);
        if (!opt.keep) unlink(path);
    }
}
