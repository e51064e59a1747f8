/* NCCL collectives for the data-parallel trainer (src/dist/comm_nccl.c), as a C API over device
 * pointers and an explicit stream (cudaStream_t as void *). Not public API. */
#ifndef GDN2_CUDA_NCCL_H
#define GDN2_CUDA_NCCL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ncclGetUniqueId into 128 bytes (made once, before the ranks start) */
int gdn2_cuda_nccl_id(unsigned char id[128]);
/* ncclCommInitRank on the current device; *comm opaque */
int gdn2_cuda_nccl_init(void **comm, const unsigned char id[128], int rank, int world);
void gdn2_cuda_nccl_destroy(void *comm);
int gdn2_cuda_nccl_all_reduce(void *comm, float *buf, size_t n, void *stream);
int gdn2_cuda_nccl_reduce_scatter(void *comm, const float *in, float *out, size_t shard, void *stream);
int gdn2_cuda_nccl_all_gather(void *comm, const void *in, void *out, size_t bytes, void *stream);
/* host doubles summed over ranks (through a small device buffer; synchronises the stream) */
int gdn2_cuda_nccl_all_reduce_host(void *comm, double *v, int n, void *stream);

#ifdef __cplusplus
}
#endif
#endif
