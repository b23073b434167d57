/* `spotlight eval-retrieval`: how well hashes retrieve the keys that carry attention, on
 * held-out q/k dumps (core/hash-eval.h): trained Spotlight hash files against SimHash at many
 * code lengths, the untrained hash (~ sign(x)) and the exact top-k, per layer and KV head at
 * several budgets. Writes PREFIX.csv (every cell), PREFIX.md (summary tables, per-layer
 * table, the paper's target checked) and PREFIX.svg (recall vs bits at the 2% budget). */
#include <dirent.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash-eval.h"
#include "core/hash.h"
#include "spotlight/error.h"
#include "spotlight/model.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/out-file.h"
#include "tools/qk-data.h"
#include "tools/svg-plot.h"

#define MAX_METHODS 24
#define FIRST_LAYER 2 /* the summary averages layers 2..L-1: the runtime keeps layers 0-1 dense */

static void usage(FILE *f) {
    fprintf(f, "usage: spotlight eval-retrieval [-m MODEL] [--qk DIR] [--hash FILE]... [--simhash-bits LIST]\n"
               "                               [--budgets LIST] [--queries N] [-o PREFIX]\n"
               "  Measures, on held-out q/k dumps (default <cache>/qk/<model file>-heldout), the attention-mass\n"
               "  recall and the IoU with the exact top-k of every hash, per layer and KV head. Hashes: each\n"
               "  --hash FILE (default every trained <cache>/hash/<model file>.b*.slhash), SimHash at each of\n"
               "  --simhash-bits (default 64,128,256,512,1024; 'none' for none), the untrained hash (sign) and\n"
               "  the exact top-k. --budgets: fractions of the context (default 0.01,0.02,0.05,0.1).\n"
               "  --queries: query positions per sequence and layer (default 512). Writes PREFIX.csv,\n"
               "  PREFIX.md and PREFIX.svg (default PREFIX: retrieval).\n");
}

struct method {
    char name[32]; /* spotlight, simhash, sign, exact */
    int32_t bits;
    sl_hash *h;    /* NULL for exact */
};

/* "a,b,c" into out[]; -1 after an error line. */
static int parse_list(const char *opt, const char *s, double lo, double hi, bool integer, double *out, int cap) {
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        double v = strtod(p, &end);
        if (end == p || (*end && *end != ',') || !(v >= lo && v <= hi) || (integer && v != floor(v)) || n == cap) {
            fprintf(stderr, "spotlight eval-retrieval: %s must be a comma-separated list of up to %d %s in [%g, %g]\n",
                    opt, cap, integer ? "integers" : "numbers", lo, hi);
            return -1;
        }
        out[n++] = v;
        p = *end ? end + 1 : end;
    }
    if (n == 0) {
        fprintf(stderr, "spotlight eval-retrieval: %s is empty\n", opt);
        return -1;
    }
    return n;
}

static int by_bits(const void *a, const void *b) {
    const struct method *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->bits > y->bits) - (x->bits < y->bits);
}

/* The trained hash files of the model in the cache. */
static int find_hashes(const char *cache, const char *base, char paths[][4096], int cap) {
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/hash", cache);
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    size_t bl = strlen(base);
    while ((e = readdir(d)) && n < cap) {
        size_t el = strlen(e->d_name);
        if (el > bl + 9 && strncmp(e->d_name, base, bl) == 0 && strncmp(e->d_name + bl, ".b", 2) == 0 &&
            strcmp(e->d_name + el - 7, ".slhash") == 0 && strlen(dir) + el + 2 <= 4096)
            snprintf(paths[n++], 4096, "%.3800s/%.255s", dir, e->d_name);
    }
    closedir(d);
    return n;
}

/* A Spotlight hash must be trained on every layer (1: not; said as a note when skip_partial,
 * else as an error), and not on the dumps it is evaluated on (-1). */
static int check_trained(const sl_hash *h, const char *path, const char *eval_dir, bool skip_partial) {
    const struct sl_hash_params *p = sl_hash_get_params(h);
    for (int32_t l = 0; l < p->n_layer; l++) {
        struct sl_hash_layer_info info;
        sl_hash_layer_info_get(h, l, &info);
        if (info.status != SL_HASH_TRAINED) {
            if (skip_partial) fprintf(stderr, "eval-retrieval: skipping %s: not trained on layer %d yet\n", path, l);
            else fprintf(stderr, "spotlight eval-retrieval: %s is not trained on layer %d (finish it with train-hash)\n", path, l);
            return skip_partial ? 1 : -1;
        }
    }
    const char *data = strstr(sl_hash_note(h), "; data ");
    char a[PATH_MAX], b[PATH_MAX];
    if (data && realpath(data + 7, a) && realpath(eval_dir, b) && strcmp(a, b) == 0) {
        fprintf(stderr, "spotlight eval-retrieval: %s was trained on %s; evaluate on held-out dumps (--qk)\n", path, eval_dir);
        return -1;
    }
    return 0;
}

