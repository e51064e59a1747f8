// NCCL collectives (src/cuda/nccl.h). Sums are ncclSum over fp32 (fp64 for the host values); the
// reduction order is NCCL's for the communicator's topology, fixed from run to run on one machine.
#include <cuda_runtime.h>
#include <nccl.h>
#include <string.h>

#include "gdn2_error.h"
#include "nccl.h"

static int nccl_err(const char *what, ncclResult_t r) {
    return gdn2_error(GDN2_ERR_DEVICE, "NCCL %s: %s", what, ncclGetErrorString(r));
}

extern "C" int gdn2_cuda_nccl_id(unsigned char id[128]) {
    static_assert(sizeof(ncclUniqueId) <= 128, "ncclUniqueId larger than 128 bytes");
    ncclUniqueId u;
    ncclResult_t r = ncclGetUniqueId(&u);
    if (r != ncclSuccess) return nccl_err("ncclGetUniqueId", r);
    memset(id, 0, 128);
    memcpy(id, &u, sizeof u);
    return GDN2_OK;
}

extern "C" int gdn2_cuda_nccl_init(void **comm, const unsigned char id[128], int rank, int world) {
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    ncclComm_t c;
    ncclResult_t r = ncclCommInitRank(&c, world, u, rank);
    if (r != ncclSuccess) return nccl_err("ncclCommInitRank", r);
    *comm = (void *)c;
    return GDN2_OK;
}

extern "C" void gdn2_cuda_nccl_destroy(void *comm) {
    if (comm) ncclCommDestroy((ncclComm_t)comm);
}

extern "C" int gdn2_cuda_nccl_all_reduce(void *comm, float *buf, size_t n, void *stream) {
    ncclResult_t r = ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum, (ncclComm_t)comm, (cudaStream_t)stream);
    return r == ncclSuccess ? GDN2_OK : nccl_err("ncclAllReduce", r);
}

extern "C" int gdn2_cuda_nccl_reduce_scatter(void *comm, const float *in, float *out, size_t shard, void *stream) {
    ncclResult_t r = ncclReduceScatter(in, out, shard, ncclFloat32, ncclSum, (ncclComm_t)comm, (cudaStream_t)stream);
    return r == ncclSuccess ? GDN2_OK : nccl_err("ncclReduceScatter", r);
}

extern "C" int gdn2_cuda_nccl_all_gather(void *comm, const void *in, void *out, size_t bytes, void *stream) {
    ncclResult_t r = ncclAllGather(in, out, bytes, ncclUint8, (ncclComm_t)comm, (cudaStream_t)stream);
    return r == ncclSuccess ? GDN2_OK : nccl_err("ncclAllGather", r);
}

extern "C" int gdn2_cuda_nccl_all_reduce_host(void *comm, double *v, int n, void *stream) {
    double *d = NULL;
    cudaStream_t s = (cudaStream_t)stream;
    cudaError_t e = cudaMallocAsync((void **)&d, (size_t)n * sizeof(double), s);
    if (e == cudaSuccess) e = cudaMemcpyAsync(d, v, (size_t)n * sizeof(double), cudaMemcpyHostToDevice, s);
    if (e != cudaSuccess) return gdn2_error(GDN2_ERR_DEVICE, "all_reduce_host: %s", cudaGetErrorString(e));
    ncclResult_t r = ncclAllReduce(d, d, (size_t)n, ncclFloat64, ncclSum, (ncclComm_t)comm, s);
    if (r != ncclSuccess) {
        cudaFreeAsync(d, s);
        return nccl_err("ncclAllReduce (host values)", r);
    }
    e = cudaMemcpyAsync(v, d, (size_t)n * sizeof(double), cudaMemcpyDeviceToHost, s);
    cudaFreeAsync(d, s);
    if (e == cudaSuccess) e = cudaStreamSynchronize(s);
    return e == cudaSuccess ? GDN2_OK : gdn2_error(GDN2_ERR_DEVICE, "all_reduce_host: %s", cudaGetErrorString(e));
}
