/* `spotlight inspect [MODEL.gguf] [--json] [--no-tensors]`: what a model is, what it weighs,
 * and what its KV cache costs per token — the numbers capacity planning starts from. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "spotlight/cpu.h"
#include "spotlight/device.h"
#include "spotlight/error.h"
#include "spotlight/model.h"
#include "spotlight/quant.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/json-writer.h"

struct type_total {
    int64_t count;
    uint64_t bytes;
};

static const char *file_type_name(int32_t ft) {
    static const struct {
        int32_t id;
        const char *name;
    } k[] = {{0, "F32"},     {1, "F16"},     {2, "Q4_0"},    {3, "Q4_1"},    {7, "Q8_0"},
             {8, "Q5_0"},    {9, "Q5_1"},    {10, "Q2_K"},   {11, "Q3_K_S"}, {12, "Q3_K_M"},
             {13, "Q3_K_L"}, {14, "Q4_K_S"}, {15, "Q4_K_M"}, {16, "Q5_K_S"}, {17, "Q5_K_M"},
             {18, "Q6_K"},   {32, "BF16"}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        if (k[i].id == ft) return k[i].name;
    return "unknown";
}

static void human_bytes(double b, char *buf, size_t cap) {
    const char *unit[] = {"B", "KB", "MB", "GB", "TB"};
    int u = 0;
    while (b >= 1000 && u < 4) {
        b /= 1000;
        u++;
    }
    snprintf(buf, cap, u ? "%.2f %s" : "%.0f %s", b, unit[u]);
}

static void shape_str(const struct sl_gguf_tensor *t, char *buf, size_t cap) {
    int n = snprintf(buf, cap, "[");
    for (int d = 0; d < (t->n_dims ? t->n_dims : 1) && n < (int)cap; d++)
        n += snprintf(buf + n, cap - (size_t)n, d ? ", %" PRId64 : "%" PRId64, t->ne[d]);
    if (n < (int)cap) snprintf(buf + n, cap - (size_t)n, "]");
}

static void print_text(const char *path, const sl_model *m, const struct sl_cpu_info *cpu,
                       int n_gpu, bool tensors) {
    const struct sl_model_config *c = sl_model_config(m);
    const sl_gguf *g = sl_model_gguf(m);
    char a[32], b[32];
    human_bytes((double)sl_gguf_file_size(g), a, sizeof a);
    printf("model        %s (%s, GGUF v%" PRIu32 ")\n", path, a, sl_gguf_version(g));
    printf("name         %s\n", c->name[0] ? c->name : "(none)");
    printf("architecture %s\n", c->arch_name);
    printf("layers       %d\n", c->n_layer);
    printf("width        %d (feed-forward %d)\n", c->n_embd, c->n_ff);
    printf("heads        %d query / %d KV (group of %d), head_dim %d\n", c->n_head, c->n_head_kv,
           c->n_head / c->n_head_kv, c->head_dim);
    printf("rope         %s, theta %g, %d dims, scaling %s", sl_rope_type_name(c->rope_type),
           (double)c->rope_theta, c->n_rot, sl_rope_scaling_name(c->rope_scaling));
    if (c->rope_scaling != SL_ROPE_SCALING_NONE) printf(" x%g (orig ctx %d)", (double)c->rope_scale, c->rope_orig_ctx);
    printf("\nnorm eps     %g\n", (double)c->norm_eps);
    printf("context      %d tokens (trained)\n", c->n_ctx_train);
    printf("tokenizer    %s (%s%s%s), vocab %d\n", c->tokenizer_model,
           c->tokenizer == SL_TOKENIZER_BPE ? "byte-level BPE" : "SentencePiece",
           c->tokenizer_pre[0] ? ", pre " : "", c->tokenizer_pre, c->n_vocab);
    printf("embeddings   %s\n", c->tied_embeddings ? "tied (LM head = token_embd)" : "separate LM head");
    printf("file type    %s\n", c->file_type >= 0 ? file_type_name(c->file_type) : "(not recorded)");

    struct type_total totals[SL_TYPE_COUNT_] = {0};
    for (int64_t i = 0; i < sl_gguf_tensor_count(g); i++) {
        const struct sl_gguf_tensor *t = sl_gguf_tensor_at(g, i);
        totals[t->type].count++;
        totals[t->type].bytes += t->nbytes;
    }
    human_bytes((double)sl_model_weight_bytes(m), a, sizeof a);
    printf("weights      %" PRId64 " tensors, %s:", sl_gguf_tensor_count(g), a);
    for (int ty = 0; ty < SL_TYPE_COUNT_; ty++) {
        if (!totals[ty].count) continue;
        human_bytes((double)totals[ty].bytes, b, sizeof b);
        printf(" %s x%" PRId64 " (%s)", sl_type_name(ty), totals[ty].count, b);
    }
    int64_t kv16 = sl_model_config_kv_bytes_per_token(c, 2);
    human_bytes((double)kv16 * 1e6, a, sizeof a);
    printf("\nKV cache     f16: %" PRId64 " bytes per token, %s per 1M tokens\n", kv16, a);
    printf("host         %s: %d physical cores, %d NUMA node(s); AVX2 %s, AVX-512 %s (VPOPCNTDQ %s)\n",
           cpu->model_name, cpu->n_physical_cores, cpu->n_numa_nodes, cpu->avx2 ? "yes" : "no",
           cpu->avx512f ? "yes" : "no", cpu->avx512_vpopcntdq ? "yes" : "no");
    printf("cuda         %s", sl_cuda_compiled() ? "compiled" : "not compiled");
    if (sl_cuda_compiled()) printf(", %d device(s)", n_gpu);
    printf("\n");
    if (!tensors) return;
    printf("\n%-32s %-6s %-18s %12s\n", "tensor", "type", "shape", "bytes");
    for (int64_t i = 0; i < sl_gguf_tensor_count(g); i++) {
        const struct sl_gguf_tensor *t = sl_gguf_tensor_at(g, i);
        char shape[96];
        shape_str(t, shape, sizeof shape);
        printf("%-32s %-6s %-18s %12" PRIu64 "\n", t->name, sl_type_name(t->type), shape, t->nbytes);
    }
}

static void print_json(const char *path, const sl_model *m, const struct sl_cpu_info *cpu,
                       int n_gpu, bool tensors) {
    const struct sl_model_config *c = sl_model_config(m);
    const sl_gguf *g = sl_model_gguf(m);
    struct json_writer w;
    json_init(&w, stdout);
    json_obj_begin(&w, NULL);
    json_str(&w, "path", path);
    json_int(&w, "file_bytes", (int64_t)sl_gguf_file_size(g));
    json_int(&w, "gguf_version", sl_gguf_version(g));
    json_str(&w, "name", c->name);
    json_str(&w, "architecture", c->arch_name);
    json_int(&w, "n_layer", c->n_layer);
    json_int(&w, "n_embd", c->n_embd);
    json_int(&w, "n_ff", c->n_ff);
    json_int(&w, "n_head", c->n_head);
    json_int(&w, "n_head_kv", c->n_head_kv);
    json_int(&w, "head_dim", c->head_dim);
    json_int(&w, "n_rot", c->n_rot);
    json_str(&w, "rope_type", sl_rope_type_name(c->rope_type));
    json_num(&w, "rope_theta", c->rope_theta);
    json_str(&w, "rope_scaling", sl_rope_scaling_name(c->rope_scaling));
    json_num(&w, "rope_scale", c->rope_scale);
    json_num(&w, "norm_eps", c->norm_eps);
    json_int(&w, "n_ctx_train", c->n_ctx_train);
    json_str(&w, "tokenizer", c->tokenizer_model);
    json_str(&w, "tokenizer_pre", c->tokenizer_pre);
    json_int(&w, "n_vocab", c->n_vocab);
    json_bool(&w, "tied_embeddings", c->tied_embeddings);
    json_bool(&w, "qkv_bias", c->qkv_bias);
    json_str(&w, "file_type", c->file_type >= 0 ? file_type_name(c->file_type) : "");
    json_int(&w, "n_tensors", sl_gguf_tensor_count(g));
    json_int(&w, "weight_bytes", (int64_t)sl_model_weight_bytes(m));
    json_int(&w, "kv_bytes_per_token_f16", sl_model_config_kv_bytes_per_token(c, 2));
    json_int(&w, "kv_bytes_per_1m_tokens_f16", sl_model_config_kv_bytes_per_token(c, 2) * 1000000);
    json_obj_begin(&w, "host");
    json_str(&w, "cpu", cpu->model_name);
    json_int(&w, "physical_cores", cpu->n_physical_cores);
    json_int(&w, "numa_nodes", cpu->n_numa_nodes);
    json_bool(&w, "avx2", cpu->avx2);
    json_bool(&w, "avx512f", cpu->avx512f);
    json_bool(&w, "avx512_vpopcntdq", cpu->avx512_vpopcntdq);
    json_bool(&w, "cuda_compiled", sl_cuda_compiled());
    json_int(&w, "cuda_devices", n_gpu);
    json_obj_end(&w);
    if (tensors) {
        json_arr_begin(&w, "tensors");
        for (int64_t i = 0; i < sl_gguf_tensor_count(g); i++) {
            const struct sl_gguf_tensor *t = sl_gguf_tensor_at(g, i);
            json_obj_begin(&w, NULL);
            json_str(&w, "name", t->name);
            json_str(&w, "type", sl_type_name(t->type));
            json_arr_begin(&w, "shape");
            for (int d = 0; d < t->n_dims; d++) json_int(&w, NULL, t->ne[d]);
            json_arr_end(&w);
            json_int(&w, "bytes", (int64_t)t->nbytes);
            json_obj_end(&w);
        }
        json_arr_end(&w);
    }
    json_obj_end(&w);
}

static void usage(FILE *f) {
    fprintf(f, "usage: spotlight inspect [MODEL.gguf | -m MODEL.gguf] [--json] [--no-tensors]\n"
               "  Shows architecture, hyperparameters, tokenizer, tensor table and KV bytes per token.\n"
               "  Without a model, inspects the default model from the model cache.\n");
}

int cmd_inspect(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"json", no_argument, 0, 'j'},
                                         {"no-tensors", no_argument, 0, 'T'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *model = NULL;
    bool json = false, tensors = true;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'j': json = true; break;
        case 'T': tensors = false; break;
        case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "spotlight inspect: unknown or incomplete option '%s' (see --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        if (model || optind + 1 < argc) {
            fprintf(stderr, "spotlight inspect: give one model\n");
            return 2;
        }
        model = argv[optind];
    }
    char path[4096];
    if (cli_model_path(model, path, sizeof path) != 0) return 1;
    sl_model *m = NULL;
    int rc = sl_model_load(path, &m);
    if (rc) {
        cli_report(path, rc);
        return 1;
    }
    struct sl_cpu_info cpu;
    sl_cpu_info_get(&cpu);
    int n_gpu = sl_cuda_device_count();
    if (json)
        print_json(path, m, &cpu, n_gpu, tensors);
    else
        print_text(path, m, &cpu, n_gpu, tensors);
    sl_model_free(m);
    return 0;
}
