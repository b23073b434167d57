/* libFuzzer target: the GGUF reader and the model configuration on arbitrary bytes. Anything
 * may be rejected; nothing may crash, leak or read out of bounds (build with
 * SL_FUZZ=ON and SL_SANITIZE=address,undefined, see tools/fuzz.sh). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "spotlight/gguf.h"
#include "spotlight/model.h"
#include "spotlight/quant.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sl_gguf *g = NULL;
    if (sl_gguf_open_memory(data, size, &g) != 0) return 0;
    /* Walk everything a successful open promises is valid. */
    volatile uint64_t sink = 0;
    for (int64_t i = 0; i < sl_gguf_kv_count(g); i++) {
        const struct sl_gguf_value *v = sl_gguf_kv_value(g, i);
        sink += strlen(sl_gguf_kv_key(g, i));
        if (v->type == SL_GGUF_STRING) sink += v->v.str.len;
        if (v->type == SL_GGUF_ARRAY && v->v.arr.raw)
            for (uint64_t j = 0; j < v->v.arr.n; j++) sink += sl_gguf_arr_u64(v, j);
    }
    float tmp[256];
    for (int64_t i = 0; i < sl_gguf_tensor_count(g); i++) {
        const struct sl_gguf_tensor *t = sl_gguf_tensor_at(g, i);
        if (t->nbytes) sink += ((const uint8_t *)t->data)[t->nbytes - 1];
        int64_t blk = sl_type_block_elems(t->type);
        if (sl_type_can_dequant(t->type) && t->n_elems >= blk && blk <= 256)
            sl_dequant_f32(t->type, t->data, tmp, blk);
    }
    struct sl_model_config cfg;
    sl_model_config_from_gguf(g, &cfg);
    (void)sink;
    sl_gguf_free(g);
    return 0;
}
