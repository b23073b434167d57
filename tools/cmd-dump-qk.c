/* `spotlight dump-qk -f TEXT... [--seq-len N] [--seqs N] [-o DIR]`: runs the model over real
 * text and writes every layer's post-RoPE queries and keys (core/qk-dump.h), the training and
 * evaluation data of the Spotlight hash. Texts (files, or directories of *.txt read in name
 * order) are read until enough tokens are in hand; each sequence is seq-len consecutive
 * tokens, starting with BOS when the model adds one, evaluated from an empty cache. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/qk-dump.h"
#include "spotlight/context.h"
#include "spotlight/error.h"
#include "spotlight/tokenizer.h"
#include "storage/atomic-file.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/out-file.h"

#define MAX_INPUTS 64

static void usage(FILE *f) {
    fprintf(f, "usage: spotlight dump-qk [-m MODEL] -f TEXT [-f TEXT ...] [--seq-len N] [--seqs N] [-o DIR]\n"
               "                        [-b BATCH] [-t THREADS]\n"
               "  Writes every layer's post-RoPE q and k over SEQS sequences of SEQ-LEN tokens (default\n"
               "  2 x min(8192, trained context)) to DIR/layer-XX.qk (default <cache>/qk/<model file>/).\n"
               "  TEXT is a file or a directory of .txt files (read in name order).\n");
}

/* Token ids of the texts, until `need` are in hand. Returns the count or a negative error. */
static int64_t gather_tokens(const sl_tokenizer *tok, char **inputs, int n_inputs, int64_t need,
                             int32_t **ids_out) {
    int64_t n = 0, cap = 0;
    int32_t *ids = NULL;
    for (int i = 0; i < n_inputs && n < need; i++) {
        struct stat st;
        if (stat(inputs[i], &st) != 0) {
            fprintf(stderr, "spotlight dump-qk: %s: %s\n", inputs[i], strerror(errno));
            free(ids);
            return -1;
        }
        struct dirent **names = NULL;
        int n_names = 1;
        if (S_ISDIR(st.st_mode) && (n_names = scandir(inputs[i], &names, NULL, alphasort)) < 0) {
            fprintf(stderr, "spotlight dump-qk: %s: %s\n", inputs[i], strerror(errno));
            free(ids);
            return -1;
        }
        for (int j = 0; j < n_names && n < need; j++) {
            char path[4096];
            if (names) {
                size_t len = strlen(names[j]->d_name);
                if (len < 5 || strcmp(names[j]->d_name + len - 4, ".txt") != 0) continue;
                snprintf(path, sizeof path, "%s/%s", inputs[i], names[j]->d_name);
            } else {
                snprintf(path, sizeof path, "%s", inputs[i]);
            }
            size_t len = 0;
            char *text = cli_read_file("dump-qk", path, &len);
            if (!text) {
                free(ids);
                return -1;
            }
            int64_t m = sl_tokenize(tok, text, len, false, false, NULL, 0);
            if (m > 0 && n + m > cap) {
                cap = (n + m) * 2;
                int32_t *grown = realloc(ids, (size_t)cap * sizeof *ids);
                if (!grown) m = SL_ENOMEM;
                else ids = grown;
            }
            if (m > 0) m = sl_tokenize(tok, text, len, false, false, ids + n, m);
            free(text);
            if (m < 0) {
                cli_report(path, (int)m);
                free(ids);
                return -1;
            }
            n += m;
        }
        for (int j = 0; names && j < n_names; j++) free(names[j]);
        free(names);
    }
    *ids_out = ids;
    return n;
}

