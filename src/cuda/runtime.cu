// CUDA runtime glue: device discovery and the fp32 host-pointer entry points (copy in, run the
// device-pointer API in fp32, copy out).
#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>

#include "gdn2_cuda.h"

extern "C" int gdn2_cuda_available(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        gdn2_error(GDN2_ERR_UNSUPPORTED, "no CUDA device: %s", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return 0;
    }
    return 1;
}

// A list of device buffers freed together (at most DEVBUFS_MAX: the most an entry point stages).
#define DEVBUFS_MAX 32
typedef struct {
    void *p[DEVBUFS_MAX];
    int n;
    int rc;
} devbufs;

static int devbufs_full(devbufs *b, const char *what) {
    if (b->n < DEVBUFS_MAX) return 0;
    b->rc = gdn2_error(GDN2_ERR_DEVICE, "device buffer list full at '%s' (%d buffers)", what, DEVBUFS_MAX);
    return 1;
}
static void *dev_copy(devbufs *b, const void *h, size_t bytes, const char *what) {
    if (b->rc || !h || devbufs_full(b, what)) return NULL;
    void *d = NULL;
    cudaError_t e = cudaMalloc(&d, bytes ? bytes : 4);
    if (e == cudaSuccess && bytes) e = cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
        b->rc = gdn2_error(GDN2_ERR_DEVICE, "copy of '%s' (%zu bytes) to the GPU failed: %s", what, bytes,
                           cudaGetErrorString(e));
        if (d) cudaFree(d);
        return NULL;
    }
    b->p[b->n++] = d;
    return d;
}
static void *dev_alloc(devbufs *b, int want, size_t bytes, const char *what) {
    if (b->rc || !want || devbufs_full(b, what)) return NULL;
    void *d = NULL;
    cudaError_t e = cudaMalloc(&d, bytes ? bytes : 4);
    if (e == cudaSuccess) e = cudaMemset(d, 0, bytes ? bytes : 4);
    if (e != cudaSuccess) {
        b->rc = gdn2_error(GDN2_ERR_DEVICE, "allocation of '%s' (%zu bytes) on the GPU failed: %s", what, bytes,
                           cudaGetErrorString(e));
        return NULL;
    }
    b->p[b->n++] = d;
    return d;
}
static void dev_back(devbufs *b, void *h, const void *d, size_t bytes, const char *what) {
    if (b->rc || !h || !d || !bytes) return;
    cudaError_t e = cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess)
        b->rc = gdn2_error(GDN2_ERR_DEVICE, "copy of '%s' from the GPU failed: %s", what, cudaGetErrorString(e));
}
static void dev_free(devbufs *b) {
    for (int i = 0; i < b->n; i++) cudaFree(b->p[i]);
    b->n = 0;
}

// Stage the inputs a kernel call reads (q, k, v, g, b, w and, with the in-kernel gate, A_log and
// dt_bias) from host tensors into device buffers of b: the one host-to-device staging of the fp32
// host entry points. HT: gdn2_fwd_tensors or gdn2_decode_tensors; DA: gdn2_cuda_fwd_args or
// gdn2_cuda_recurrent_args (the same field names). nk, nv: sizes of the key-side and value-side
// tensors, in bytes.
template <class HT, class DA>
static void stage_inputs(devbufs *b, const gdn2_dims *d, const gdn2_opts *o, const HT *t, size_t nk, size_t nv, DA *a) {
    a->dtype = GDN2_CUDA_F32;
    a->q = dev_copy(b, t->q, nk, "q");
    a->k = dev_copy(b, t->k, nk, "k");
    a->v = dev_copy(b, t->v, nv, "v");
    a->g = (const float *)dev_copy(b, t->g, nk, "g");
    a->b = dev_copy(b, t->b, nk, "b");
    a->w = dev_copy(b, t->w, nv, "w");
    if (o->gate_in_kernel) {
        // absent (NULL) A_log / dt_bias are zero: the device API needs them, so upload zeros
        a->A_log = (const float *)(t->A_log ? dev_copy(b, t->A_log, d->H * 4, "A_log") : dev_alloc(b, 1, d->H * 4, "A_log"));
        a->dt_bias = (const float *)(t->dt_bias ? dev_copy(b, t->dt_bias, d->H * d->K * 4, "dt_bias")
                                                : dev_alloc(b, 1, d->H * d->K * 4, "dt_bias"));
    }
}

