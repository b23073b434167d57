/* Shared CLI helpers: configuration from the environment is read here, at the edge. */
#include "tools/cli.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/internal.h"
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

double cli_now(void) { return sl_now_s(); }

int cli_parse_i64(const char *cmd, const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno || v < lo || v > hi) {
        fprintf(stderr, "spotlight %s: %s must be an integer in [%" PRId64 ", %" PRId64 "], got '%s'\n", cmd, opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_f32(const char *cmd, const char *opt, const char *s, float lo, float hi, float *out) {
    char *end;
    float v = strtof(s, &end);
    if (*s == '\0' || *end != '\0' || !(v >= lo && v <= hi)) {
        fprintf(stderr, "spotlight %s: %s must be a number in [%g, %g], got '%s'\n", cmd, opt, (double)lo, (double)hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

char *cli_read_file(const char *cmd, const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "spotlight %s: cannot open %s: %s\n", cmd, path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1) break;
        char *nb = realloc(buf, cap *= 2);
        if (!nb) free(buf);
        buf = nb;
    }
    int err = ferror(f);
    fclose(f);
    if (!buf || err) {
        free(buf);
        fprintf(stderr, "spotlight %s: cannot read %s\n", cmd, path);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}
