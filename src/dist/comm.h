/* Collectives for data-parallel training (docs/DIST.md): one process per rank, a communicator per
 * process. Two implementations behind one table:
 *   local (comm_local.c): ranks are processes of one machine forked by the launcher (launch.c),
 *         exchanging through a shared-memory arena; host buffers (the CPU backend's). Used by
 *         `gdn2 train --ranks N` and by the tests of everything above the transport.
 *   nccl  (comm_nccl.c over src/cuda/nccl.cu): device buffers on the CUDA backend's stream; the
 *         unique id comes from the launcher (one node, `--gpus N`) or from MPI (`mpirun`).
 *   mpi   (comm_mpi.c): the processes of an MPI job (`mpirun -np N gdn2 train`); host buffers.
 * Every reduction sums the ranks' contributions in a fixed order (local and mpi: rank 0, 1, ...,
 * the same bits; NCCL: its fixed ring/tree order for a given topology), so a run is repeatable.
 * Failure: a rank that does not arrive at a collective within the communicator's timeout makes the
 * call fail with GDN2_ERR_DEVICE naming the rank (local: also when its process is gone); the
 * launcher then stops the other ranks. Not public API. */
#ifndef GDN2_DIST_COMM_H
#define GDN2_DIST_COMM_H

#include <stddef.h>
#include <stdint.h>

typedef struct gdn2_comm gdn2_comm;
struct gdn2_comm {
    const char *name; /* "local" or "nccl"                                                   */
    int rank, world;
    void *ctx;
    /* buf[n] (fp32, the model's backend memory) <- sum over ranks, identical on every rank */
    int (*all_reduce)(gdn2_comm *c, float *buf, size_t n);
    /* out[shard] (fp32) <- sum over ranks of in[rank*shard .. +shard); in has world*shard floats */
    int (*reduce_scatter)(gdn2_comm *c, const float *in, float *out, size_t shard);
    /* out[world*bytes] <- every rank's `bytes` bytes at in, in rank order (in may be out + rank*bytes) */
    int (*all_gather)(gdn2_comm *c, const void *in, void *out, size_t bytes);
    /* HOST doubles summed over ranks (losses, counts, norms), identical on every rank */
    int (*all_reduce_host)(gdn2_comm *c, double *v, int n);
    int (*barrier)(gdn2_comm *c);
    void (*destroy)(gdn2_comm *c);
};

/* ---- local: shared-memory ranks of one machine -------------------------------------------- */
/* The arena is created by the launcher before it forks (gdn2_comm_local_arena), each child makes
 * its communicator on it. timeout_s: how long a collective waits for the slowest rank. */
typedef struct gdn2_local_arena gdn2_local_arena;
int gdn2_comm_local_arena(int world, double timeout_s, gdn2_local_arena **out);
void gdn2_comm_local_arena_free(gdn2_local_arena *a); /* after the children have exited */
/* record a rank's process id (the launcher, after fork) so that a peer can tell "gone" from "slow" */
void gdn2_comm_local_set_pid(gdn2_local_arena *a, int rank, long pid);
int gdn2_comm_local(gdn2_local_arena *a, int rank, gdn2_comm **out);
/* mark this rank failed: the others stop at their next collective (no-op for other kinds) */
void gdn2_comm_local_fail(gdn2_comm *c);

/* ---- nccl: one GPU per rank ---------------------------------------------------------------- */
/* id: 128 bytes from gdn2_comm_nccl_id (made once, before the ranks start, and handed to every
 * rank); stream: the CUDA backend's (collectives are queued on it). */
enum { GDN2_NCCL_ID_BYTES = 128 };
int gdn2_comm_nccl_id(unsigned char id[GDN2_NCCL_ID_BYTES]);
int gdn2_comm_nccl(const unsigned char id[GDN2_NCCL_ID_BYTES], int rank, int world, void *stream, gdn2_comm **out);

/* ---- mpi: the processes of an MPI job ------------------------------------------------------ */
/* Over a duplicate of MPI_COMM_WORLD; the caller has called MPI_Init (and calls MPI_Finalize after
 * destroy). Without MPI built in (the Makefile found no mpi.h): GDN2_ERR_UNSUPPORTED, saying so. */
int gdn2_comm_mpi(gdn2_comm **out);
/* this rank's index among the ranks of its node (the GPU it uses); 0 for other kinds */
int gdn2_comm_mpi_local_rank(const gdn2_comm *c);
/* rank 0's `bytes` bytes at buf to every rank (the NCCL unique id) */
int gdn2_comm_mpi_bcast(gdn2_comm *c, void *buf, size_t bytes);

#endif