static int host_chunk(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                      const gdn2_bwd_tensors *g) {
    int rc = gdn2_check(d, o);
    if (rc) return rc;
    if (!t) return gdn2_error(GDN2_ERR_ARG, "%s: tensors must not be NULL", fn);
    if (!gdn2_cuda_available()) return GDN2_ERR_UNSUPPORTED;
    const size_t nk = (size_t)(d->B * d->T * d->H * d->K) * 4, nv = (size_t)(d->B * d->T * d->HV * d->V) * 4;
    const size_t ns = (size_t)(gdn2_num_states(d, o) * d->HV * d->K * d->V) * 4;
    devbufs b;
    memset(&b, 0, sizeof b);
    gdn2_cuda_fwd_args a;
    memset(&a, 0, sizeof a);
    stage_inputs(&b, d, o, t, nk, nv, &a);
    a.h0 = (const float *)dev_copy(&b, t->h0, ns, "h0");
    if (!g) {
        a.o = dev_alloc(&b, t->o != NULL, nv, "o");
        a.ht = (float *)dev_alloc(&b, t->ht != NULL, ns, "ht");
        if (!b.rc) b.rc = gdn2_cuda_chunk_fwd(d, o, &a, NULL);
        dev_back(&b, t->o, a.o, nv, "o");
        dev_back(&b, t->ht, a.ht, ns, "ht");
    } else {
        gdn2_cuda_bwd_args ga;
        memset(&ga, 0, sizeof ga);
        ga.d_o = dev_copy(&b, g->d_o, nv, "d_o");
        ga.dht = (const float *)dev_copy(&b, g->dht, ns, "dht");
        ga.dq = dev_alloc(&b, g->dq != NULL, nk, "dq");
        ga.dk = dev_alloc(&b, g->dk != NULL, nk, "dk");
        ga.dv = dev_alloc(&b, g->dv != NULL, nv, "dv");
        ga.dg = (float *)dev_alloc(&b, g->dg != NULL, nk, "dg");
        ga.db = dev_alloc(&b, g->db != NULL, nk, "db");
        ga.dw = dev_alloc(&b, g->dw != NULL, nv, "dw");
        ga.dh0 = (float *)dev_alloc(&b, g->dh0 != NULL, ns, "dh0");
        if (o->gate_in_kernel) {
            ga.dA_log = (float *)dev_alloc(&b, 1, d->H * 4, "dA_log"); // the device API needs both
            ga.ddt_bias = (float *)dev_alloc(&b, 1, d->H * d->K * 4, "ddt_bias");
        }
        if (!b.rc) b.rc = gdn2_cuda_chunk_bwd(d, o, &a, &ga, NULL);
        if (!b.rc) {
            cudaError_t e = cudaDeviceSynchronize();
            if (e != cudaSuccess) b.rc = gdn2_error(GDN2_ERR_DEVICE, "%s: kernel failed: %s", fn, cudaGetErrorString(e));
        }
        dev_back(&b, g->dq, ga.dq, nk, "dq");
        dev_back(&b, g->dk, ga.dk, nk, "dk");
        dev_back(&b, g->dv, ga.dv, nv, "dv");
        dev_back(&b, g->dg, ga.dg, nk, "dg");
        dev_back(&b, g->db, ga.db, nk, "db");
        dev_back(&b, g->dw, ga.dw, nv, "dw");
        dev_back(&b, g->dh0, ga.dh0, ns, "dh0");
        if (o->gate_in_kernel) {
            dev_back(&b, g->dA_log, ga.dA_log, d->H * 4, "dA_log");
            dev_back(&b, g->ddt_bias, ga.ddt_bias, d->H * d->K * 4, "ddt_bias");
        }
    }
    rc = b.rc;
    dev_free(&b);
    return rc;
}

