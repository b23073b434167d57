/* Parallel-for thread pool. Workers spin briefly on a generation counter before sleeping on
 * a condition variable: decode issues hundreds of short parallel sections per token, where a
 * futex wake per section would cost more than the work.
 *
 * A process bound to part of the machine (mpirun's --bind-to, taskset, numactl) was placed
 * there by whoever started it, often beside other processes of the same job: its pool then
 * defaults to the cores of that binding and leaves its threads inside it, unpinned, instead of
 * pinning thread i to machine core i, where every rank of a node would pile onto the same
 * cores. (A cgroup cpuset, as Slurm sets, is already the whole of hwloc's topology.) */
#include "cpu/threadpool.h"

#include <errno.h>
#include <hwloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "spotlight/cpu.h"

#define SPIN_ITERS 20000

struct sl_threadpool {
    int n;
    pthread_t *threads;
    hwloc_topology_t topo;
    int have_topo;
    int pin;

    sl_task_fn fn;
    void *ctx;
    atomic_uint generation; /* bumped per run */
    atomic_int pending;     /* workers still running the current task */
    atomic_bool stop;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
};

struct worker_arg {
    sl_threadpool *pool;
    int ith;
};

/* The binding the process started with, read by the first pool before it pins its caller (a
 * later pool would otherwise see that one core): the cores it touches, and whether it is
 * narrower than the machine. */
static pthread_mutex_t g_binding_mu = PTHREAD_MUTEX_INITIALIZER;
static bool g_binding_read, g_bound;
static int g_bound_cores;

static void read_binding(hwloc_topology_t topo) {
    pthread_mutex_lock(&g_binding_mu);
    if (!g_binding_read) {
        g_binding_read = true;
        hwloc_bitmap_t set = hwloc_bitmap_alloc();
        hwloc_const_cpuset_t all = hwloc_topology_get_topology_cpuset(topo);
        if (set && hwloc_get_cpubind(topo, set, HWLOC_CPUBIND_THREAD) == 0 && !hwloc_bitmap_iszero(set) &&
            !hwloc_bitmap_isincluded(all, set)) {
            g_bound = true;
            int n_cores = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE);
            for (int i = 0; i < n_cores; i++) {
                hwloc_obj_t core = hwloc_get_obj_by_type(topo, HWLOC_OBJ_CORE, i);
                g_bound_cores += core && core->cpuset && hwloc_bitmap_intersects(core->cpuset, set);
            }
            sl_log(SL_LOG_DEBUG, "process bound to %d core(s): threads stay inside the binding", g_bound_cores);
        }
        hwloc_bitmap_free(set);
    }
    pthread_mutex_unlock(&g_binding_mu);
}

static void pin_to_core(sl_threadpool *p, int ith) {
    if (!p->pin || !p->have_topo || g_bound) return;
    int n_cores = hwloc_get_nbobjs_by_type(p->topo, HWLOC_OBJ_CORE);
    if (n_cores <= 0) return;
    hwloc_obj_t core = hwloc_get_obj_by_type(p->topo, HWLOC_OBJ_CORE, ith % n_cores);
    if (!core || !core->cpuset) return;
    hwloc_cpuset_t set = hwloc_bitmap_dup(core->cpuset);
    hwloc_bitmap_singlify(set); /* one PU of the core: SMT siblings would share its units */
    if (hwloc_set_cpubind(p->topo, set, HWLOC_CPUBIND_THREAD) != 0)
        sl_log(SL_LOG_DEBUG, "could not pin thread %d to core %d", ith, ith % n_cores);
    hwloc_bitmap_free(set);
}

static void *worker_main(void *arg) {
    struct worker_arg wa = *(struct worker_arg *)arg;
    free(arg);
    sl_threadpool *p = wa.pool;
    pin_to_core(p, wa.ith);
    unsigned seen = 0;
    for (;;) {
        unsigned gen;
        int spins = 0;
        while ((gen = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen &&
               !atomic_load(&p->stop)) {
            if (++spins < SPIN_ITERS) {
                __builtin_ia32_pause();
                continue;
            }
            pthread_mutex_lock(&p->mu);
            while (atomic_load(&p->generation) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->wake, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = gen;
        p->fn(p->ctx, wa.ith, p->n);
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

int sl_threadpool_create(int n_threads, int pin, sl_threadpool **out) {
    sl_threadpool *p = calloc(1, sizeof *p);
    if (!p) return sl_fail(SL_ENOMEM, "out of memory for the thread pool");
    p->pin = pin;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    if (hwloc_topology_init(&p->topo) == 0) {
        if (hwloc_topology_load(p->topo) == 0)
            p->have_topo = 1;
        else
            hwloc_topology_destroy(p->topo);
    }
    if (p->have_topo) read_binding(p->topo);
    if (n_threads <= 0) {
        struct sl_cpu_info ci;
        sl_cpu_info_get(&ci);
        n_threads = g_bound && g_bound_cores > 0 ? g_bound_cores : ci.n_physical_cores;
    }
    p->n = n_threads;
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    if (!p->threads) {
        sl_threadpool_free(p);
        return sl_fail(SL_ENOMEM, "out of memory for the thread pool");
    }
    pin_to_core(p, 0);
    for (int i = 1; i < n_threads; i++) {
        struct worker_arg *wa = malloc(sizeof *wa);
        int rc = ENOMEM;
        if (wa) {
            *wa = (struct worker_arg){p, i};
            rc = pthread_create(&p->threads[i], NULL, worker_main, wa);
        }
        if (rc != 0) {
            free(wa);
            p->n = i; /* only threads 1..i-1 exist */
            sl_threadpool_free(p);
            return sl_fail(-rc, "cannot start worker thread %d", i);
        }
    }
    *out = p;
    return 0;
}

void sl_threadpool_free(sl_threadpool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n && p->threads; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    if (p->have_topo) hwloc_topology_destroy(p->topo);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p);
}

int sl_threadpool_size(const sl_threadpool *p) { return p->n; }

void sl_threadpool_run(sl_threadpool *p, sl_task_fn fn, void *ctx) {
    if (p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store(&p->pending, p->n - 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    fn(ctx, 0, p->n);
    int spins = 0;
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) {
        if (++spins < SPIN_ITERS) {
            __builtin_ia32_pause();
            continue;
        }
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->pending) > 0) pthread_cond_wait(&p->done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}
