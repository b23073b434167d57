/* Loading q/k dumps for the hash tools (see qk-data.h). */
#include "tools/qk-data.h"

#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "spotlight/error.h"

int qk_layer_load(const char *dir, int32_t layer, const struct sl_model_config *cfg, const uint8_t fingerprint[32],
                  struct qk_layer *ld) {
    char path[4200];
    sl_qk_dump_path(dir, layer, path, sizeof path);
    memset(ld, 0, sizeof *ld);
    int rc = sl_qk_dump_open(path, &ld->dump);
    if (rc) return rc;
    const struct sl_qk_dump *d = &ld->dump;
    if (d->n_head != cfg->n_head || d->n_head_kv != cfg->n_head_kv || d->head_dim != cfg->head_dim ||
        d->layer != layer)
        return sl_fail(SL_ESHAPE, "%s does not match the model's heads", path);
    static const uint8_t zero[32];
    if (fingerprint && memcmp(d->fingerprint, zero, 32) != 0 && memcmp(d->fingerprint, fingerprint, 32) != 0)
        return sl_fail(SL_EMISMATCH, "%s was dumped from another model", path);
    const int64_t per = (int64_t)d->seq_len * d->head_dim;
    ld->q = malloc(sizeof(float) * (size_t)(d->n_seq * per * d->n_head));
    ld->k = malloc(sizeof(float) * (size_t)(d->n_seq * per * d->n_head_kv));
    float *tmp = malloc(sizeof(float) * (size_t)per);
    if (!ld->q || !ld->k || !tmp) {
        free(tmp);
        return sl_fail(SL_ENOMEM, "cannot hold %s in memory", path);
    }
    /* head-major from the dump, interleaved (position, head, dim) for the trainer */
    for (int32_t s = 0; s < d->n_seq; s++)
        for (int32_t isq = 0; isq < 2; isq++) {
            int32_t heads = isq ? d->n_head : d->n_head_kv;
            float *dst = (isq ? ld->q : ld->k) + (int64_t)s * per * heads;
            for (int32_t h = 0; h < heads; h++) {
                sl_qk_dump_head_f32(d, s, isq, h, tmp);
                for (int32_t p = 0; p < d->seq_len; p++)
                    memcpy(dst + ((int64_t)p * heads + h) * d->head_dim, tmp + (int64_t)p * d->head_dim,
                           sizeof(float) * (size_t)d->head_dim);
            }
        }
    free(tmp);
    return 0;
}

void qk_layer_free(struct qk_layer *ld) {
    free(ld->q);
    free(ld->k);
    sl_qk_dump_close(&ld->dump);
    memset(ld, 0, sizeof *ld);
}

struct sl_hash_train_seq qk_layer_seq(const struct qk_layer *ld, int32_t s) {
    const struct sl_qk_dump *d = &ld->dump;
    const int64_t per = (int64_t)d->seq_len * d->head_dim;
    return (struct sl_hash_train_seq){ld->q + s * per * d->n_head, ld->k + s * per * d->n_head_kv, d->seq_len};
}