struct results {
    int n_methods, n_layers, hkv, nb;
    double *recall, *iou; /* (methods, layers, hkv, nb) */
};
#define CELL(r, m, l, g, b) ((((int64_t)(m) * (r)->n_layers + (l)) * (r)->hkv + (g)) * (r)->nb + (b))

/* Mean over layers FIRST_LAYER..L-1 (all layers when there are fewer) and KV heads. */
static double summary(const struct results *r, const double *v, int m, int b) {
    int l0 = r->n_layers > FIRST_LAYER ? FIRST_LAYER : 0;
    double s = 0;
    for (int l = l0; l < r->n_layers; l++)
        for (int g = 0; g < r->hkv; g++) s += v[CELL(r, m, l, g, b)];
    return s / ((double)(r->n_layers - l0) * r->hkv);
}

static int write_csv(const char *prefix, const struct method *ms, const struct results *r, const double *budgets,
                     int queries_total) {
    char path[4200];
    snprintf(path, sizeof path, "%s.csv", prefix);
    struct out_file o;
    if (out_file_open(&o, "eval-retrieval", path)) return -1;
    fprintf(o.f, "method,bits,layer,kv_head,budget,recall,iou,queries\n");
    for (int m = 0; m < r->n_methods; m++)
        for (int l = 0; l < r->n_layers; l++)
            for (int g = 0; g < r->hkv; g++)
                for (int b = 0; b < r->nb; b++)
                    fprintf(o.f, "%s,%d,%d,%d,%g,%.6f,%.6f,%d\n", ms[m].name, ms[m].bits, l, g, budgets[b],
                            r->recall[CELL(r, m, l, g, b)], r->iou[CELL(r, m, l, g, b)], queries_total);
    return out_file_commit(&o, "eval-retrieval");
}

static int find_method(const struct method *ms, int n, const char *name, int32_t bits) {
    for (int m = 0; m < n; m++)
        if (strcmp(ms[m].name, name) == 0 && ms[m].bits == bits) return m;
    return -1;
}

/* The paper's target, made stricter: Spotlight at b bits >= SimHash at 8b bits in recall at
 * the 2% budget. Writes one line per Spotlight hash into f (and stdout). */
static void target_lines(FILE *f, const struct method *ms, const struct results *r, int b2) {
    for (int m = 0; m < r->n_methods; m++) {
        if (strcmp(ms[m].name, "spotlight") != 0) continue;
        int s = find_method(ms, r->n_methods, "simhash", 8 * ms[m].bits);
        if (s < 0) {
            fprintf(f, "- Spotlight %d bits: no SimHash at %d bits in this run\n", ms[m].bits, 8 * ms[m].bits);
            continue;
        }
        double a = summary(r, r->recall, m, b2), c = summary(r, r->recall, s, b2);
        fprintf(f, "- Spotlight %d bits: recall %.3f vs SimHash %d bits: %.3f (%+.3f) — target %s\n", ms[m].bits, a,
                8 * ms[m].bits, c, a - c, a >= c ? "met" : "missed");
    }
}

