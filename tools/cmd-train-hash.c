/* `spotlight train-hash`: trains the Spotlight hash of every layer on q/k dumps
 * (`spotlight dump-qk`) and writes a hash file. Layer by layer, saving after each, so an
 * interrupted run resumes at the first layer not yet trained (the file records each layer's
 * status). With --eval-qk, each layer's held-out attention-mass recall at --budget is
 * measured before and after training and stored in the file. */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/hash-eval.h"
#include "core/hash-train.h"
#include "core/hash.h"
#include "core/internal.h"
#include "spotlight/error.h"
#include "spotlight/model.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/out-file.h"
#include "tools/qk-data.h"

static void usage(FILE *f) {
    fprintf(f, "usage: spotlight train-hash [-m MODEL] [--qk DIR] [--eval-qk DIR] [-o FILE] [--bits B] [--steps N]\n"
               "                           [--budget F] [--restart] [--quick]\n"
               "  Trains the per-layer Spotlight hash on DIR/layer-XX.qk (default <cache>/qk/<model file>) and\n"
               "  writes FILE (default <cache>/hash/<model file>.b<B>.slhash). Resumes a partly trained FILE\n"
               "  unless --restart. --eval-qk: held-out dumps for recall (default <cache>/qk/<model file>-heldout\n"
               "  when present). Defaults: 64 bits, 300 steps per layer, budget 0.02.\n"
               "  --quick: 20 steps of 32 queries x 8 positives x 32 negatives per layer (seconds, not minutes):\n"
               "  a hash for tests and smoke runs, far from a trained one's recall.\n");
}

static float mean_recall(const sl_hash *h, int32_t layer, const struct qk_layer *ev, float budget) {
    double sum = 0;
    for (int32_t s = 0; s < ev->dump.n_seq; s++) {
        struct sl_hash_train_seq seq = qk_layer_seq(ev, s);
        float r;
        int32_t min_pos = seq.seq_len / 8 > 0 ? seq.seq_len / 8 : 1;
        if (sl_hash_attention_recall(h, layer, &seq, budget, 128, min_pos, 1234 + (uint64_t)s, &r)) return NAN;
        sum += r;
    }
    return (float)(sum / ev->dump.n_seq);
}

