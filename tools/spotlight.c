/* The `spotlight` command: dispatches to one subcommand per file (cmd-*.c). */
#include <stdio.h>
#include <string.h>

#include "tools/cli.h"
#include "tools/commands.h"

static const struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} k_commands[] = {
    {"inspect", cmd_inspect, "show a model's architecture, tensors, and KV-cache size per token"},
    {"generate", cmd_generate, "generate text from a prompt (dense or sparse attention, K/V in RAM or a store), with speed stats"},
    {"perplexity", cmd_perplexity, "perplexity of a text file, computed as llama.cpp does"},
    {"dump-qk", cmd_dump_qk, "write every layer's post-RoPE q/k over real text (hash training data)"},
    {"train-hash", cmd_train_hash, "train the per-layer Spotlight hash on q/k dumps, write a hash file"},
    {"eval-retrieval", cmd_eval_retrieval, "retrieval quality of hashes vs SimHash and exact top-k on held-out q/k"},
    {"summarize", cmd_summarize, "summarize many long documents into JSONL (resumable offline job)"},
    {"tune", cmd_tune, "sweep attention configurations at a context length: Pareto front, fastest that fits"},
};

#define N_COMMANDS (sizeof k_commands / sizeof k_commands[0])

static void usage(FILE *f) {
    fprintf(f, "usage: spotlight <command> [options]\n\n"
               "Long-context LLM generation with hashed KV-cache retrieval.\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-12s %s\n", k_commands[i].name, k_commands[i].summary);
    fprintf(f, "\n'spotlight <command> --help' describes a command's options.\n"
               "The default model lives in $SPOTLIGHT_MODELS (else $XDG_CACHE_HOME/spotlight);\n"
               "tools/fetch-model.sh puts it there.\n");
}

int main(int argc, char **argv) {
    cli_catch_sigbus();
    if (argc < 2) {
        fprintf(stderr, "spotlight: no command given (see 'spotlight --help')\n");
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("spotlight %s\n", SL_VERSION_STRING);
        return 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(argv[1], k_commands[i].name) == 0) return k_commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "spotlight: unknown command '%s' (see 'spotlight --help')\n", argv[1]);
    return 2;
}
