/* The MPI communicator: ranks are the processes of an MPI job (`mpirun -np N gdn2 train ...`, one
 * or several nodes); the caller has called MPI_Init (the CLI does, not the library). Host buffers
 * (the CPU backend's). Built only when the Makefile finds MPI (GDN2_HAVE_MPI); otherwise every
 * entry point fails with GDN2_ERR_UNSUPPORTED.
 *
 * Determinism: MPI's own reductions (MPI_Allreduce, MPI_Reduce_scatter_block) do not promise a
 * summation order, so the sums here are made from gathered contributions added in rank order
 * 0, 1, ..., W-1, exactly as the local communicator does (comm_local.c): an MPI run gives the same
 * bits as `--ranks N` (tests/test_dist.c). The cost is W times the traffic of a ring all-reduce,
 * in chunks of CHUNK_FLOATS floats per rank (a staging buffer of W chunks): fine for the models
 * trained on CPU ranks; a GPU run uses NCCL and MPI only to broadcast its unique id.
 * A rank that fails calls MPI_Abort (the CLI), which makes mpirun stop the others. */
#include <stdlib.h>
#include <string.h>

#include "../util/internal.h"
#include "comm.h"

#ifdef GDN2_HAVE_MPI
#include <mpi.h>

#define CHUNK_FLOATS ((size_t)1 << 20) /* 4 MiB per rank per round */

typedef struct {
    MPI_Comm comm;
    int local_rank;
    void *stage;        /* [world * CHUNK_FLOATS] floats (also used as bytes and doubles) */
    float *send;        /* [world * CHUNK_FLOATS] for reduce_scatter's all-to-all        */
} mpi_ctx;
#define X(c) ((mpi_ctx *)(c)->ctx)

static int mpi_fail(gdn2_comm *c, const char *what, int rc) {
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return gdn2_error(GDN2_ERR_DEVICE, "MPI %s on rank %d of %d: %s", what, c->rank, c->world, msg);
}

static int all_reduce(gdn2_comm *c, float *buf, size_t n) {
    const int W = c->world;
    float *st = X(c)->stage;
    for (size_t off = 0; off < n; off += CHUNK_FLOATS) {
        const size_t len = n - off < CHUNK_FLOATS ? n - off : CHUNK_FLOATS;
        int rc = MPI_Allgather(buf + off, (int)len, MPI_FLOAT, st, (int)len, MPI_FLOAT, X(c)->comm);
        if (rc != MPI_SUCCESS) return mpi_fail(c, "all_reduce (MPI_Allgather)", rc);
        /* buf = part_0 + part_1 + ... in rank order: the same bits on every rank, as comm_local.c */
        memcpy(buf + off, st, len * sizeof(float));
        for (int r = 1; r < W; r++) {
            const float *s = st + (size_t)r * len;
            for (size_t i = 0; i < len; i++) buf[off + i] += s[i];
        }
    }
    return GDN2_OK;
}

static int reduce_scatter(gdn2_comm *c, const float *in, float *out, size_t shard) {
    const int W = c->world;
    const size_t csz = CHUNK_FLOATS; /* per destination rank, per round */
    float *snd = X(c)->send, *rcv = X(c)->stage;
    for (size_t i0 = 0; i0 < shard; i0 += csz) {
        const size_t len = shard - i0 < csz ? shard - i0 : csz;
        for (int j = 0; j < W; j++) memcpy(snd + (size_t)j * len, in + (size_t)j * shard + i0, len * sizeof(float));
        /* rank j receives every rank's piece j: rcv[r*len ..] from rank r */
        int rc = MPI_Alltoall(snd, (int)len, MPI_FLOAT, rcv, (int)len, MPI_FLOAT, X(c)->comm);
        if (rc != MPI_SUCCESS) return mpi_fail(c, "reduce_scatter (MPI_Alltoall)", rc);
        memcpy(out + i0, rcv, len * sizeof(float));
        for (int r = 1; r < W; r++) {
            const float *s = rcv + (size_t)r * len;
            for (size_t i = 0; i < len; i++) out[i0 + i] += s[i];
        }
    }
    return GDN2_OK;
}

static int all_gather(gdn2_comm *c, const void *in, void *out, size_t bytes) {
    const int W = c->world;
    const size_t cap = CHUNK_FLOATS * sizeof(float);
    char *st = X(c)->stage, *snd = (char *)X(c)->send;
    for (size_t off = 0; off < bytes; off += cap) {
        const size_t len = bytes - off < cap ? bytes - off : cap;
        memcpy(snd, (const char *)in + off, len); /* in may lie inside out */
        int rc = MPI_Allgather(snd, (int)len, MPI_BYTE, st, (int)len, MPI_BYTE, X(c)->comm);
        if (rc != MPI_SUCCESS) return mpi_fail(c, "all_gather (MPI_Allgather)", rc);
        for (int r = 0; r < W; r++) memcpy((char *)out + (size_t)r * bytes + off, st + (size_t)r * len, len);
    }
    return GDN2_OK;
}