extern "C" int gdn2_cuda_chunk_fwd_host(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t) {
    if (t && !t->o) return gdn2_error(GDN2_ERR_ARG, "gdn2_cuda_chunk_fwd_host: output 'o' is NULL");
    return host_chunk("gdn2_cuda_chunk_fwd_host", d, o, t, NULL);
}

extern "C" int gdn2_cuda_chunk_bwd_host(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                                        const gdn2_bwd_tensors *g) {
    if (!g) return gdn2_error(GDN2_ERR_ARG, "gdn2_cuda_chunk_bwd_host: gradient tensors must not be NULL");
    return host_chunk("gdn2_cuda_chunk_bwd_host", d, o, t, g);
}

extern "C" int gdn2_cuda_decode_step_host(const gdn2_dims *d, const gdn2_opts *o, const gdn2_decode_tensors *t) {
    const char *fn = "gdn2_cuda_decode_step_host";
    if (!d || !o || !t) return gdn2_error(GDN2_ERR_ARG, "%s: dims, opts and tensors must not be NULL", fn);
    if (!t->state_pool || !t->slots || t->n_slots < 1)
        return gdn2_error(GDN2_ERR_ARG, "%s: state_pool, slots and n_slots >= 1 are required", fn);
    for (int64_t i = 0; i < d->B; i++)
        if (t->slots[i] >= t->n_slots)
            return gdn2_error(GDN2_ERR_ARG, "%s: slots[%lld]=%d is out of range (n_slots=%lld)", fn, (long long)i,
                              (int)t->slots[i], (long long)t->n_slots);
    if (!gdn2_cuda_available()) return GDN2_ERR_UNSUPPORTED;
    gdn2_dims d1 = *d;
    d1.T = 1;
    const size_t nk = (size_t)(d->B * d->H * d->K) * 4, nv = (size_t)(d->B * d->HV * d->V) * 4;
    if (t->state_dtype != GDN2_STATE_F32 && t->state_dtype != GDN2_STATE_BF16)
        return gdn2_error(GDN2_ERR_ARG, "%s: state_dtype=%d, expected GDN2_STATE_F32 or GDN2_STATE_BF16", fn, t->state_dtype);
    const int sb = t->state_dtype == GDN2_STATE_BF16;
    const size_t ns = (size_t)(t->n_slots * d->HV * d->K * d->V) * (sb ? 2 : 4);
    devbufs b;
    memset(&b, 0, sizeof b);
    gdn2_cuda_recurrent_args a;
    memset(&a, 0, sizeof a);
    stage_inputs(&b, d, o, t, nk, nv, &a);
    a.state_pool = dev_copy(&b, t->state_pool, ns, "state_pool");
    a.state_dtype = sb ? GDN2_CUDA_BF16 : GDN2_CUDA_F32;
    a.slots = (const int32_t *)dev_copy(&b, t->slots, d->B * 4, "slots");
    a.n_slots = t->n_slots;
    a.o = dev_alloc(&b, 1, nv, "o");
    if (!b.rc) b.rc = gdn2_cuda_recurrent_fwd(&d1, o, &a, NULL);
    dev_back(&b, t->o, a.o, nv, "o");
    dev_back(&b, t->state_pool, a.state_pool, ns, "state_pool");
    int rc = b.rc;
    dev_free(&b);
    return rc;
}

