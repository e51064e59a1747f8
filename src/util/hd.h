/* GDN2_HD: a function of the util headers that host code and CUDA kernels both call
 * (__host__ __device__ under nvcc, nothing otherwise). */
#ifndef GDN2_UTIL_HD_H
#define GDN2_UTIL_HD_H

#ifdef __CUDACC__
#define GDN2_HD __host__ __device__
#else
#define GDN2_HD
#endif

#endif
