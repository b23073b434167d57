/* Shared CLI helpers: configuration from the environment is read here, at the edge. */
#include "tools/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spotlight/error.h"

int cli_model_dir(char *buf, size_t cap) {
    const char *dir = getenv("SPOTLIGHT_MODELS");
    int n;
    if (dir && *dir)
        n = snprintf(buf, cap, "%s", dir);
    else if ((dir = getenv("XDG_CACHE_HOME")) && *dir)
        n = snprintf(buf, cap, "%s/spotlight", dir);
    else if ((dir = getenv("HOME")) && *dir)
        n = snprintf(buf, cap, "%s/.cache/spotlight", dir);
    else
        return -1;
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

int cli_model_path(const char *given, char *buf, size_t cap) {
    if (given) {
        if (snprintf(buf, cap, "%s", given) >= (int)cap) {
            fprintf(stderr, "spotlight: model path is too long\n");
            return -1;
        }
        return 0;
    }
    char dir[4096];
    if (cli_model_dir(dir, sizeof dir) != 0) {
        fprintf(stderr, "spotlight: no model given (-m) and no cache directory (set SPOTLIGHT_MODELS)\n");
        return -1;
    }
    if (snprintf(buf, cap, "%s/%s", dir, SL_DEFAULT_MODEL_FILE) >= (int)cap) {
        fprintf(stderr, "spotlight: model path is too long\n");
        return -1;
    }
    if (access(buf, R_OK) != 0) {
        fprintf(stderr, "spotlight: default model %s not found; run tools/fetch-model.sh, or pass -m MODEL.gguf\n", buf);
        return -1;
    }
    return 0;
}

void cli_report(const char *what, int rc) {
    const char *detail = sl_error_detail();
    if (detail[0])
        fprintf(stderr, "spotlight: %s: %s: %s\n", what, sl_strerror(rc), detail);
    else
        fprintf(stderr, "spotlight: %s: %s\n", what, sl_strerror(rc));
}
