/* Host CPU facts: core counts from hwloc (physical cores, not SMT siblings, are what the
 * compute threads should be sized to) and ISA features from cpuid for run-time dispatch. */
#include <hwloc.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/internal.h"
#include "spotlight/cpu.h"

static void read_model_name(char *dst, size_t cap) {
    snprintf(dst, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        const char *p = strchr(line, ':');
        if (!p) break;
        p++;
        while (*p == ' ') p++;
        snprintf(dst, cap, "%.*s", (int)strcspn(p, "\n"), p);
        break;
    }
    fclose(f);
}

int sl_cpu_info_get(struct sl_cpu_info *out) {
    memset(out, 0, sizeof *out);
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo) == 0 && hwloc_topology_load(topo) == 0) {
        out->n_physical_cores = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE);
        out->n_logical_cpus = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PU);
        out->n_numa_nodes = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE);
        hwloc_topology_destroy(topo);
    } else {
        sl_log(SL_LOG_WARN, "hwloc could not read the topology; using sysconf CPU counts");
    }
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (out->n_logical_cpus <= 0) out->n_logical_cpus = online > 0 ? (int32_t)online : 1;
    if (out->n_physical_cores <= 0) out->n_physical_cores = out->n_logical_cpus;
    if (out->n_numa_nodes <= 0) out->n_numa_nodes = 1;

    __builtin_cpu_init();
    out->avx2 = __builtin_cpu_supports("avx2");
    out->fma = __builtin_cpu_supports("fma");
    out->f16c = __builtin_cpu_supports("f16c");
    out->avx512f = __builtin_cpu_supports("avx512f");
    out->avx512bw = __builtin_cpu_supports("avx512bw");
    out->avx512vl = __builtin_cpu_supports("avx512vl");
    out->avx512_vpopcntdq = __builtin_cpu_supports("avx512vpopcntdq");
    out->avx512_vnni = __builtin_cpu_supports("avx512vnni");
    out->avx512_bf16 = __builtin_cpu_supports("avx512bf16");
    read_model_name(out->model_name, sizeof out->model_name);
    return 0;
}
