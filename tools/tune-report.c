/* `spotlight tune`: the Pareto front, the recommendation, the CSV, the plot and the table
 * (see tune.h). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tools/attn-opts.h"
#include "tools/out-file.h"
#include "tools/svg-plot.h"
#include "tools/tune.h"

static bool dominates(const struct tune_point *a, const struct tune_point *b) {
    if (a->decode_ms > b->decode_ms || a->ram_bytes > b->ram_bytes || a->agree < b->agree) return false;
    return a->decode_ms < b->decode_ms || a->ram_bytes < b->ram_bytes || a->agree > b->agree;
}

int tune_select(struct tune_point *pts, int n, double min_agree) {
    double best = -1;
    for (int i = 0; i < n; i++) {
        pts[i].front = pts[i].recommended = false;
        if (pts[i].status != TUNE_OK) continue;
        pts[i].front = true;
        for (int j = 0; j < n && pts[i].front; j++)
            if (j != i && pts[j].status == TUNE_OK && dominates(&pts[j], &pts[i])) pts[i].front = false;
        if (pts[i].fits && pts[i].agree > best) best = pts[i].agree;
    }
    int rec = -1;
    for (int i = 0; i < n; i++) {
        const struct tune_point *p = &pts[i];
        if (p->status != TUNE_OK || !p->fits || p->agree < min_agree * best) continue;
        if (rec < 0) {
            rec = i;
            continue;
        }
        const struct tune_point *r = &pts[rec];
        if (p->decode_ms < r->decode_ms ||
            (p->decode_ms == r->decode_ms && (p->ram_bytes < r->ram_bytes ||
                                              (p->ram_bytes == r->ram_bytes && p->agree > r->agree))))
            rec = i;
    }
    if (rec >= 0) pts[rec].recommended = true;
    return rec;
}

void tune_point_name(const struct tune_point *pt, char *buf, size_t cap) {
    char sel[64] = "", tier[48];
    if (pt->mode != SL_ATTN_DENSE) {
        char blk[24] = "";
        if (pt->block > 1) snprintf(blk, sizeof blk, " block %d", pt->block);
        snprintf(sel, sizeof sel, " %db %g%%%s", pt->bits, 100.0 * pt->budget, blk);
    }
    if (pt->kv_file) snprintf(tier, sizeof tier, "file %" PRId64 " MiB", pt->cache_mb);
    else snprintf(tier, sizeof tier, "ram");
    snprintf(buf, cap, "%s%s, %s", attn_mode_name(pt->mode), sel, tier);
}

int tune_write_csv(const char *path, const struct tune_run *run, const struct tune_point *pts, int n) {
    struct out_file o;
    if (out_file_open(&o, "tune", path)) return -1;
    FILE *f = o.f;
    fputs("attn,bits,budget,block,kv,cache_mb,ctx,n_prefill,n_decode,threads,dense_layers,sinks,window,min_tokens,"
          "status,decode_ms,decode_tok_s,prefill_tok_s,top1_agree,kl_mean,attended_frac,select_us,gather_us,"
          "host_ram_bytes,vram_bytes,disk_bytes,max_ctx,fits,front,recommended\n", f);
    static const char *const status[] = {"not measured", "ok", "failed"};
    for (int i = 0; i < n; i++) {
        const struct tune_point *p = &pts[i];
        fprintf(f, "%s,%d,%g,%d,%s,%" PRId64 ",%" PRId64 ",%d,%d,%d,%d,%d,%d,%" PRId64 ",%s,", attn_mode_name(p->mode),
                p->bits, p->mode == SL_ATTN_DENSE ? 1.0 : (double)p->budget, p->block, p->kv_file ? "file" : "ram",
                p->cache_mb, run->n_ctx, run->n_prefill, run->n_decode, run->n_threads, run->attn.dense_layers,
                run->attn.n_sink, run->attn.n_window, run->attn.min_tokens, status[p->status]);
        if (p->status == TUNE_OK)
            fprintf(f, "%.3f,%.2f,%.2f,%.6f,%.6f,%.6f,%.1f,%.1f,", p->decode_ms, 1e3 / p->decode_ms, p->prefill_tok_s,
                    p->agree, p->kl, p->attended, p->select_us, p->gather_us);
        else
            fputs(",,,,,,,,", f);
        fprintf(f, "%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64 ",%d,%d,%d\n", p->ram_bytes, p->vram_bytes,
                p->disk_bytes, p->max_ctx, p->fits, p->front, p->recommended);
    }
    return out_file_commit(&o, "tune");
}

/* One series per (attention, tier), points filled by agreement; the front and the
 * recommendation circled. */