static int write_md(const char *prefix, const char *model, const struct method *ms, const struct results *r,
                    const double *budgets, int b2, int n_seq, int seq_len, int queries) {
    char path[4200];
    snprintf(path, sizeof path, "%s.md", prefix);
    struct out_file o;
    if (out_file_open(&o, "eval-retrieval", path)) return -1;
    FILE *f = o.f;
    int l0 = r->n_layers > FIRST_LAYER ? FIRST_LAYER : 0;
    fprintf(f, "# Retrieval quality: %s\n\n", model);
    fprintf(f, "Held-out text: %d sequence(s) of %d tokens; %d query positions per sequence and layer, from the "
               "last 7/8 of each sequence. Selection per KV head from the causal prefix, by the score summed over "
               "the group's query heads; no sinks or window. Means over layers %d..%d and all KV heads.\n\n",
            n_seq, seq_len, queries, l0, r->n_layers - 1);
    for (int t = 0; t < 2; t++) {
        fprintf(f, "## %s\n\n| method | bits |", t ? "IoU with the exact top-k" : "Attention-mass recall");
        for (int b = 0; b < r->nb; b++) fprintf(f, " %g%% |", budgets[b] * 100);
        fprintf(f, "\n|---|---|");
        for (int b = 0; b < r->nb; b++) fprintf(f, "---|");
        fputc('\n', f);
        for (int m = 0; m < r->n_methods; m++) {
            if (ms[m].h) fprintf(f, "| %s | %d |", ms[m].name, ms[m].bits);
            else fprintf(f, "| %s | — |", ms[m].name);
            for (int b = 0; b < r->nb; b++) fprintf(f, " %.3f |", summary(r, t ? r->iou : r->recall, m, b));
            fputc('\n', f);
        }
        fputc('\n', f);
    }
    fprintf(f, "## Target: Spotlight at b bits ≥ SimHash at 8b bits (recall at %g%%)\n\n", budgets[b2] * 100);
    target_lines(f, ms, r, b2);
    fprintf(f, "\n## Recall at %g%% per layer (mean over KV heads)\n\n| layer |", budgets[b2] * 100);
    for (int m = 0; m < r->n_methods; m++) fprintf(f, ms[m].h ? " %s %d |" : " %s |", ms[m].name, ms[m].bits);
    fprintf(f, "\n|---|");
    for (int m = 0; m < r->n_methods; m++) fprintf(f, "---|");
    fputc('\n', f);
    for (int l = 0; l < r->n_layers; l++) {
        fprintf(f, "| %d |", l);
        for (int m = 0; m < r->n_methods; m++) {
            double s = 0;
            for (int g = 0; g < r->hkv; g++) s += r->recall[CELL(r, m, l, g, b2)];
            fprintf(f, " %.3f |", s / r->hkv);
        }
        fputc('\n', f);
    }
    return out_file_commit(&o, "eval-retrieval");
}

static int write_svg(const char *prefix, const char *model, const struct method *ms, const struct results *r,
                     double budget, int b2) {
    char path[4200], title[512];
    snprintf(path, sizeof path, "%s.svg", prefix);
    snprintf(title, sizeof title, "Attention-mass recall at %g%% budget, %s", budget * 100, model);
    /* one line per method name over its bit widths; the exact top-k as a flat dashed line */
    static const char *const names[] = {"spotlight", "simhash", "sign"};
    double xs[4][MAX_METHODS], ys[4][MAX_METHODS];
    struct svg_series ser[4];
    int ns = 0;
    int32_t bmin = INT32_MAX, bmax = 0;
    for (int m = 0; m < r->n_methods; m++)
        if (ms[m].h) bmin = ms[m].bits < bmin ? ms[m].bits : bmin, bmax = ms[m].bits > bmax ? ms[m].bits : bmax;
    for (int k = 0; k < 3; k++) {
        int n = 0;
        for (int m = 0; m < r->n_methods; m++)
            if (strcmp(ms[m].name, names[k]) == 0) xs[ns][n] = ms[m].bits, ys[ns][n++] = summary(r, r->recall, m, b2);
        if (n) ser[ns] = (struct svg_series){.name = names[k], .x = xs[ns], .y = ys[ns], .n = n}, ns++;
    }
    int ex = find_method(ms, r->n_methods, "exact", 0);
    if (ex >= 0 && bmax > 0) {
        xs[ns][0] = bmin, xs[ns][1] = bmax;
        ys[ns][0] = ys[ns][1] = summary(r, r->recall, ex, b2);
        ser[ns] = (struct svg_series){.name = "exact top-k", .x = xs[ns], .y = ys[ns], .n = 2, .dashed = true}, ns++;
    }
    struct svg_chart c = {.title = title, .x_label = "code bits (log scale)",
                          .y_label = "recall (mean over layers 2..L-1)", .log2_x = true, .y_min = 0.0, .y_max = 1.0};
    struct out_file o;
    if (out_file_open(&o, "eval-retrieval", path)) return -1;
    svg_chart_write(o.f, &c, ser, ns);
    return out_file_commit(&o, "eval-retrieval");
}

