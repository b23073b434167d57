/* Shared helpers of the `spotlight` subcommands: the default model's location, error lines. */
#ifndef SL_TOOLS_CLI_H
#define SL_TOOLS_CLI_H

#include <stddef.h>

/* File name of the default model inside the model cache (see tools/fetch-model.sh). */
#define SL_DEFAULT_MODEL_FILE "SmolLM2-135M-Instruct.Q4_1.gguf"

/* The model cache: $SPOTLIGHT_MODELS, else $XDG_CACHE_HOME/spotlight, else
 * $HOME/.cache/spotlight. Writes into buf; returns 0 or -1 when no location can be formed. */
int cli_model_dir(char *buf, size_t cap);

/* Resolves -m: the given path, or the default model in the cache. On failure prints an
 * error line (including how to fetch the default model) and returns -1. */
int cli_model_path(const char *given, char *buf, size_t cap);

/* Prints "spotlight: <what>: <error text>[: <detail>]" to stderr for a library error code. */
void cli_report(const char *what, int rc);

#endif
