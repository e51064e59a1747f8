// Programmatic dependent launch (Hopper, sm_90+): lets a kernel start before the kernel ahead of it
// in the stream has finished, so that its launch, its block ramp-up and its prefetch of data that does
// not depend on the earlier kernel (weights) overlap that kernel's run. Used by the batch-1 decode step,
// where ~250 small kernels a step each pay a launch and a ramp. The one-row products (src/cuda/gemv.cuh)
// launch as dependents and prefetch their weights into L2 before the wait (-4.4 % on the H100's batch-1
// step); the kernels ahead of them trigger early. The step's elementwise kernels launched as dependents
// too (waiting first thing) did not pay: -2.7 % at batch 1 but +2.1 % at batch 16 against no PDL at all
// (bench/results/h100-decode/058c203-pdl_*), so they launch as ordinary kernels.
//
// The contract (CUDA programming guide, "Programmatic Dependent Launch"):
// - the dependent kernel is launched with cudaLaunchAttributeProgrammaticStreamSerialization and calls
//   pdl_wait() before it reads anything an earlier kernel writes, or writes anything an earlier kernel
//   reads; pdl_wait() returns once the kernel ahead has completed and its writes are visible;
// - a kernel ahead calls pdl_trigger() to let the dependent be scheduled before it ends (without the
//   call the dependent is scheduled as the kernel ahead's blocks exit). Where the next kernel is an
//   ordinary launch, pdl_trigger() does nothing.
// Since every dependent waits for the kernel ahead in full, and that one waited for its own, ordering
// is transitive: the results are the same bits as without PDL. Before sm_90 both are no-ops.
#ifndef GDN2_CUDA_PDL_CUH
#define GDN2_CUDA_PDL_CUH

#include <cuda_runtime.h>

#include "host.cuh"

static __device__ __forceinline__ void pdl_trigger(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

static __device__ __forceinline__ void pdl_wait(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// a hint: fetch the 128-byte line holding p into L2 (no register, no fault on a bad address)
static __device__ __forceinline__ void prefetch_l2(const void *p) {
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

// Host side. Whether the one-row products launch as dependents: yes unless GDN2_CUDA_PDL=0 in
// the environment (read once per process; for before/after timings, the same bits either way).
static inline int pdl_enabled(void) {
    static std::atomic<int> slot(INT_MIN);
    return env_once(slot, "GDN2_CUDA_PDL", [](const char *e) { return e != NULL && e[0] == '0' ? 0 : 1; });
}

#endif
