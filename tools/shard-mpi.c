/* MPI for scaled-out jobs (see shard-mpi.h). The one place that includes <mpi.h>; CMake
 * defines SL_HAVE_MPI when it found MPI, and without it the functions report that this build
 * has none. */
#include "tools/shard-mpi.h"

#include "spotlight/error.h"

#ifdef SL_HAVE_MPI
#include <mpi.h>
#include <time.h>

static bool g_inited;

bool shard_mpi_built(void) { return true; }

int shard_mpi_init(int32_t *rank, int32_t *size) {
    int provided = 0, r = 0, s = 0;
    /* worker threads compute but never call MPI */
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) return SL_EIO;
    g_inited = true;
    if (MPI_Comm_rank(MPI_COMM_WORLD, &r) != MPI_SUCCESS || MPI_Comm_size(MPI_COMM_WORLD, &s) != MPI_SUCCESS)
        return SL_EIO;
    *rank = r;
    *size = s;
    return 0;
}

int shard_mpi_allgather_u64(uint64_t mine, uint64_t *all) {
    MPI_Request req;
    if (MPI_Iallgather(&mine, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, MPI_COMM_WORLD, &req) != MPI_SUCCESS)
        return SL_EIO;
    /* a blocking collective busy-polls: a rank done early would take a core from one still
     * summarizing. Poll at up to 20 ms instead (negligible next to a document's minutes). */
    long ns = 100000;
    for (;;) {
        int done = 0;
        if (MPI_Test(&req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) return SL_EIO;
        if (done) return 0;
        nanosleep(&(struct timespec){0, ns}, NULL);
        if (ns < 20000000) ns *= 2;
    }
}

void shard_mpi_finalize(void) {
    if (g_inited) MPI_Finalize();
    g_inited = false;
}

#else /* built without MPI */

bool shard_mpi_built(void) { return false; }

int shard_mpi_init(int32_t *rank, int32_t *size) {
    *rank = 0;
    *size = 1;
    return SL_EUNSUPPORTED;
}

int shard_mpi_allgather_u64(uint64_t mine, uint64_t *all) {
    all[0] = mine; /* one process: the gather of itself */
    return 0;
}

void shard_mpi_finalize(void) {}

#endif