int cmd_eval_retrieval(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"qk", required_argument, 0, 'q'},
        {"hash", required_argument, 0, 'H'}, {"simhash-bits", required_argument, 0, 'S'},
        {"budgets", required_argument, 0, 'b'}, {"queries", required_argument, 0, 'Q'},
        {"out", required_argument, 0, 'o'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *model = NULL, *qk = NULL, *prefix = "retrieval";
    static char hash_paths[MAX_METHODS][4096];
    int n_hash_paths = 0, n_sim = 5, nb = 4;
    double sim_bits[MAX_METHODS] = {64, 128, 256, 512, 1024}, budgets_d[SL_HASH_EVAL_MAX_BUDGETS] = {0.01, 0.02, 0.05, 0.1};
    int64_t queries = 512;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "m:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'q': qk = optarg; break;
        case 'o': prefix = optarg; break;
        case 'H':
            if (n_hash_paths == 8) {
                fprintf(stderr, "spotlight eval-retrieval: at most 8 --hash files\n");
                return 2;
            }
            snprintf(hash_paths[n_hash_paths++], 4096, "%s", optarg);
            break;
        case 'S':
            if (strcmp(optarg, "none") == 0) n_sim = 0;
            else if ((n_sim = parse_list("--simhash-bits", optarg, 32, 4096, true, sim_bits, 8)) < 0) return 2;
            for (int i = 0; i < n_sim; i++)
                if ((int)sim_bits[i] % 32) {
                    fprintf(stderr, "spotlight eval-retrieval: --simhash-bits must be multiples of 32\n");
                    return 2;
                }
            break;
        case 'b':
            if ((nb = parse_list("--budgets", optarg, 1e-4, 1.0, false, budgets_d, SL_HASH_EVAL_MAX_BUDGETS)) < 0) return 2;
            break;
        case 'Q': if (cli_parse_i64("eval-retrieval", "--queries", optarg, 1, 1 << 20, &queries)) return 2; break;
        case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "spotlight eval-retrieval: unknown or incomplete option '%s' (see --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "spotlight eval-retrieval: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    char path[4096], cache[4000], qk_dir[8200];
    if (cli_model_path(model, path, sizeof path) != 0 || cli_model_dir(cache, sizeof cache) != 0) return 1;
    for (int i = 0; i < 3; i++) { /* before the evaluation: the outputs' folder made, files creatable there */
        static const char *const ext[] = {".csv", ".md", ".svg"};
        char out_path[4200];
        snprintf(out_path, sizeof out_path, "%s%s", prefix, ext[i]);
        if (out_file_check("eval-retrieval", out_path)) return 1;
    }
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    if (qk) snprintf(qk_dir, sizeof qk_dir, "%s", qk);
    else snprintf(qk_dir, sizeof qk_dir, "%s/qk/%s-heldout", cache, base);
    bool from_cache = n_hash_paths == 0;
    if (from_cache) n_hash_paths = find_hashes(cache, base, hash_paths, 8);

    int status = 1, rc;
    struct method ms[MAX_METHODS];
    int n_methods = 0;
    struct results res = {0};
    struct qk_layer ql = {0};
    struct sl_hash_eval_cell *cells = NULL;
    sl_model *mdl = NULL;
    memset(ms, 0, sizeof ms);
    if ((rc = sl_model_load(path, &mdl))) {
        cli_report(path, rc);
        return 1;
    }
    const struct sl_model_config *cfg = sl_model_config(mdl);
    uint8_t fp[32];
    if ((rc = sl_model_fingerprint(mdl, fp))) {
        cli_report(path, rc);
        goto done;
    }
    for (int i = 0; i < n_hash_paths; i++) {
        struct method *m = &ms[n_methods];
        if ((rc = sl_hash_load(hash_paths[i], fp, &m->h))) {
            cli_report(hash_paths[i], rc);
            goto done;
        }
        n_methods++;
        int ok = check_trained(m->h, hash_paths[i], qk_dir, from_cache);
        if (ok < 0) goto done;
        if (ok > 0) {
            sl_hash_free(m->h);
            m->h = NULL;
            n_methods--;
            continue;
        }
        snprintf(m->name, sizeof m->name, "%s", sl_hash_get_params(m->h)->kind == SL_HASH_SIMHASH ? "simhash" : "spotlight");
        m->bits = sl_hash_get_params(m->h)->bits;
    }
    if (from_cache && n_methods == 0)
        fprintf(stderr, "eval-retrieval: no trained hash in %s/hash (spotlight train-hash); baselines only\n", cache);
    struct sl_hash_params hp = sl_hash_default_params();
    sl_hash_params_from_config(cfg, &hp);
    for (int i = 0; i <= n_sim; i++) {
        hp.kind = i < n_sim ? SL_HASH_SIMHASH : SL_HASH_SPOTLIGHT;
        hp.bits = i < n_sim ? (int32_t)sim_bits[i] : cfg->head_dim;
        if (i == n_sim && (hp.bits % 32 || hp.bits > SL_HASH_MAX_BITS)) break; /* no sign baseline */
        struct method *m = &ms[n_methods];
        if ((rc = sl_hash_create(&hp, &m->h))) {
            cli_report("hash", rc);
            goto done;
        }
        snprintf(m->name, sizeof m->name, "%s", i < n_sim ? "simhash" : "sign");
        m->bits = hp.bits;
        n_methods++;
    }
    qsort(ms, (size_t)n_methods, sizeof *ms, by_bits);
    snprintf(ms[n_methods].name, sizeof ms[n_methods].name, "exact");
    n_methods++;

    const sl_hash *hashes[MAX_METHODS];
    for (int m = 0; m < n_methods - 1; m++) hashes[m] = ms[m].h;
    float budgets[SL_HASH_EVAL_MAX_BUDGETS];
    int b2 = 0;
    for (int b = 0; b < nb; b++) {
        budgets[b] = (float)budgets_d[b];
        if (fabs(budgets_d[b] - 0.02) < fabs(budgets_d[b2] - 0.02)) b2 = b;
    }
    res = (struct results){n_methods, cfg->n_layer, cfg->n_head_kv, nb, NULL, NULL};
    size_t n_cells = (size_t)n_methods * cfg->n_layer * cfg->n_head_kv * nb;
    res.recall = calloc(n_cells, sizeof(double));
    res.iou = calloc(n_cells, sizeof(double));
    cells = malloc(sizeof *cells * (size_t)n_methods * cfg->n_head_kv * nb);
    if (!res.recall || !res.iou || !cells) {
        fprintf(stderr, "spotlight eval-retrieval: out of memory\n");
        goto done;
    }
    int n_seq = 0, seq_len = 0;
    const double t0 = cli_now();
    for (int32_t l = 0; l < cfg->n_layer; l++) {
        if ((rc = qk_layer_load(qk_dir, l, cfg, fp, &ql))) {
            cli_report(qk_dir, rc);
            goto done;
        }
        n_seq = ql.dump.n_seq, seq_len = ql.dump.seq_len;
        for (int32_t s = 0; s < n_seq; s++) {
            struct sl_hash_train_seq seq = qk_layer_seq(&ql, s);
            struct sl_hash_eval_params p = {budgets, nb, (int32_t)queries, seq.seq_len / 8 > 0 ? seq.seq_len / 8 : 1,
                                            0xE7A1 + (uint64_t)s};
            if ((rc = sl_hash_eval_layer(hashes, n_methods - 1, l, &seq, &p, cells))) {
                cli_report("evaluation", rc);
                goto done;
            }
            for (int m = 0; m < n_methods; m++)
                for (int g = 0; g < cfg->n_head_kv; g++)
                    for (int b = 0; b < nb; b++) {
                        const struct sl_hash_eval_cell *e = &cells[((int64_t)m * cfg->n_head_kv + g) * nb + b];
                        res.recall[CELL(&res, m, l, g, b)] += e->recall / n_seq;
                        res.iou[CELL(&res, m, l, g, b)] += e->iou / n_seq;
                    }
        }
        qk_layer_free(&ql);
        double el = cli_now() - t0;
        fprintf(stderr, "\reval-retrieval: layer %2d/%d  %.0f s  ETA %.0f s   ", l + 1, cfg->n_layer, el,
                el / (l + 1) * (cfg->n_layer - l - 1));
    }
    fputc('\n', stderr);
    if (write_csv(prefix, ms, &res, budgets_d, (int)queries * n_seq) ||
        write_md(prefix, base, ms, &res, budgets_d, b2, n_seq, seq_len, (int)queries) ||
        write_svg(prefix, base, ms, &res, budgets_d[b2], b2))
        goto done;
    printf("attention-mass recall, mean over layers %d..%d (%d x %d held-out tokens):\n", FIRST_LAYER,
           cfg->n_layer - 1, n_seq, seq_len);
    printf("%-10s %5s", "method", "bits");
    for (int b = 0; b < nb; b++) printf("  %6g%%", budgets_d[b] * 100);
    printf("\n");
    for (int m = 0; m < n_methods; m++) {
        printf("%-10s %5d", ms[m].name, ms[m].bits);
        for (int b = 0; b < nb; b++) printf("  %7.3f", summary(&res, res.recall, m, b));
        printf("\n");
    }
    target_lines(stdout, ms, &res, b2);
    printf("wrote %s.csv, %s.md, %s.svg\n", prefix, prefix, prefix);
    status = 0;
done:
    qk_layer_free(&ql);
    for (int m = 0; m < n_methods; m++) sl_hash_free(ms[m].h);
    free(res.recall);
    free(res.iou);
    free(cells);
    sl_model_free(mdl);
    return status;
}
