// Host-side helpers of the CUDA entry points (src/cuda only): the kernel-parameter fill shared by
// the chunk and the recurrent launchers, and the lazily computed values of the host code (the
// environment switches, per-device attributes, one-time kernel settings) kept so that two threads
// or two devices cannot see each other's half-written or foreign state: every cache is an atomic,
// written with a value any racing writer would write too, and everything that belongs to a device
// is kept per device id.
#ifndef GDN2_CUDA_HOST_CUH
#define GDN2_CUDA_HOST_CUH

#include <atomic>
#include <climits>
#include <cuda_runtime.h>
#include <stdlib.h>

#include "gdn2_cuda.h"

// The fields every kernel's parameter block starts with, from the dims, the options and the
// forward inputs. P: ChunkParams or RecParams; A: gdn2_cuda_fwd_args or gdn2_cuda_recurrent_args
// (the same field names).
template <class P, class A>
static inline void fill_kernel_params(P &p, const gdn2_dims *d, const gdn2_opts *o, const A *a) {
    p.B = (int)d->B; p.T = (int)d->T; p.H = (int)d->H; p.HV = (int)d->HV; p.K = (int)d->K; p.V = (int)d->V;
    p.G = (int)(d->HV / d->H);
    p.scale = gdn2_scale(d, o);
    p.l2 = o->qk_l2norm;
    p.gate = o->gate_in_kernel;
    p.lb = o->gate_in_kernel ? o->lower_bound : 0.0f;
    p.q = a->q; p.k = a->k; p.v = a->v; p.b = a->b; p.w = a->w; p.g = a->g;
    p.A_log = a->A_log; p.dt_bias = a->dt_bias;
    p.o = a->o;
}

// An environment switch read once per process: slot holds INT_MIN until the first read, then
// parse(getenv(name)). Two first callers racing both read the same environment.
template <class F>
static inline int env_once(std::atomic<int> &slot, const char *name, F parse) {
    int v = slot.load(std::memory_order_relaxed);
    if (v == INT_MIN) {
        v = parse(getenv(name));
        slot.store(v, std::memory_order_relaxed);
    }
    return v;
}

// The current device; 0 when the query fails (the launch that follows reports the error).
static inline int current_device(void) {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) dev = 0;
    return dev;
}

// A value per device id, computed on the first use on that device (0 means not yet, and a compute
// that returns 0 is retried next time). Racing first users on one device compute the same value.
// Device ids past the table are computed on every use. Static instances need no constructor: the
// zeroed atomics are the initial state.
#define GDN2_CUDA_MAX_DEVICES 64
struct PerDevice {
    std::atomic<int> v[GDN2_CUDA_MAX_DEVICES];
    template <class F>
    int get(int dev, F compute) {
        const bool in = dev >= 0 && dev < GDN2_CUDA_MAX_DEVICES;
        if (in) {
            const int x = v[dev].load(std::memory_order_acquire);
            if (x) return x;
        }
        const int x = compute();
        if (x && in) v[dev].store(x, std::memory_order_release);
        return x;
    }
};

// The current device's multiprocessor count, queried once per device; 132 (an H100's or H200's)
// when the query fails (the launch that follows reports the error).
static inline int multiprocessors(void) {
    static PerDevice count;
    const int dev = current_device();
    const int n = count.get(dev, [dev] {
        int x = 0;
        return cudaDeviceGetAttribute(&x, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess && x > 0 ? x : 0;
    });
    return n ? n : 132;
}

// Kernel attributes (dynamic shared memory above 48 KB) are per device: set(e) runs once per device
// until it succeeds; returns its error, cudaSuccess once done.
template <class F>
static inline cudaError_t once_per_device(PerDevice &done, F set) {
    cudaError_t e = cudaSuccess;
    done.get(current_device(), [&] {
        e = set();
        return e == cudaSuccess ? 1 : 0;
    });
    return e;
}

#endif
