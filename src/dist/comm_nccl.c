/* The NCCL communicator: the table of comm.h over src/cuda/nccl.h, collectives queued on the CUDA
 * backend's stream. */
#include <stdlib.h>

#include "../cuda/nccl.h"
#include "../util/internal.h"
#include "comm.h"

typedef struct {
    void *comm, *stream;
} nccl_ctx;
#define X(c) ((nccl_ctx *)(c)->ctx)

static int all_reduce(gdn2_comm *c, float *buf, size_t n) { return gdn2_cuda_nccl_all_reduce(X(c)->comm, buf, n, X(c)->stream); }
static int reduce_scatter(gdn2_comm *c, const float *in, float *out, size_t shard) {
    return gdn2_cuda_nccl_reduce_scatter(X(c)->comm, in, out, shard, X(c)->stream);
}
static int all_gather(gdn2_comm *c, const void *in, void *out, size_t bytes) {
    return gdn2_cuda_nccl_all_gather(X(c)->comm, in, out, bytes, X(c)->stream);
}
static int all_reduce_host(gdn2_comm *c, double *v, int n) {
    return gdn2_cuda_nccl_all_reduce_host(X(c)->comm, v, n, X(c)->stream);
}
static int barrier(gdn2_comm *c) {
    double z = 0.0;
    return all_reduce_host(c, &z, 1);
}
static void destroy(gdn2_comm *c) {
    if (!c) return;
    if (c->ctx) gdn2_cuda_nccl_destroy(X(c)->comm);
    free(c->ctx);
    free(c);
}

int gdn2_comm_nccl_id(unsigned char id[GDN2_NCCL_ID_BYTES]) { return gdn2_cuda_nccl_id(id); }

int gdn2_comm_nccl(const unsigned char id[GDN2_NCCL_ID_BYTES], int rank, int world, void *stream, gdn2_comm **out) {
    *out = NULL;
    gdn2_comm *c = calloc(1, sizeof *c);
    nccl_ctx *x = calloc(1, sizeof *x);
    if (!c || !x) {
        free(c), free(x);
        return gdn2_error(GDN2_ERR_NOMEM, "out of memory for a communicator");
    }
    int st = gdn2_cuda_nccl_init(&x->comm, id, rank, world);
    if (st) {
        free(c), free(x);
        return st;
    }
    x->stream = stream;
    c->name = "nccl", c->rank = rank, c->world = world, c->ctx = x;
    c->all_reduce = all_reduce, c->reduce_scatter = reduce_scatter, c->all_gather = all_gather;
    c->all_reduce_host = all_reduce_host, c->barrier = barrier, c->destroy = destroy;
    *out = c;
    return GDN2_OK;
}
