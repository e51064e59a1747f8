// What the chunk kernel translation units share: chunk_f32.cu / chunk_bf16.cu (the generic kernels,
// chunk_generic.cuh) and chunk_fast.cu (the bf16 fast path, chunk_tc.cuh), one concern per file:
//   chunk_params.cuh  parameters, chunk lookups, the launchers' declarations (all chunk.cu needs)
//   chunk_prof.cuh    profiling marks and per-launch event timing (dev)
//   chunk_mma.cuh     block matrix products (SIMT and tensor cores)
//   chunk_load.cuh    shared-memory loaders
//   chunk_solve.cuh   the unit lower triangular solve
//   chunk_prep.cuh    k_prep / k_prep_tc
//   chunk_vjp.cuh     the intra-chunk score VJPs
//   chunk_fin.cuh     k_fin
// Separate translation units so that a parallel build compiles the kernel families at the same time.
#ifndef GDN2_CUDA_CHUNK_DEVICE_CUH
#define GDN2_CUDA_CHUNK_DEVICE_CUH

#include "chunk_params.cuh"
#include "chunk_prof.cuh"
#include "chunk_mma.cuh"
#include "chunk_load.cuh"
#include "chunk_solve.cuh"
#include "chunk_prep.cuh"
#include "chunk_vjp.cuh"
#include "chunk_fin.cuh"

#endif