int tune_write_svg(const char *path, const struct tune_run *run, const char *model_name,
                   const struct tune_point *pts, int n) {
    enum { G = 5 };
    static const char *const names[G] = {"dense, RAM", "spotlight, RAM", "spotlight, file", "simhash, RAM",
                                         "simhash, file"};
    double xs[G + 2][n > 0 ? n : 1], ys[G + 2][n > 0 ? n : 1], sh[G][n > 0 ? n : 1];
    int cnt[G + 2] = {0};
    for (int i = 0; i < n; i++) {
        const struct tune_point *p = &pts[i];
        if (p->status != TUNE_OK) continue;
        const int g = p->mode == SL_ATTN_DENSE ? 0 : (p->mode == SL_ATTN_SPOTLIGHT ? 1 : 3) + p->kv_file;
        const double x = (double)p->ram_bytes / (1 << 20), y = p->decode_ms;
        xs[g][cnt[g]] = x, ys[g][cnt[g]] = y, sh[g][cnt[g]++] = p->agree;
        if (p->front) xs[G][cnt[G]] = x, ys[G][cnt[G]++] = y;
        if (p->recommended) xs[G + 1][cnt[G + 1]] = x, ys[G + 1][cnt[G + 1]++] = y;
    }
    struct svg_series ser[G + 2];
    int ns = 0;
    for (int g = 0; g < G; g++)
        if (cnt[g]) ser[ns++] = (struct svg_series){.name = names[g], .x = xs[g], .y = ys[g], .n = cnt[g], .shade = sh[g], .radius = 4.5};
    if (cnt[G]) ser[ns++] = (struct svg_series){.name = "Pareto front", .x = xs[G], .y = ys[G], .n = cnt[G], .ring = true};
    if (cnt[G + 1])
        ser[ns++] = (struct svg_series){.name = "recommended", .x = xs[G + 1], .y = ys[G + 1], .n = cnt[G + 1],
                                        .ring = true, .radius = 11};
    char title[320], xl[96];
    snprintf(title, sizeof title, "Decode latency vs memory at %" PRId64 " tokens, %.200s", run->n_ctx, model_name);
    snprintf(xl, sizeof xl, "host RAM at %" PRId64 " tokens (MiB, memory plan)", run->n_ctx);
    struct svg_chart c = {.title = title, .x_label = xl, .y_label = "decode ms / token (median)", .y_min = NAN,
                          .y_max = NAN, .shade_label = "fill: top-1 agreement"};
    struct out_file o;
    if (out_file_open(&o, "tune", path)) return -1;
    svg_chart_write(o.f, &c, ser, ns);
    return out_file_commit(&o, "tune");
}

void tune_print_front(FILE *f, const struct tune_point *pts, int n) {
    const double mib = 1.0 / (1 << 20);
    fprintf(f, "%-40s %9s %7s %9s %7s %8s %8s %8s %9s %5s\n", "configuration", "ms/token", "tok/s", "prefill/s",
            "agree", "KL", "RAM MiB", "VRAM MiB", "disk MiB", "fits");
    for (int i = 0; i < n; i++) {
        const struct tune_point *p = &pts[i];
        if (!p->front) continue;
        char name[128];
        tune_point_name(p, name, sizeof name);
        fprintf(f, "%-40s %9.2f %7.1f %9.1f %7.3f %8.4f %8.1f %8.1f %9.1f %5s%s\n", name, p->decode_ms,
                1e3 / p->decode_ms, p->prefill_tok_s, p->agree, p->kl, p->ram_bytes * mib, p->vram_bytes * mib,
                p->disk_bytes * mib, p->fits ? "yes" : "no", p->recommended ? "  <- recommended" : "");
    }
}
