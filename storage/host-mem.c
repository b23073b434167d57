/* Host memory for the KV store: anonymous mappings, NUMA-bound with hwloc, optionally mlocked
 * and registered for DMA. Only the mapping can fail a call; every later step falls back and
 * warns once per process, because a store that runs slower beats one that does not start. */
#include "storage/host-mem.h"

#include <errno.h>
#include <hwloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/internal.h"

/* Topology discovery reads sysfs and costs milliseconds; it is done once and kept for the
 * process, like the CPU thread pool's. NULL when hwloc could not load it. */
static hwloc_topology_t topo;
static pthread_once_t topo_once = PTHREAD_ONCE_INIT;

static void load_topology(void) {
    hwloc_topology_t t;
    if (hwloc_topology_init(&t) != 0) {
        sl_log(SL_LOG_WARN, "host memory: hwloc cannot initialise (%s); memory stays unbound",
               strerror(errno));
        return;
    }
    if (hwloc_topology_load(t) != 0) {
        sl_log(SL_LOG_WARN, "host memory: hwloc cannot load the topology (%s); memory stays "
               "unbound", strerror(errno));
        hwloc_topology_destroy(t);
        return;
    }
    topo = t;
}

static hwloc_topology_t get_topology(void) {
    pthread_once(&topo_once, load_topology);
    return topo;
}

/* One warning per kind per process: a store allocates many regions, and the reason is the
 * same for all of them. */
static atomic_bool warned_bind, warned_lock, warned_reg;

static bool first_warning(atomic_bool *flag) {
    return !atomic_exchange(flag, true);
}

int32_t sl_host_mem_local_node(void) {
    hwloc_topology_t t = get_topology();
    if (!t) return -1;
    hwloc_bitmap_t cpus = hwloc_bitmap_alloc(), nodes = hwloc_bitmap_alloc();
    int32_t node = -1;
    if (cpus && nodes && hwloc_get_cpubind(t, cpus, HWLOC_CPUBIND_THREAD) == 0) {
        hwloc_cpuset_to_nodeset(t, cpus, nodes);
        if (hwloc_bitmap_weight(nodes) == 1) node = hwloc_bitmap_first(nodes);
    }
    hwloc_bitmap_free(cpus);
    hwloc_bitmap_free(nodes);
    return node;
}

/* Binds [ptr, ptr+bytes) to node before any page is touched, so first-touch places every page
 * there. Returns the node on success, -1 when it stays unbound (already warned). */
static int32_t bind_to_node(void *ptr, size_t bytes, int32_t node) {
    hwloc_topology_t t = get_topology();
    if (!t) return -1;
    hwloc_obj_t obj = hwloc_get_numanode_obj_by_os_index(t, (unsigned)node);
    if (!obj || !obj->nodeset) return -1;
    if (hwloc_set_area_membind(t, ptr, bytes, obj->nodeset, HWLOC_MEMBIND_BIND,
                               HWLOC_MEMBIND_BYNODESET) != 0) {
        if (first_warning(&warned_bind))
            sl_log(SL_LOG_WARN, "host memory: cannot bind to NUMA node %d (%s); continuing "
                   "unbound", (int)node, strerror(errno));
        return -1;
    }
    return node;
}

/* Rejects a node the machine does not have; without a topology nothing can be checked and the
 * request simply goes unbound. */
static int check_node(int32_t node) {
    if (node < -1) return sl_fail(SL_EINVAL, "NUMA node %d is invalid (use -1 or >= 0)", (int)node);
    if (node == -1) return 0;
    hwloc_topology_t t = get_topology();
    if (!t) {
        if (first_warning(&warned_bind))
            sl_log(SL_LOG_WARN, "host memory: no hwloc topology, NUMA node %d not bound",
                   (int)node);
        return 0;
    }
    if (!hwloc_get_numanode_obj_by_os_index(t, (unsigned)node)) {
        int n = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE);
        return sl_fail(SL_EINVAL, "NUMA node %d does not exist (this machine has %d node%s)",
                       (int)node, n, n == 1 ? "" : "s");
    }
    return 0;
}

