/* Test helper: where the packaged models are (the cache tools/fetch-model.sh fills, found as
 * the CLI finds it: $SPOTLIGHT_MODELS, else $XDG_CACHE_HOME/spotlight, else
 * ~/.cache/spotlight), and loading one with a test failure that says how to fetch it. */
#ifndef SL_TESTS_MODEL_CACHE_H
#define SL_TESTS_MODEL_CACHE_H

#include <stddef.h>

#include "spotlight/model.h"

#define TEST_SMOLLM2 "SmolLM2-135M-Instruct.Q4_1.gguf"
#define TEST_QWEN25 "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"

void test_model_path(const char *file, char *buf, size_t cap);
sl_model *test_load_model(const char *file);

#endif
