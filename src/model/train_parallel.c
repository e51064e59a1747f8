/* gdn2_train_parallel: data-parallel training on the ranks of one machine (docs/DIST.md); and
 * gdn2_train_mpi: this process as one rank of an MPI job (at the end of the file). The
 * calling process forks one process per rank (src/dist/launch.c) and supervises them; each rank
 * runs gdn2_train with its communicator. What the ranks hand back to the caller (rank 0's result,
 * the loss trace, the NCCL unique id that rank 0 makes and the others wait for) lives in one
 * anonymous shared mapping made before the fork. CUDA is never initialised in the calling process
 * (CUDA does not survive a fork): rank 0 makes the NCCL id, each rank selects its own GPU. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "../dist/comm.h"
#include "../dist/launch.h"
#include "gdn2_cuda.h"
#include "model_internal.h"

typedef struct {
    _Atomic int id_state; /* 0 pending, 1 ready, -1 rank 0 failed to make it */
    unsigned char id[GDN2_NCCL_ID_BYTES];
    gdn2_train_result res;
    float trace[]; /* [steps] of losses when the caller asked for a loss trace, then [steps] of gradient
                    * norms when it asked for those */
} shared_page;

typedef struct {
    const gdn2_train_opts *o;
    gdn2_local_arena *arena;
    int use_nccl;
    shared_page *sh;
    double timeout_s;
} par_arg;

static int wait_id(shared_page *sh, double timeout_s) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        const int s = atomic_load(&sh->id_state);
        if (s == 1) return GDN2_OK;
        if (s < 0) return gdn2_error(GDN2_ERR_DEVICE, "rank 0 could not make the NCCL unique id");
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((double)(t.tv_sec - t0.tv_sec) > timeout_s)
            return gdn2_error(GDN2_ERR_DEVICE, "no NCCL unique id from rank 0 within %.0f s", timeout_s);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

static int rank_body(int rank, int world, void *v) {
    par_arg *p = v;
    gdn2_train_opts o = *p->o;
    o.rank = rank, o.world = world;
    /* rank 0's traces reach the caller through the shared page */
    o.loss_trace = rank == 0 && p->o->loss_trace ? p->sh->trace : NULL;
    o.gnorm_trace = rank == 0 && p->o->gnorm_trace ? p->sh->trace + (p->o->loss_trace ? p->o->steps : 0) : NULL;
    if (rank) o.quiet = 1;
    gdn2_comm *c = NULL;
    int st = GDN2_OK;
    if (p->use_nccl) {
        /* one GPU per rank: rank r on device r (CUDA_VISIBLE_DEVICES picks which ones) */
        st = gdn2_cuda_set_device(rank);
        if (!st && rank == 0) {
            st = gdn2_comm_nccl_id(p->sh->id);
            atomic_store(&p->sh->id_state, st ? -1 : 1);
        }
        if (!st && rank) st = wait_id(p->sh, p->timeout_s);
        o.nccl_id = p->sh->id;
    } else {
        st = gdn2_comm_local(p->arena, rank, &c);
        o.comm = c;
    }
    gdn2_train_result r;
    memset(&r, 0, sizeof r);
    if (!st) st = gdn2_train(&o, &r, NULL);
    if (!st && rank == 0) p->sh->res = r;
    if (st) fprintf(stderr, "gdn2 train: rank %d of %d: %s\n", rank, world, gdn2_last_error());
    if (c) c->destroy(c);
    return st;
}

int gdn2_train_parallel(const gdn2_train_opts *o, int world, gdn2_train_result *r) {
    if (world <= 1) return gdn2_train(o, r, NULL);
    if (world > 64) return gdn2_error(GDN2_ERR_ARG, "train: %d ranks, at most 64", world);
    if (o->batch % world)
        return gdn2_error(GDN2_ERR_ARG, "train: --batch %lld must be a multiple of the %d ranks (the global batch is split)",
                          (long long)o->batch, world);
    const int use_nccl = o->device && !strcmp(o->device, "cuda");
    const double timeout_s = o->dist_timeout_s > 0 ? o->dist_timeout_s : 600.0;
    const size_t nl = o->loss_trace ? (size_t)o->steps : 0, ng = o->gnorm_trace ? (size_t)o->steps : 0;
    const size_t page = sizeof(shared_page) + (nl + ng) * sizeof(float);
    shared_page *sh = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) return gdn2_error(GDN2_ERR_NOMEM, "train: shared page for %d ranks: %s", world, strerror(errno));
    /* entries the ranks do not write (steps before a resume) keep their values */
    if (nl) memcpy(sh->trace, o->loss_trace, nl * sizeof(float));
    if (ng) memcpy(sh->trace + nl, o->gnorm_trace, ng * sizeof(float));
    gdn2_local_arena *arena = NULL;
    int st = GDN2_OK;
    if (use_nccl) setenv("NCCL_NVLS_ENABLE", "0", 0); /* NVLink multicast off on shared machines */
    else st = gdn2_comm_local_arena(world, timeout_s, &arena);
    if (!st) {
        par_arg p = {o, arena, use_nccl, sh, timeout_s};
        st = gdn2_launch(world, rank_body, &p, arena, o->dist_grace_s);
    }
    if (r) *r = sh->res;
    if (nl) memcpy(o->loss_trace, sh->trace, nl * sizeof(float));
    if (ng) memcpy(o->gnorm_trace, sh->trace + nl, ng * sizeof(float));
    gdn2_comm_local_arena_free(arena);
    munmap(sh, page);
    return st;
}

int gdn2_train_mpi(const gdn2_train_opts *oin, gdn2_train_result *r) {
    gdn2_comm *c = NULL;
    int st = gdn2_comm_mpi(&c);
    if (st) return st;
    gdn2_train_opts o = *oin;
    o.rank = c->rank, o.world = c->world;
    if (c->rank) o.quiet = 1;
    unsigned char id[GDN2_NCCL_ID_BYTES + 1]; /* the id and rank 0's status (0 ok) */
    if (c->world > 1 && o.device && !strcmp(o.device, "cuda")) {
        /* NCCL: one GPU per rank of a node, the unique id from rank 0 over MPI */
        setenv("NCCL_NVLS_ENABLE", "0", 0); /* NVLink multicast off on shared machines */
        st = gdn2_cuda_set_device(gdn2_comm_mpi_local_rank(c));
        memset(id, 0, sizeof id);
        if (c->rank == 0) id[GDN2_NCCL_ID_BYTES] = (unsigned char)(st || (st = gdn2_comm_nccl_id(id)) ? 1 : 0);
        int bs = gdn2_comm_mpi_bcast(c, id, sizeof id);
        if (!st && bs) st = bs;
        if (!st && id[GDN2_NCCL_ID_BYTES]) st = gdn2_error(GDN2_ERR_DEVICE, "rank 0 could not make the NCCL unique id");
        o.nccl_id = id, o.comm = NULL;
    } else if (c->world > 1) {
        o.comm = c;
    }
    if (!st) st = gdn2_train(&o, r, NULL);
    if (!st) c->destroy(c); /* on failure the caller aborts the job: the others may sit in a collective */
    return st;
}
