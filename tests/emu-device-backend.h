/* Test helper: an emulated device backend, so the engine's device paths (host_memory false:
 * activations, the KV cache and sparse decode in "device" memory, reached only through the
 * ops) run and can be checked on a machine without a GPU.
 *
 * It wraps a CPU backend (sl_backend_cpu_create): every dense op forwards to the CPU's, so a
 * context on it computes exactly what a CPU context computes; memory is host memory behind
 * the device interface (buf_alloc: 64-byte aligned, filled with 0xFF bytes, i.e. NaN, so a read
 * of memory nothing wrote shows up in the results; upload/download: memcpy). The sparse ops
 * (core/backend.h) run on the CPU the way core/sparse-attn.c decodes one token from a KV store
 * (hash the queries, Hamming scan, top-k, gather, the token's own row, the CPU attention over
 * a one-head view), so their results are bit-identical to the CPU path's.
 *
 * Install it as the GPU backend for contexts with
 *     sl_backend_set_device_factory(sl_emu_device_backend_create);
 * and restore the default with sl_backend_set_device_factory(NULL). */
#ifndef SL_TESTS_EMU_DEVICE_BACKEND_H
#define SL_TESTS_EMU_DEVICE_BACKEND_H

#include <stdint.h>

#include "core/backend.h"

/* One emulated device, number 0 (others: SL_ENODEV); n_threads as sl_backend_cpu_create.
 * The name is "emu-device"; free with (*out)->free(*out). 0, SL_ENODEV or SL_ENOMEM. */
int sl_emu_device_backend_create(int32_t device, int n_threads, struct sl_backend **out);

#endif
