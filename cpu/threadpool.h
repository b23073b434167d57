/* A fixed pool of worker threads, pinned one per physical core with hwloc, that runs a
 * parallel-for: every thread calls fn(ctx, ith, nth) and the call returns when all are done.
 * The calling thread is worker 0, so a pool of n threads starts n-1. Created once per
 * context; nothing is allocated per call. */
#ifndef SL_CPU_THREADPOOL_H
#define SL_CPU_THREADPOOL_H

#include <stdint.h>

typedef struct sl_threadpool sl_threadpool;
typedef void (*sl_task_fn)(void *ctx, int ith, int nth);

/* n_threads <= 0: one per physical core, or per core of the process's CPU binding when it
 * was started bound to part of the machine (mpirun, taskset). pin: bind threads to cores
 * (skipped quietly where the OS refuses, and for a bound process, whose threads stay inside
 * its binding). 0 or SL_ENOMEM / -errno. */
int sl_threadpool_create(int n_threads, int pin, sl_threadpool **out);
void sl_threadpool_free(sl_threadpool *p); /* NULL is a no-op */
int sl_threadpool_size(const sl_threadpool *p);

/* Runs fn on every thread and waits. Not reentrant; one caller at a time. */
void sl_threadpool_run(sl_threadpool *p, sl_task_fn fn, void *ctx);

/* Splits [0, n) into nth near-equal parts; part ith is [*begin, *end). */
static inline void sl_split_range(int64_t n, int ith, int nth, int64_t *begin, int64_t *end) {
    int64_t per = n / nth, rem = n % nth;
    *begin = ith * per + (ith < rem ? ith : rem);
    *end = *begin + per + (ith < rem);
}

#endif
