// The generic chunk kernels for bf16 inputs (chunk_generic.cuh), instantiated in a translation unit
// of their own.
#include "chunk_generic.cuh"

template cudaError_t chunk_launch_generic<__nv_bfloat16>(ChunkParams &p, int KP, int VP, int BV, int bwd, int kept, cudaStream_t st);