int cmd_train_hash(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"qk", required_argument, 0, 'q'},
        {"eval-qk", required_argument, 0, 'e'}, {"out", required_argument, 0, 'o'},
        {"bits", required_argument, 0, 'B'}, {"steps", required_argument, 0, 'S'},
        {"budget", required_argument, 0, 'g'}, {"restart", no_argument, 0, 'r'},
        {"quick", no_argument, 0, 'Q'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *model = NULL, *qk = NULL, *eval_qk = NULL, *out = NULL;
    int64_t bits = 64, steps = 300;
    float budget = 0.02f;
    bool restart = false, quick = false, steps_given = false;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "m:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'q': qk = optarg; break;
        case 'e': eval_qk = optarg; break;
        case 'o': out = optarg; break;
        case 'B': if (cli_parse_i64("train-hash", "--bits", optarg, 32, 1024, &bits) || bits % 32) {
                      if (bits % 32) fprintf(stderr, "spotlight train-hash: --bits must be a multiple of 32\n");
                      return 2;
                  }
                  break;
        case 'S': if (cli_parse_i64("train-hash", "--steps", optarg, 1, 1 << 24, &steps)) return 2;
                  steps_given = true;
                  break;
        case 'g': if (cli_parse_f32("train-hash", "--budget", optarg, 1e-4f, 1.0f, &budget)) return 2; break;
        case 'r': restart = true; break;
        case 'Q': quick = true; break;
        case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "spotlight train-hash: unknown or incomplete option '%s' (see --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (quick && !steps_given) steps = 20;
    if (optind < argc) {
        fprintf(stderr, "spotlight train-hash: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    char path[4096], cache[4000], qk_dir[8200], ev_dir[8200], out_path[8300];
    if (cli_model_path(model, path, sizeof path) != 0 || cli_model_dir(cache, sizeof cache) != 0) return 1;
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    snprintf(qk_dir, sizeof qk_dir, "%s", qk ? qk : "");
    if (!qk) snprintf(qk_dir, sizeof qk_dir, "%s/qk/%s", cache, base);
    struct stat st;
    bool have_eval = true;
    if (eval_qk) snprintf(ev_dir, sizeof ev_dir, "%s", eval_qk);
    else {
        snprintf(ev_dir, sizeof ev_dir, "%s/qk/%s-heldout", cache, base);
        have_eval = stat(ev_dir, &st) == 0;
    }
    if (out) snprintf(out_path, sizeof out_path, "%s", out);
    else snprintf(out_path, sizeof out_path, "%s/hash/%s.b%" PRId64 ".slhash", cache, base, bits);
    /* before minutes of training: the folder made, a file creatable there */
    if (out_file_check("train-hash", out_path)) return 1;

    int status = 1, rc;
    sl_model *m = NULL;
    sl_hash *h = NULL;
    sl_hash_trainer *t = NULL;
    struct qk_layer tr = {0}, ev = {0};
    if ((rc = sl_model_load(path, &m))) {
        cli_report(path, rc);
        return 1;
    }
    const struct sl_model_config *cfg = sl_model_config(m);
    uint8_t fp[32];
    if ((rc = sl_model_fingerprint(m, fp))) {
        cli_report(path, rc);
        goto done;
    }
    struct sl_hash_params hp = sl_hash_default_params();
    sl_hash_params_from_config(cfg, &hp);
    hp.bits = (int32_t)bits;
    hp.kind = SL_HASH_SPOTLIGHT;
    if (!restart && access(out_path, F_OK) == 0) {
        rc = sl_hash_load(out_path, fp, &h);
        const struct sl_hash_params *got = h ? sl_hash_get_params(h) : NULL;
        if (rc || got->bits != hp.bits || got->kind != SL_HASH_SPOTLIGHT) {
            fprintf(stderr, "spotlight train-hash: %s exists but cannot be resumed (%s); use --restart\n", out_path,
                    rc ? sl_strerror(rc) : "other bits or kind");
            goto done;
        }
        fprintf(stderr, "train-hash: resuming %s\n", out_path);
    } else if ((rc = sl_hash_create(&hp, &h))) {
        cli_report("hash", rc);
        goto done;
    }
    char note[8400];
    struct sl_hash_train_params dp = sl_hash_train_default_params();
    if (quick) {
        dp.queries = 32;
        dp.pos_samples = 8;
        dp.neg_samples = 32;
    }
    snprintf(note, sizeof note,
             "spotlight train-hash --bits %" PRId64 " --steps %" PRId64 " --budget %g%s; lr %g, gamma %g, %d queries x %d "
             "positives x %d negatives per step; data %s",
             bits, steps, budget, quick ? " --quick" : "", dp.lr, dp.gamma, dp.queries, dp.pos_samples, dp.neg_samples, qk_dir);
    sl_hash_set_note(h, note);
    const double t0 = cli_now();
    int32_t trained_now = 0;
    for (int32_t l = 0; l < cfg->n_layer; l++) {
        struct sl_hash_layer_info info;
        sl_hash_layer_info_get(h, l, &info);
        if (info.status == SL_HASH_TRAINED) continue;
        if ((rc = qk_layer_load(qk_dir, l, cfg, fp, &tr)) || (have_eval && (rc = qk_layer_load(ev_dir, l, cfg, fp, &ev)))) {
            cli_report(have_eval && tr.q ? ev_dir : qk_dir, rc);
            goto done;
        }
        sl_hash_reset_layer(h, l); /* a layer left half-trained restarts from its initial weights */
        float before = have_eval ? mean_recall(h, l, &ev, budget) : NAN;
        struct sl_hash_train_params tp = dp;
        tp.steps = steps;
        tp.min_pos = tr.dump.seq_len / 16 > 0 ? tr.dump.seq_len / 16 : 1;
        tp.pos_frac = budget;
        tp.seed = 0x5EED + (uint64_t)l;
        if ((rc = sl_hash_trainer_create(h, l, &tp, tr.dump.seq_len, &t))) {
            cli_report("trainer", rc);
            goto done;
        }
        float ema = NAN, loss = 0;
        const double tl = cli_now();
        for (int64_t s = 0; s < steps; s++) {
            struct sl_hash_train_seq seq = qk_layer_seq(&tr, (int32_t)(s % tr.dump.n_seq));
            if ((rc = sl_hash_trainer_step(t, &seq, &loss))) {
                cli_report("train", rc);
                goto done;
            }
            ema = isnan(ema) ? loss : 0.95f * ema + 0.05f * loss;
            if (s % 10 == 9 || s == steps - 1) {
                double done_steps = (double)trained_now * steps + (double)(s + 1);
                double left = 0;
                for (int32_t r = l; r < cfg->n_layer; r++) {
                    struct sl_hash_layer_info ri;
                    sl_hash_layer_info_get(h, r, &ri);
                    left += ri.status == SL_HASH_TRAINED ? 0 : (double)steps;
                }
                left -= (double)(s + 1);
                double rate = done_steps / (cli_now() - t0);
                fprintf(stderr, "\rtrain-hash: layer %2d/%d  step %4" PRId64 "/%" PRId64 "  loss %.4f  ETA %.0f s   ",
                        l + 1, cfg->n_layer, s + 1, steps, ema, left / rate);
            }
        }
        sl_hash_trainer_free(t);
        t = NULL;
        float after = have_eval ? mean_recall(h, l, &ev, budget) : NAN;
        info = (struct sl_hash_layer_info){SL_HASH_TRAINED, steps, ema, after, budget};
        sl_hash_layer_info_set(h, l, &info);
        if ((rc = sl_hash_save(h, fp, out_path))) {
            cli_report(out_path, rc);
            goto done;
        }
        fprintf(stderr, "\rtrain-hash: layer %2d/%d  loss %.4f  held-out recall@%g %.3f -> %.3f  (%.1f s)          \n",
                l + 1, cfg->n_layer, ema, budget, before, after, cli_now() - tl);
        trained_now++;
        qk_layer_free(&tr);
        qk_layer_free(&ev);
    }
    if ((rc = sl_hash_save(h, fp, out_path))) {
        cli_report(out_path, rc);
        goto done;
    }
    fprintf(stderr, "train-hash: %d layers trained in %.1f s -> %s\n", trained_now, cli_now() - t0, out_path);
    status = 0;
done:
    sl_hash_trainer_free(t);
    qk_layer_free(&tr);
    qk_layer_free(&ev);
    sl_hash_free(h);
    sl_model_free(m);
    return status;
}
