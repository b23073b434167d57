/* Host memory for the KV store: page-aligned anonymous mappings placed on a NUMA node with
 * hwloc, optionally mlocked, optionally registered for device DMA through a caller hook
 * (cudaHostRegister, supplied by the engine so storage/ needs no CUDA). Every optional step
 * that fails falls back (bound → unbound, locked → unlocked, registered → pageable) and says
 * so once per process; only the mapping itself can fail the call. */
#ifndef SL_STORAGE_HOST_MEM_H
#define SL_STORAGE_HOST_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spotlight/kv-store.h"

struct sl_host_mem_params {
    int32_t numa_node;   /* >= 0: bind there; -1: the node of the calling thread's CPU
                            binding when it lies on one node, else no binding */
    bool mlock;
    sl_kv_register_fn reg;     /* optional */
    sl_kv_unregister_fn unreg; /* required with reg */
    void *user;
};

struct sl_host_mem {
    void *ptr;           /* page-aligned, zero-filled; NULL when bytes == 0 */
    size_t bytes;        /* rounded up to the page size */
    int32_t numa_node;   /* node it is bound to, or -1 */
    bool locked, registered;
    sl_kv_unregister_fn unreg;
    void *user;
};

/* 0 or SL_ENOMEM (with detail). On failure *m is zeroed. */
int sl_host_mem_alloc(struct sl_host_mem *m, size_t bytes, const struct sl_host_mem_params *p);

/* Bytes sl_host_mem_alloc really maps for a request of `bytes` (page or huge-page rounding),
 * for callers that plan memory against a budget. */
size_t sl_host_mem_round(size_t bytes);

/* Unregisters, unlocks and unmaps; safe on a zeroed struct. */
void sl_host_mem_free(struct sl_host_mem *m);

/* NUMA node of the calling thread's CPU binding, or -1 when unbound, spread over several
 * nodes, or hwloc cannot tell. */
int32_t sl_host_mem_local_node(void);

#endif
