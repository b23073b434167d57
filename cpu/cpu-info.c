/* Host CPU facts: core counts from hwloc (physical cores, not SMT siblings, are what the
 * compute threads should be sized to) and ISA features from cpuid for run-time dispatch. */
#include <cpuid.h>
#include <hwloc.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/internal.h"
#include "cpu/dispatch.h"
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

/* cpuid + xgetbv directly rather than __builtin_cpu_supports, whose feature names differ
 * between gcc and clang versions. A feature counts only if the OS saves its registers. */
static void read_isa(struct sl_cpu_info *out) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    bool osxsave = c & (1u << 27), avx = c & (1u << 28);
    out->fma = c & (1u << 12);
    out->f16c = c & (1u << 29);
    uint64_t xcr0 = 0;
    if (osxsave) {
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        xcr0 = (uint64_t)hi << 32 | lo;
    }
    bool os_avx = (xcr0 & 0x6) == 0x6, os_avx512 = (xcr0 & 0xe6) == 0xe6;
    out->fma = out->fma && os_avx && avx;
    out->f16c = out->f16c && os_avx && avx;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    out->avx2 = os_avx && avx && (b & (1u << 5));
    out->avx512f = os_avx512 && (b & (1u << 16));
    out->avx512bw = out->avx512f && (b & (1u << 30));
    out->avx512vl = out->avx512f && (b & (1u << 31));
    out->avx512_vpopcntdq = out->avx512f && (c & (1u << 14));
    out->avx512_vnni = out->avx512f && (c & (1u << 11));
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) out->avx512_bf16 = out->avx512f && (a & (1u << 5));
}

static int g_force_scalar;

int sl_cpu_force_scalar(int on) {
    int prev = g_force_scalar;
    g_force_scalar = on;
    return prev;
}

bool sl_cpu_use_avx2(void) {
    static int cached = -1; /* computed once; a racing first call computes the same value */
    if (cached < 0) {
        struct sl_cpu_info ci;
        sl_cpu_info_get(&ci);
        cached = ci.avx2 && ci.fma && ci.f16c;
    }
    return cached && !g_force_scalar;
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

    read_isa(out);
    read_model_name(out->model_name, sizeof out->model_name);
    return 0;
}
