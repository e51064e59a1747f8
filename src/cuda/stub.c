/* Built only when CUDA is off: the GPU API reports that it is not available. */
#include "gdn2_cuda.h"
#include "cuda/attn.h"
#include "cuda/nccl.h"

#define NO_CUDA "gdn2 was built without CUDA (make CUDA=0, or no nvcc at build time)"

int gdn2_cuda_available(void) {
    gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA);
    return 0;
}

int gdn2_cuda_chunk_fwd_host(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t) {
    (void)d; (void)o; (void)t;
    return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA);
}

int gdn2_cuda_chunk_bwd_host(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                             const gdn2_bwd_tensors *g) {
    (void)d; (void)o; (void)t; (void)g;
    return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA);
}

size_t gdn2_cuda_chunk_workspace_size(const gdn2_dims *d, const gdn2_opts *o, int backward) {
    (void)d; (void)o; (void)backward;
    return 0;
}
size_t gdn2_cuda_chunk_reserve_size(const gdn2_dims *d, const gdn2_opts *o, int dtype) {
    (void)d; (void)o; (void)dtype;
    return 0;
}
size_t gdn2_cuda_chunk_call_workspace_size(const gdn2_dims *d, const gdn2_opts *o, const gdn2_cuda_fwd_args *a,
                                           const gdn2_cuda_bwd_args *g) {
    (void)d; (void)o; (void)a; (void)g;
    gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA);
    return 0;
}

int gdn2_cuda_chunk_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_cuda_fwd_args *a, void *stream) {
    (void)d; (void)o; (void)a; (void)stream;
    return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA);
}

int gdn2_cuda_chunk_bwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_cuda_fwd_args *a,
                        const gdn2_cuda_bwd_args *g, void *stream) {
    (void)d; (void)o; (void)a; (void)g; (void)stream;
    return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA);
}

int gdn2_cuda_recurrent_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_cuda_recurrent_args *a,
                            void *stream) {
    (void)d; (void)o; (void)a; (void)stream;
    return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA);
}

int gdn2_cuda_decode_step_host(const gdn2_dims *d, const gdn2_opts *o, const gdn2_decode_tensors *t) {
    (void)d; (void)o; (void)t;
    return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA);
}

void *gdn2_cuda_malloc(size_t bytes) { (void)bytes; gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA); return NULL; }
void gdn2_cuda_free(void *p) { (void)p; }
int gdn2_cuda_memcpy(void *dst, const void *src, size_t bytes, int kind) {
    (void)dst; (void)src; (void)bytes; (void)kind;
    return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA);
}
int gdn2_cuda_memset(void *p, int value, size_t bytes) { (void)p; (void)value; (void)bytes; return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA); }
int gdn2_cuda_sync(void) { return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA); }
int gdn2_cuda_device_info(char *name, size_t len, int *driver, int *runtime) {
    (void)name; (void)len; (void)driver; (void)runtime;
    return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA);
}
size_t gdn2_cuda_cublaslt_version(void) { return 0; }
int gdn2_cuda_mem_info(size_t *free_bytes, size_t *total_bytes) {
    (void)free_bytes, (void)total_bytes;
    return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA);
}
int gdn2_cuda_pool_high(size_t *bytes) {
    (void)bytes;
    return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA);
}
int gdn2_cuda_timer_start(void) { return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA); }
double gdn2_cuda_timer_stop(void) { return -1.0; }
int gdn2_cuda_timeline_begin(int cap) {
    (void)cap;
    return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA);
}
int gdn2_cuda_timeline_mark(void) { return -1; }
int gdn2_cuda_timeline_end(float *ms, int cap_ms) {
    (void)ms, (void)cap_ms;
    gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA);
    return -1;
}

int gdn2_cuda_rope_split(const gdn2_cuda_attn_shape *s, const void *qkv, void *q, void *k, void *v, void *stream) {
    (void)s; (void)qkv; (void)q; (void)k; (void)v; (void)stream;
    return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA);
}
int gdn2_cuda_rope_split_bwd(const gdn2_cuda_attn_shape *s, const void *dq, const void *dk, const void *dv,
                             void *dqkv, void *stream) {
    (void)s; (void)dq; (void)dk; (void)dv; (void)dqkv; (void)stream;
    return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA);
}
int gdn2_cuda_attn_fwd(const gdn2_cuda_attn_shape *s, const void *q, const void *k, const void *v, void *o,
                       float *lse, void *stream) {
    (void)s; (void)q; (void)k; (void)v; (void)o; (void)lse; (void)stream;
    return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA);
}
int gdn2_cuda_attn_bwd(const gdn2_cuda_attn_shape *s, const void *q, const void *k, const void *v, const void *o,
                       const float *lse, const void *dO, void *dq, void *dk, void *dv, void *stream) {
    (void)s; (void)q; (void)k; (void)v; (void)o; (void)lse; (void)dO; (void)dq; (void)dk; (void)dv; (void)stream;
    return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA);
}

/* NCCL (src/cuda/nccl.h) */
int gdn2_cuda_nccl_id(unsigned char id[128]) { (void)id; return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA); }
int gdn2_cuda_nccl_init(void **comm, const unsigned char id[128], int rank, int world) {
    (void)comm, (void)id, (void)rank, (void)world;
    return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA);
}
void gdn2_cuda_nccl_destroy(void *comm) { (void)comm; }
int gdn2_cuda_nccl_all_reduce(void *comm, float *buf, size_t n, void *stream) {
    (void)comm, (void)buf, (void)n, (void)stream;
    return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA);
}
int gdn2_cuda_nccl_reduce_scatter(void *comm, const float *in, float *out, size_t shard, void *stream) {
    (void)comm, (void)in, (void)out, (void)shard, (void)stream;
    return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA);
}
int gdn2_cuda_nccl_all_gather(void *comm, const void *in, void *out, size_t bytes, void *stream) {
    (void)comm, (void)in, (void)out, (void)bytes, (void)stream;
    return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA);
}
int gdn2_cuda_nccl_all_reduce_host(void *comm, double *v, int n, void *stream) {
    (void)comm, (void)v, (void)n, (void)stream;
    return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA);
}
int gdn2_cuda_set_device(int dev) { (void)dev; return gdn2_error(GDN2_ERR_UNSUPPORTED, NO_CUDA); }
int gdn2_cuda_device_count(void) { return 0; }
