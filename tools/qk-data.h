/* One layer of a q/k dump directory (`spotlight dump-qk`, core/qk-dump.h) loaded as f32 in the
 * interleaved layout hash training and evaluation read: q (n_seq, seq_len, n_head, d),
 * k (n_seq, seq_len, n_head_kv, d). Shared by train-hash and eval-retrieval. */
#ifndef SL_TOOLS_QK_DATA_H
#define SL_TOOLS_QK_DATA_H

#include <stdint.h>

#include "core/hash-train.h"
#include "core/qk-dump.h"
#include "spotlight/model.h"

struct qk_layer {
    struct sl_qk_dump dump;
    float *q, *k;
};

/* Loads dir/layer-XX.qk; SL_ESHAPE when its heads are not the model's, SL_EMISMATCH when it
 * carries another model's fingerprint (fingerprint NULL skips that check). On failure the
 * caller still frees with qk_layer_free. */
int qk_layer_load(const char *dir, int32_t layer, const struct sl_model_config *cfg, const uint8_t fingerprint[32],
                  struct qk_layer *ld);
void qk_layer_free(struct qk_layer *ld);

/* Sequence s as the trainer's and the evaluator's input. */
struct sl_hash_train_seq qk_layer_seq(const struct qk_layer *ld, int32_t s);

#endif
