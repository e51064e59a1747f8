// Programmatic dependent launch (Hopper, sm_90+): lets a kernel start before the kernel ahead of it
// in the stream has finished, so that its launch, its block ramp-up and its prefetch of data that does
// not depend on the earlier kernel (weights) overlap that kernel's run. Used by the batch-1 decode step,
// where ~300 small kernels a step each pay a launch and a ramp (src/cuda/gemv.cuh).
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

#endif
