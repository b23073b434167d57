/* Choosing the next token from logits: greedy, or temperature sampling after repetition
 * penalty, top-k, top-p (nucleus) and min-p filtering, in llama.cpp's default order
 * (penalties -> top-k -> top-p -> min-p -> temperature -> draw). Seeded, so a seed
 * reproduces a generation exactly. */
#ifndef SPOTLIGHT_SAMPLER_H
#define SPOTLIGHT_SAMPLER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct sl_sampler_params {
    float temp;            /* <= 0: greedy (argmax) */
    int32_t top_k;         /* <= 0: off */
    float top_p;           /* >= 1: off */
    float min_p;           /* <= 0: off; keep tokens with p >= min_p * p_max */
    float repeat_penalty;  /* 1: off; > 1 penalises tokens seen in the last repeat_last_n */
    int32_t repeat_last_n;
    uint64_t seed;
};

struct sl_sampler_params sl_sampler_default_params(void);

typedef struct sl_sampler sl_sampler;

/* 0 or SL_EINVAL (bad parameter, with detail) / SL_ENOMEM. */
int sl_sampler_create(const struct sl_sampler_params *p, int32_t n_vocab, sl_sampler **out);
void sl_sampler_free(sl_sampler *s); /* NULL is a no-op */

/* Picks a token from logits (n_vocab values; not modified). */
int32_t sl_sampler_sample(sl_sampler *s, const float *logits);

/* Records a token (prompt or generated) for the repetition penalty. */
void sl_sampler_accept(sl_sampler *s, int32_t token);

#ifdef __cplusplus
}
#endif
#endif