static int all_reduce_host(gdn2_comm *c, double *v, int n) {
    if (n < 0 || (size_t)n * sizeof(double) > CHUNK_FLOATS * sizeof(float))
        return gdn2_error(GDN2_ERR_ARG, "all_reduce_host: %d values", n);
    if (!n) return GDN2_OK;
    double *st = X(c)->stage;
    int rc = MPI_Allgather(v, n, MPI_DOUBLE, st, n, MPI_DOUBLE, X(c)->comm);
    if (rc != MPI_SUCCESS) return mpi_fail(c, "all_reduce_host (MPI_Allgather)", rc);
    for (int i = 0; i < n; i++) {
        double s = 0.0;
        for (int r = 0; r < c->world; r++) s += st[(size_t)r * n + i];
        v[i] = s;
    }
    return GDN2_OK;
}

static int barrier(gdn2_comm *c) {
    int rc = MPI_Barrier(X(c)->comm);
    return rc == MPI_SUCCESS ? GDN2_OK : mpi_fail(c, "barrier", rc);
}

static void destroy(gdn2_comm *c) {
    if (!c) return;
    mpi_ctx *x = c->ctx;
    if (x) {
        int fin = 0;
        MPI_Finalized(&fin);
        if (!fin && x->comm != MPI_COMM_NULL) MPI_Comm_free(&x->comm);
        free(x->stage), free(x->send);
        free(x);
    }
    free(c);
}

int gdn2_comm_mpi(gdn2_comm **out) {
    *out = NULL;
    int init = 0;
    MPI_Initialized(&init);
    if (!init) return gdn2_error(GDN2_ERR_ARG, "MPI communicator: MPI_Init has not been called");
    gdn2_comm *c = calloc(1, sizeof *c);
    mpi_ctx *x = calloc(1, sizeof *x);
    if (!c || !x) {
        free(c), free(x);
        return gdn2_error(GDN2_ERR_NOMEM, "out of memory for a communicator");
    }
    x->comm = MPI_COMM_NULL;
    c->name = "mpi", c->ctx = x;
    int rc = MPI_Comm_dup(MPI_COMM_WORLD, &x->comm);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_set_errhandler(x->comm, MPI_ERRORS_RETURN);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_rank(x->comm, &c->rank);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_size(x->comm, &c->world);
    MPI_Comm node = MPI_COMM_NULL; /* the ranks of this node: the local rank picks the GPU */
    if (rc == MPI_SUCCESS) rc = MPI_Comm_split_type(x->comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_rank(node, &x->local_rank);
    if (node != MPI_COMM_NULL) MPI_Comm_free(&node);
    if (rc != MPI_SUCCESS) {
        int st = mpi_fail(c, "communicator setup", rc);
        destroy(c);
        return st;
    }
    const size_t bytes = (size_t)c->world * CHUNK_FLOATS * sizeof(float);
    x->stage = malloc(bytes);
    x->send = malloc(bytes);
    if (!x->stage || !x->send) {
        destroy(c);
        return gdn2_error(GDN2_ERR_NOMEM, "MPI communicator: 2 staging buffers of %zu bytes", bytes);
    }
    c->all_reduce = all_reduce, c->reduce_scatter = reduce_scatter, c->all_gather = all_gather;
    c->all_reduce_host = all_reduce_host, c->barrier = barrier, c->destroy = destroy;
    *out = c;
    return GDN2_OK;
}

int gdn2_comm_mpi_local_rank(const gdn2_comm *c) {
    return c && c->name && !strcmp(c->name, "mpi") ? X(c)->local_rank : 0;
}

int gdn2_comm_mpi_bcast(gdn2_comm *c, void *buf, size_t bytes) {
    int rc = MPI_Bcast(buf, (int)bytes, MPI_BYTE, 0, X(c)->comm);
    return rc == MPI_SUCCESS ? GDN2_OK : mpi_fail(c, "broadcast", rc);
}

#else /* built without MPI */

#define NO_MPI                                                                                                \
    "this gdn2 was built without MPI (the Makefile found no mpi.h / libmpi: apt-get install libopenmpi-dev, " \
    "then rebuild; `make info` says mpi=1); on one machine use --ranks N or --gpus N"

int gdn2_comm_mpi(gdn2_comm **out) {
    *out = NULL;
    return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_MPI);
}
int gdn2_comm_mpi_local_rank(const gdn2_comm *c) {
    (void)c;
    return 0;
}
int gdn2_comm_mpi_bcast(gdn2_comm *c, void *buf, size_t bytes) {
    (void)c, (void)buf, (void)bytes;
    return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_MPI);
}

#endif
