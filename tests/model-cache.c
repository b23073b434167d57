/* Test helper: the model cache (see model-cache.h). */
#include "tests/model-cache.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "spotlight/error.h"

void test_model_path(const char *file, char *buf, size_t cap) {
    const char *d = getenv("SPOTLIGHT_MODELS"), *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    if (d && *d)
        snprintf(buf, cap, "%s/%s", d, file);
    else if (x && *x)
        snprintf(buf, cap, "%s/spotlight/%s", x, file);
    else
        snprintf(buf, cap, "%s/.cache/spotlight/%s", h ? h : "", file);
}

sl_model *test_load_model(const char *file) {
    char path[4096];
    test_model_path(file, path, sizeof path);
    sl_model *m = NULL;
    int rc = sl_model_load(path, &m);
    cr_assert_eq(rc, 0, "cannot load %s (%s: %s); run tools/fetch-model.sh (see tools/models.tsv)",
                 path, sl_strerror(rc), sl_error_detail());
    return m;
}
