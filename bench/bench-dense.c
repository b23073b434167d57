/* Question: how fast is dense generation on this CPU, against what memory bandwidth allows?
 * For each depth: prefill `depth` tokens (tok/s), then decode N tokens after them (tok/s),
 * next to the bandwidth limit for decode: (weight bytes + K/V bytes at that depth) per token
 * at the memcpy bandwidth measured in the same run. Prints one markdown row per depth, or
 * CSV with --csv. llama.cpp's numbers come from bench/run-dense.sh, which runs llama-bench on
 * the same model and threads right after this.
 *   bench-dense MODEL [--depths 512,2048,8192,16384] [--decode 32] [-t THREADS] [--csv] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "spotlight/context.h"
#include "spotlight/error.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Median-of-5 memcpy bandwidth over 256 MB (well past the caches). */
static double memcpy_gbs(void) {
    size_t n = 256u << 20;
    char *a = malloc(n), *b = malloc(n);
    if (!a || !b) return 0;
    memset(a, 1, n);
    memset(b, 2, n);
    double best[5];
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        memcpy(b, a, n);
        best[r] = now() - t0;
    }
    for (int i = 0; i < 5; i++)
        for (int j = i + 1; j < 5; j++)
            if (best[j] < best[i]) {
                double t = best[i];
                best[i] = best[j];
                best[j] = t;
            }
    free(a);
    free(b);
    return 2.0 * (double)n / best[2] / 1e9; /* read + write */
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench-dense MODEL [--depths a,b,c] [--decode N] [-t THREADS] [--csv]\n");
        return 2;
    }
    const char *depths = "512,2048,8192,16384";
    int n_decode = 32, threads = 0, csv = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--depths") && i + 1 < argc) depths = argv[++i];
        else if (!strcmp(argv[i], "--decode") && i + 1 < argc) n_decode = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-t") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--csv")) csv = 1;
        else {
            fprintf(stderr, "bench-dense: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    sl_model *m;
    int rc = sl_model_load(argv[1], &m);
    if (rc) {
        fprintf(stderr, "bench-dense: %s: %s\n", sl_strerror(rc), sl_error_detail());
        return 1;
    }
    const struct sl_model_config *c = sl_model_config(m);
    double bw = memcpy_gbs();
    /* Bytes a decode step must read: every matrix once (the embedding row is negligible
     * unless the LM head is tied to it, in which case it is read whole) + all K/V. */
    double w_bytes = (double)sl_model_weight_bytes(m);
    if (!c->tied_embeddings) w_bytes -= (double)sl_model_token_embd(m)->nbytes;
    double kv_tok = (double)sl_model_config_kv_bytes_per_token(c, 2);
    if (csv)
        printf("engine,depth,prefill_tok_s,decode_tok_s,decode_limit_tok_s,bytes_per_token,memcpy_gb_s\n");
    else
        printf("| engine | depth | prefill tok/s | decode tok/s | decode limit tok/s (bytes/token @ %.1f GB/s) |\n"
               "|---|---:|---:|---:|---:|\n", bw);
    for (const char *p = depths; *p;) {
        long depth = strtol(p, (char **)&p, 10);
        if (*p == ',') p++;
        if (depth < 0) continue;
        struct sl_context_params cp = sl_context_default_params();
        cp.n_ctx = depth + n_decode + 1;
        cp.n_threads = threads;
        cp.n_batch = 512;
        sl_context *ctx;
        if ((rc = sl_context_create(m, &cp, &ctx))) {
            fprintf(stderr, "bench-dense: %s: %s\n", sl_strerror(rc), sl_error_detail());
            return 1;
        }
        int32_t *t = malloc(sizeof(int32_t) * (size_t)(depth + 1));
        srand(1);
        for (long i = 0; i < depth; i++) t[i] = rand() % c->n_vocab;
        double t0 = now();
        rc = depth ? sl_context_eval(ctx, t, depth, false) : 0; /* depth 0: decode from empty */
        double t_pf = now() - t0;
        int32_t tok = 0;
        /* one warm-up step, then the timed ones */
        if (!rc) rc = sl_context_eval(ctx, &tok, 1, false);
        double t1 = now();
        for (int i = 0; i < n_decode && !rc; i++) {
            tok = (tok + 7919) % c->n_vocab;
            rc = sl_context_eval(ctx, &tok, 1, false);
        }
        double t_dec = (now() - t1) / n_decode;
        if (rc) {
            fprintf(stderr, "bench-dense: %s: %s\n", sl_strerror(rc), sl_error_detail());
            return 1;
        }
        double bytes = w_bytes + kv_tok * (double)(depth + n_decode / 2);
        double limit = bw * 1e9 / bytes;
        if (csv)
            printf("spotlight,%ld,%.1f,%.2f,%.1f,%.0f,%.2f\n", depth, depth ? depth / t_pf : 0.0, 1 / t_dec, limit, bytes, bw);
        else
            printf("| spotlight | %ld | %.1f | %.2f | %.1f (%.1f MB) |\n", depth, depth ? depth / t_pf : 0.0, 1 / t_dec, limit, bytes / 1e6);
        fflush(stdout);
        free(t);
        sl_context_free(ctx);
    }
    sl_model_free(m);
    return 0;
}
