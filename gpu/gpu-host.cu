/* Host memory the GPU can DMA from: page-locking memory the KV store has already placed on
 * the right NUMA node (cudaHostRegister rather than cudaHostAlloc, so placement stays the
 * store's choice), and the NUMA node a device hangs off, so host tiers go next to it. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "gpu/gpu-check.h"
#include "gpu/gpu.h"

extern "C" int sl_gpu_host_register(void *ptr, size_t bytes, void *user) {
    (void)user;
    /* Portable: pinned for every device, not just the current one. Mapped: kernels may read
     * it in place (cudaHostGetDevicePointer), which the zero-copy KV fetch (gpu-fetch.cu)
     * does. A device that cannot map host memory still gets it pinned for DMA. */
    if (cudaHostRegister(ptr, bytes, cudaHostRegisterPortable | cudaHostRegisterMapped) == cudaSuccess)
        return 0;
    (void)cudaGetLastError();
    SL_CUDA_CHECK(cudaHostRegister(ptr, bytes, cudaHostRegisterPortable));
    return 0;
}

extern "C" void sl_gpu_host_unregister(void *ptr, void *user) {
    (void)user;
    if (cudaHostUnregister(ptr) != cudaSuccess) (void)cudaGetLastError();
}

extern "C" int sl_gpu_numa_node(int device) {
    char bus[32];
    if (cudaDeviceGetPCIBusId(bus, (int)sizeof bus, device) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1;
    }
    /* sysfs names PCI devices in lower case: 0000:1b:00.0 */
    for (char *c = bus; *c; c++) *c = (char)tolower((unsigned char)*c);
    char path[96];
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/numa_node", bus);
    FILE *f = fopen(path, "r");
    int node = -1;
    if (f) {
        if (fscanf(f, "%d", &node) != 1) node = -1;
        fclose(f);
    }
    return node >= 0 ? node : -1;
}