#define HUGE_PAGE_BYTES ((size_t)2 << 20)

size_t sl_host_mem_round(size_t bytes) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE), huge = HUGE_PAGE_BYTES;
    if (bytes == 0 || bytes > SIZE_MAX - 2 * huge) return bytes;
    size_t len = (bytes + page - 1) & ~(page - 1);
    return len >= huge ? (len + huge - 1) & ~(huge - 1) : len;
}

int sl_host_mem_alloc(struct sl_host_mem *m, size_t bytes, const struct sl_host_mem_params *p) {
    static const struct sl_host_mem_params defaults = {.numa_node = -1};
    memset(m, 0, sizeof *m);
    if (!p) p = &defaults;
    if (p->reg && !p->unreg)
        return sl_fail(SL_EINVAL, "host memory: a register hook needs an unregister hook");
    int rc = check_node(p->numa_node);
    if (rc != 0) return rc;
    m->numa_node = -1;
    if (bytes == 0) return 0;

    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (bytes > SIZE_MAX - (page - 1)) {
        memset(m, 0, sizeof *m);
        return sl_fail(SL_ENOMEM, "host memory: %zu bytes cannot be mapped", bytes);
    }
    size_t len = (bytes + page - 1) & ~(page - 1);
    /* Gathers touch rows scattered over the whole area: on 4 KiB pages nearly every row is a
     * TLB miss. Large areas are aligned to 2 MiB and offered to transparent huge pages. */
    size_t huge = HUGE_PAGE_BYTES;
    bool want_huge = len >= huge && len <= SIZE_MAX - 2 * huge;
    if (want_huge) len = (len + huge - 1) & ~(huge - 1);
    size_t map_len = want_huge ? len + huge : len;
    void *ptr = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ptr == MAP_FAILED) {
        int e = errno;
        memset(m, 0, sizeof *m);
        return sl_fail(SL_ENOMEM, "host memory: cannot map %zu bytes: %s", len, strerror(e));
    }
    if (want_huge) {
        uintptr_t start = ((uintptr_t)ptr + huge - 1) & ~(uintptr_t)(huge - 1);
        size_t head = start - (uintptr_t)ptr;
        if (head) munmap(ptr, head);
        if (map_len - head > len) munmap((uint8_t *)start + len, map_len - head - len);
        ptr = (void *)start;
        (void)madvise(ptr, len, MADV_HUGEPAGE); /* advisory: THP may be off */
    }
    m->ptr = ptr;
    m->bytes = len;

    int32_t node = p->numa_node >= 0 ? p->numa_node : sl_host_mem_local_node();
    if (node >= 0) m->numa_node = bind_to_node(ptr, len, node);

    if (p->mlock) {
        if (mlock(ptr, len) == 0) {
            m->locked = true;
        } else {
            int e = errno;
            if (first_warning(&warned_lock))
                sl_log(SL_LOG_WARN, "host memory: cannot mlock %zu bytes (%s%s); continuing "
                       "unlocked", len, strerror(e),
                       e == ENOMEM || e == EPERM ? ", see ulimit -l / RLIMIT_MEMLOCK" : "");
        }
    }

    if (p->reg) {
        int r = p->reg(ptr, len, p->user);
        if (r == 0) {
            m->registered = true;
            m->unreg = p->unreg;
            m->user = p->user;
        } else if (first_warning(&warned_reg)) {
            sl_log(SL_LOG_WARN, "host memory: registering %zu bytes for device DMA failed (%s); "
                   "continuing with pageable memory", len, sl_strerror(r));
        }
    }
    return 0;
}

void sl_host_mem_free(struct sl_host_mem *m) {
    if (!m) return;
    if (m->ptr) {
        if (m->registered && m->unreg) m->unreg(m->ptr, m->user);
        if (m->locked) munlock(m->ptr, m->bytes);
        munmap(m->ptr, m->bytes);
    }
    memset(m, 0, sizeof *m);
}