// ---- small device helpers for C callers ----
extern "C" void *gdn2_cuda_malloc(size_t bytes) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 4);
    if (e != cudaSuccess) {
        gdn2_error(GDN2_ERR_DEVICE, "cudaMalloc(%zu) failed: %s", bytes, cudaGetErrorString(e));
        return NULL;
    }
    return p;
}
extern "C" void gdn2_cuda_free(void *p) {
    if (p) cudaFree(p);
}
extern "C" int gdn2_cuda_memcpy(void *dst, const void *src, size_t bytes, int kind) {
    cudaMemcpyKind k = kind == GDN2_CUDA_H2D ? cudaMemcpyHostToDevice
                     : kind == GDN2_CUDA_D2H ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice;
    cudaError_t e = cudaMemcpy(dst, src, bytes, k);
    if (e != cudaSuccess) return gdn2_error(GDN2_ERR_DEVICE, "cudaMemcpy(%zu, kind %d) failed: %s", bytes, kind, cudaGetErrorString(e));
    return GDN2_OK;
}
extern "C" int gdn2_cuda_memset(void *p, int value, size_t bytes) {
    cudaError_t e = cudaMemset(p, value, bytes);
    if (e != cudaSuccess) return gdn2_error(GDN2_ERR_DEVICE, "cudaMemset(%zu) failed: %s", bytes, cudaGetErrorString(e));
    return GDN2_OK;
}
extern "C" int gdn2_cuda_sync(void) {
    cudaError_t e = cudaDeviceSynchronize();
    if (e == cudaSuccess) e = cudaGetLastError();
    if (e != cudaSuccess) return gdn2_error(GDN2_ERR_DEVICE, "CUDA error: %s", cudaGetErrorString(e));
    return GDN2_OK;
}
extern "C" int gdn2_cuda_device_info(char *name, size_t len, int *driver, int *runtime) {
    cudaDeviceProp prop;
    int dev = 0;
    cudaGetDevice(&dev);
    cudaError_t e = cudaGetDeviceProperties(&prop, dev);
    if (e != cudaSuccess) return gdn2_error(GDN2_ERR_DEVICE, "cudaGetDeviceProperties: %s", cudaGetErrorString(e));
    if (name && len) {
        strncpy(name, prop.name, len - 1);
        name[len - 1] = 0;
    }
    if (driver) cudaDriverGetVersion(driver);
    if (runtime) cudaRuntimeGetVersion(runtime);
    return GDN2_OK;
}
extern "C" int gdn2_cuda_set_device(int dev) {
    cudaError_t e = cudaSetDevice(dev);
    return e == cudaSuccess ? GDN2_OK : gdn2_error(GDN2_ERR_DEVICE, "cudaSetDevice(%d): %s", dev, cudaGetErrorString(e));
}
extern "C" int gdn2_cuda_device_count(void) {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}
extern "C" int gdn2_cuda_mem_info(size_t *free_bytes, size_t *total_bytes) {
    size_t f = 0, t = 0;
    cudaError_t e = cudaMemGetInfo(&f, &t);
    if (e != cudaSuccess) return gdn2_error(GDN2_ERR_DEVICE, "cudaMemGetInfo: %s", cudaGetErrorString(e));
    if (free_bytes) *free_bytes = f;
    if (total_bytes) *total_bytes = t;
    return GDN2_OK;
}
extern "C" int gdn2_cuda_pool_high(size_t *bytes) {
    int dev = 0;
    cudaGetDevice(&dev);
    cudaMemPool_t pool;
    cudaError_t e = cudaDeviceGetDefaultMemPool(&pool, dev);
    unsigned long long v = 0; /* cudaMemPoolAttrReservedMemHigh is a cuuint64_t */
    if (e == cudaSuccess) e = cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemHigh, &v);
    if (e != cudaSuccess) return gdn2_error(GDN2_ERR_DEVICE, "memory pool high-water mark: %s", cudaGetErrorString(e));
    *bytes = (size_t)v;
    return GDN2_OK;
}
// The event pair of gdn2_cuda_timer_start / stop, per thread (each thread times its own work):
// made on the device current at start, destroyed by stop (or by the next start).
static thread_local cudaEvent_t t_ev0, t_ev1;
static void timer_release(void) {
    if (t_ev0) cudaEventDestroy(t_ev0);
    if (t_ev1) cudaEventDestroy(t_ev1);
    t_ev0 = t_ev1 = NULL;
}
extern "C" int gdn2_cuda_timer_start(void) {
    timer_release();
    cudaError_t e = cudaEventCreate(&t_ev0);
    if (e == cudaSuccess) e = cudaEventCreate(&t_ev1);
    if (e == cudaSuccess) e = cudaEventRecord(t_ev0, 0);
    if (e != cudaSuccess) {
        timer_release();
        return gdn2_error(GDN2_ERR_DEVICE, "gdn2_cuda_timer_start: %s", cudaGetErrorString(e));
    }
    return GDN2_OK;
}
extern "C" double gdn2_cuda_timer_stop(void) {
    float ms = -1.0f;
    if (!t_ev0) {
        gdn2_error(GDN2_ERR_ARG, "gdn2_cuda_timer_stop: no gdn2_cuda_timer_start on this thread");
        return -1.0;
    }
    cudaError_t e = cudaEventRecord(t_ev1, 0);
    if (e == cudaSuccess) e = cudaEventSynchronize(t_ev1);
    if (e == cudaSuccess) e = cudaEventElapsedTime(&ms, t_ev0, t_ev1);
    timer_release();
    if (e != cudaSuccess) {
        gdn2_error(GDN2_ERR_DEVICE, "gdn2_cuda_timer_stop: %s", cudaGetErrorString(e));
        return -1.0;
    }
    return ms;
}