int cmd_dump_qk(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"file", required_argument, 0, 'f'},
        {"seq-len", required_argument, 0, 'L'}, {"seqs", required_argument, 0, 'S'},
        {"out", required_argument, 0, 'o'}, {"batch-size", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *model = NULL, *out_dir = NULL;
    char *inputs[MAX_INPUTS];
    int n_inputs = 0;
    int64_t seq_len = 0, n_seq = 2, n_batch = 512, n_threads = 0;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "m:f:o:b:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'o': out_dir = optarg; break;
        case 'f':
            if (n_inputs == MAX_INPUTS) {
                fprintf(stderr, "spotlight dump-qk: at most %d -f inputs\n", MAX_INPUTS);
                return 2;
            }
            inputs[n_inputs++] = optarg;
            break;
        case 'L': if (cli_parse_i64("dump-qk", "--seq-len", optarg, 16, 1 << 20, &seq_len)) return 2; break;
        case 'S': if (cli_parse_i64("dump-qk", "--seqs", optarg, 1, 1 << 16, &n_seq)) return 2; break;
        case 'b': if (cli_parse_i64("dump-qk", "-b", optarg, 1, 1 << 16, &n_batch)) return 2; break;
        case 't': if (cli_parse_i64("dump-qk", "-t", optarg, 1, 1024, &n_threads)) return 2; break;
        case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "spotlight dump-qk: unknown or incomplete option '%s' (see --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (n_inputs == 0 || optind < argc) {
        fprintf(stderr, "spotlight dump-qk: give the text with -f FILE|DIR (see --help)\n");
        return 2;
    }
    char path[4096];
    if (cli_model_path(model, path, sizeof path) != 0) return 1;
    cli_check_threads("dump-qk", n_threads);

    int status = 1, rc;
    sl_model *m = NULL;
    sl_tokenizer *tok = NULL;
    sl_context *ctx = NULL;
    struct sl_qk_writer *w = NULL;
    int32_t *ids = NULL, *seq = NULL;
    if ((rc = sl_model_load(path, &m)) || (rc = sl_tokenizer_from_gguf(sl_model_gguf(m), &tok))) {
        cli_report(path, rc);
        goto done;
    }
    const struct sl_model_config *cfg = sl_model_config(m);
    if (seq_len == 0) seq_len = cfg->n_ctx_train < 8192 ? cfg->n_ctx_train : 8192;
    const bool bos = sl_tokenizer_add_bos(tok) && sl_tokenizer_bos(tok) >= 0;
    const int64_t per_seq = seq_len - (bos ? 1 : 0), need = per_seq * n_seq;
    int64_t n_tok = gather_tokens(tok, inputs, n_inputs, need, &ids);
    if (n_tok < 0) goto done;
    if (n_tok < need) {
        fprintf(stderr, "spotlight dump-qk: the texts hold %" PRId64 " tokens; %" PRId64 " sequences of %" PRId64
                        " need %" PRId64 " (give more text, or lower --seqs / --seq-len)\n", n_tok, n_seq, seq_len, need);
        goto done;
    }

    char dir[8200], probe[8300];
    if (out_dir) {
        snprintf(dir, sizeof dir, "%s", out_dir);
    } else {
        char cache[4000];
        const char *base = strrchr(path, '/');
        if (cli_model_dir(cache, sizeof cache) != 0) {
            fprintf(stderr, "spotlight dump-qk: no -o DIR and no cache directory (set SPOTLIGHT_MODELS)\n");
            goto done;
        }
        snprintf(dir, sizeof dir, "%s/qk/%s", cache, base ? base + 1 : path);
    }
    /* before the model runs: the folder made (mkdir -p), a file creatable there */
    if (sl_mkdir_all(dir) != 0) {
        fprintf(stderr, "spotlight dump-qk: %s\n", sl_error_detail());
        goto done;
    }
    sl_qk_dump_path(dir, 0, probe, sizeof probe);
    if (out_file_check("dump-qk", probe)) goto done;
    struct sl_qk_shape shape = {cfg->n_layer, cfg->n_head, cfg->n_head_kv, cfg->head_dim, (int32_t)seq_len};
    uint8_t fingerprint[32];
    if ((rc = sl_model_fingerprint(m, fingerprint)) || (rc = sl_qk_writer_open(dir, &shape, fingerprint, &w))) {
        cli_report(dir, rc);
        goto done;
    }
    struct sl_context_params cp = sl_context_default_params();
    cp.n_ctx = seq_len;
    cp.n_batch = (int32_t)(n_batch < seq_len ? n_batch : seq_len);
    cp.n_threads = (int32_t)n_threads;
    if ((rc = sl_context_create(m, &cp, &ctx))) {
        cli_report("context", rc);
        goto done;
    }
    sl_context_set_qk_tap(ctx, sl_qk_writer_tap, w);
    seq = malloc((size_t)seq_len * sizeof *seq);
    if (!seq) goto done;
    const double t0 = cli_now();
    const int64_t total = n_seq * seq_len;
    for (int64_t s = 0; s < n_seq; s++) {
        if (bos) seq[0] = sl_tokenizer_bos(tok);
        memcpy(seq + (bos ? 1 : 0), ids + s * per_seq, (size_t)per_seq * sizeof *seq);
        sl_context_truncate(ctx, 0);
        for (int64_t done_tok = 0; done_tok < seq_len; done_tok += cp.n_batch) {
            int64_t n = seq_len - done_tok < cp.n_batch ? seq_len - done_tok : cp.n_batch;
            if ((rc = sl_context_eval(ctx, seq + done_tok, n, false))) {
                cli_report("eval", rc);
                goto done;
            }
            int64_t doneall = s * seq_len + done_tok + n;
            double secs = cli_now() - t0, rate = (double)doneall / secs;
            fprintf(stderr, "\rdump-qk: sequence %" PRId64 "/%" PRId64 "  %3.0f%%  %.0f tok/s  ETA %.0f s   ",
                    s + 1, n_seq, 100.0 * (double)doneall / (double)total, rate, (double)(total - doneall) / rate);
        }
        if ((rc = sl_qk_writer_end_seq(w))) {
            cli_report("dump-qk", rc);
            goto done;
        }
    }
    if ((rc = sl_qk_writer_finish(w))) {
        cli_report("dump-qk", rc);
        goto done;
    }
    fprintf(stderr, "\ndump-qk: %d layers x %" PRId64 " sequences of %" PRId64 " tokens in %s (%.1f s)\n",
            cfg->n_layer, n_seq, seq_len, dir, cli_now() - t0);
    status = 0;
done:
    sl_qk_writer_free(w);
    free(seq);
    free(ids);
    sl_context_free(ctx);
    sl_tokenizer_free(tok);
    sl_model_free(m);
    return status;
}
