/* The whole of MPI as the CLI sees it: which rank of how many this process is, and one
 * collective that doubles as the barrier. Every MPI call of the project is in shard-mpi.c;
 * built without MPI (SL_MPI=OFF, or AUTO without Open MPI found) the same functions say so. */
#ifndef SL_TOOLS_SHARD_MPI_H
#define SL_TOOLS_SHARD_MPI_H

#include <stdbool.h>
#include <stdint.h>

/* Whether this build has MPI. */
bool shard_mpi_built(void);

/* Initialises MPI (the main thread alone calls MPI). 0 with *rank and *size set, or
 * SL_EUNSUPPORTED when built without MPI, or SL_EIO when initialisation fails (printed by
 * MPI). Call only when a launcher (mpirun, srun) started the process. */
int shard_mpi_init(int32_t *rank, int32_t *size);

/* Every rank contributes one value; all[r] receives rank r's (size entries). Returns when
 * every rank has called it, so it is also the barrier. A rank that waits does not spin: it
 * polls with short sleeps, leaving its CPU to ranks still working on the same node.
 * 0 or SL_EIO. */
int shard_mpi_allgather_u64(uint64_t mine, uint64_t *all);

/* Finalises MPI after shard_mpi_init succeeded; a no-op otherwise. */
void shard_mpi_finalize(void);

#endif