// The timeline of gdn2_cuda_timeline_*, per thread: cap events made at begin, recorded in order on the default
// stream (which orders them with the context streams' work, without the host waiting), read at end.
static thread_local cudaEvent_t *t_line;
static thread_local int t_cap, t_made, t_n;
static void timeline_release(void) {
    for (int i = 0; i < t_made; i++) cudaEventDestroy(t_line[i]);
    free(t_line);
    t_line = NULL, t_cap = t_made = t_n = 0;
}
extern "C" int gdn2_cuda_timeline_begin(int cap) {
    timeline_release();
    if (cap < 2) return gdn2_error(GDN2_ERR_ARG, "gdn2_cuda_timeline_begin: cap %d (expected >= 2 marks)", cap);
    t_line = (cudaEvent_t *)calloc((size_t)cap, sizeof *t_line);
    if (!t_line) return gdn2_error(GDN2_ERR_NOMEM, "gdn2_cuda_timeline_begin: %d events", cap);
    for (; t_made < cap; t_made++) {
        const cudaError_t e = cudaEventCreate(&t_line[t_made]);
        if (e != cudaSuccess) {
            timeline_release();
            return gdn2_error(GDN2_ERR_DEVICE, "gdn2_cuda_timeline_begin: %s", cudaGetErrorString(e));
        }
    }
    t_cap = cap;
    return GDN2_OK;
}
extern "C" int gdn2_cuda_timeline_mark(void) {
    if (!t_line || t_n >= t_cap || cudaEventRecord(t_line[t_n], 0) != cudaSuccess) return -1;
    return t_n++;
}
extern "C" int gdn2_cuda_timeline_end(float *ms, int cap_ms) {
    if (!t_line) {
        gdn2_error(GDN2_ERR_ARG, "gdn2_cuda_timeline_end: no gdn2_cuda_timeline_begin on this thread");
        return -1;
    }
    const int n = t_n;
    cudaError_t e = n ? cudaEventSynchronize(t_line[n - 1]) : cudaSuccess;
    for (int i = 0; e == cudaSuccess && ms && i + 1 < n && i < cap_ms; i++)
        e = cudaEventElapsedTime(&ms[i], t_line[i], t_line[i + 1]);
    timeline_release();
    if (e != cudaSuccess) {
        gdn2_error(GDN2_ERR_DEVICE, "gdn2_cuda_timeline_end: %s", cudaGetErrorString(e));
        return -1;
    }
    return n;
}
