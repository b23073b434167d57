/* Shared helpers of the `spotlight` subcommands: the default model's location, error lines. */
#ifndef SL_TOOLS_CLI_H
#define SL_TOOLS_CLI_H

#include <stddef.h>
#include <stdint.h>

/* File name of the default model inside the model cache (see tools/fetch-model.sh). */
#define SL_DEFAULT_MODEL_FILE "SmolLM2-135M-Instruct.Q4_1.gguf"

/* The model cache: $SPOTLIGHT_MODELS, else $XDG_CACHE_HOME/spotlight, else
 * $HOME/.cache/spotlight. Writes into buf; returns 0 or -1 when no location can be formed. */
int cli_model_dir(char *buf, size_t cap);

/* Resolves -m: the given path, or the default model in the cache. On failure prints an
 * error line (including how to fetch the default model) and returns -1. */
int cli_model_path(const char *given, char *buf, size_t cap);

/* The cores this process may run on (its CPU affinity), at least 1. */
int cli_cores(void);
/* Warns (one stderr line) when -t asks for more threads than cli_cores(). */
void cli_check_threads(const char *cmd, int64_t n_threads);

/* The exit status after a SIGBUS (cli_catch_sigbus). */
#define CLI_EXIT_SIGBUS 1
/* Turns a SIGBUS (a mapped model, hash or q/k file cut short or gone unreadable under the
 * running process) into one error line and exit status CLI_EXIT_SIGBUS instead of a crash. */
void cli_catch_sigbus(void);

/* Seconds on the monotonic clock (for tok/s reports). */
double cli_now(void);

/* Strict option values: the whole string must parse and lie in [lo, hi]; otherwise prints
 * "spotlight <cmd>: <opt> must be ..." and returns -1. */
int cli_parse_i64(const char *cmd, const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *out);
int cli_parse_f32(const char *cmd, const char *opt, const char *s, float lo, float hi, float *out);

/* The most bytes a text input (-f PROMPT, a perplexity or q/k-dump text) may hold. */
#define CLI_MAX_TEXT_BYTES (INT64_C(1) << 30)

/* Opens an input file for reading: an fd, or -1 after one error line naming the path. A FIFO,
 * device or directory is refused without blocking (a FIFO would wait for a writer forever). */
int cli_open_input(const char *cmd, const char *path);

/* Reads a whole regular file of at most max bytes into a NUL-terminated malloc'd buffer (the
 * caller frees it); on failure (missing, not a regular file, larger than max, unreadable)
 * prints one error line for command `cmd` and returns NULL. cli_read_file: max is
 * CLI_MAX_TEXT_BYTES. */
char *cli_read_file_max(const char *cmd, const char *path, int64_t max, size_t *len);
char *cli_read_file(const char *cmd, const char *path, size_t *len);

/* Prints "spotlight: <what>: <error text>[: <detail>]" to stderr for a library error code. */
void cli_report(const char *what, int rc);

#endif
