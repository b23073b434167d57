/* What the host CPU offers: physical cores (from hwloc), NUMA nodes, and the instruction
 * sets the run-time dispatch of the CPU kernels chooses between. */
#ifndef SPOTLIGHT_CPU_H
#define SPOTLIGHT_CPU_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct sl_cpu_info {
    int32_t n_physical_cores;
    int32_t n_logical_cpus;
    int32_t n_numa_nodes;
    bool avx2, fma, f16c;
    bool avx512f, avx512bw, avx512vl, avx512_vpopcntdq, avx512_vnni, avx512_bf16;
    char model_name[128];
};

/* Fills *out; falls back to sysconf counts when hwloc fails (and says so once). */
int sl_cpu_info_get(struct sl_cpu_info *out);

#ifdef __cplusplus
}
#endif
#endif
