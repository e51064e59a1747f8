// Tensor-core and asynchronous-copy primitives of the bf16 kernels (src/cuda only).
//
// Shared-memory operand tiles are bf16 with a row stride of (columns + 8) elements: every row
// starts 16-byte aligned (ldmatrix, cp.async) and 8 consecutive rows fall on 8 different 16-byte
// bank groups, so ldmatrix is conflict-free. Fragments are those of mma.sync m16n8k16 (row.col,
// bf16 in, fp32 accumulate): thread (gq = lane/4, tq = lane%4) holds C rows gq, gq+8 and columns
// 2tq, 2tq+1 of each 16x8 block.
#ifndef GDN2_CUDA_TC_CUH
#define GDN2_CUDA_TC_CUH

#include <cuda_bf16.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}
__device__ __forceinline__ void mma_bf16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// (x, y) -> bf16x2 hi = rn(x, y) and lo = rn(x - hi, y - hi): x = hi + lo to ~2^-16 relative
__device__ __forceinline__ void split_bf16(float x, float y, uint32_t &hi, uint32_t &lo) {
    __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
    float2 hf = __bfloat1622float2(h);
    __nv_bfloat162 l = __floats2bfloat162_rn(x - hf.x, y - hf.y);
    hi = *reinterpret_cast<uint32_t *>(&h);
    lo = *reinterpret_cast<uint32_t *>(&l);
}
// c += a b with a, b given as hi/lo splits (the lo*lo term, ~2^-18 relative, is dropped)
__device__ __forceinline__ void mma_split3(float (&c)[4], const uint32_t (&ah)[4], const uint32_t (&al)[4], uint32_t bh0,
                                        uint32_t bh1, uint32_t bl0, uint32_t bl1) {
    mma_bf16(c, al[0], al[1], al[2], al[3], bh0, bh1);
    mma_bf16(c, ah[0], ah[1], ah[2], ah[3], bl0, bl1);
    mma_bf16(c, ah[0], ah[1], ah[2], ah[3], bh0, bh1);
}

__device__ __forceinline__ uint32_t mul_bf16x2(uint32_t x, uint32_t y) {
    __nv_bfloat162 r = __hmul2(*reinterpret_cast<__nv_bfloat162 *>(&x), *reinterpret_cast<__nv_bfloat162 *>(&y));
    return *reinterpret_cast<uint32_t *>(&r);
}
__device__ __forceinline__ float2 bf2_to_f2(const bf16 *x) { return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(x)); }

__device__ __forceinline__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldsm_x2(uint32_t (&r)[2], const bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldsm_x2_t(uint32_t (&r)[2], const bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(smem_u32(p)));
}

// 16-byte global -> shared copy that bypasses registers; nbytes < 16 zero-fills the rest (0: a zero row)
__device__ __forceinline__ void cp_async16(void *dst, const void *src, int nbytes = 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(nbytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Copy a ROWS x COLS tile of T (row stride gld elements in global, ld in shared) with 16-byte
// cp.async by the whole block (NTH threads). Rows >= nrows are zero-filled (ragged last chunk).
// When the NTH threads divide the tile's pieces evenly and a row's pieces (PR) divide NTH, thread t copies
// pieces t, t + NTH, ...: a fixed column, rows NTH / PR apart, unrolled with no division or loop test
// (the general loop cost ~90 instructions a tile, more than the copy's own; the same copies).
template <int ROWS, int COLS, int NTH, class T>
__device__ __forceinline__ void cp_tile(T *dst, int ld, const T *src, size_t gld, int nrows = ROWS) {
    constexpr int PR = COLS * (int)sizeof(T) / 16, E = 16 / (int)sizeof(T);
    static_assert(PR * 16 == COLS * (int)sizeof(T), "tile rows must be whole 16-byte pieces");
    if constexpr ((ROWS * PR) % NTH == 0 && NTH % PR == 0) {
        const int r0 = (int)threadIdx.x / PR, c = ((int)threadIdx.x % PR) * E;
#pragma unroll
        for (int j = 0; j < ROWS * PR / NTH; j++) {
            const int r = r0 + j * (NTH / PR);
            const bool ok = r < nrows;
            cp_async16(dst + r * ld + c, src + (ok ? (size_t)r * gld + c : 0), ok ? 16 : 0);
        }
    } else {
        for (int i = threadIdx.x; i < ROWS * PR; i += NTH) {
            const int r = i / PR, c = (i % PR) * E;
            const bool ok = r < nrows;
            cp_async16(dst + r * ld + c, src + (ok ? (size_t)r * gld + c : 0), ok ? 16 : 0);
        }
    }
}

// Warp-tiled product of 8 warps: C (M x N, fp32 in registers) += A (M x kd) B (kd x N), operands
// bf16 in shared memory. AT: A stored transposed (A(m,k) = a[k*lda + m]); BT: B stored as
// b[n*ldb + k] (else b[k*ldb + n]). Warp w owns rows (w / WC) * WM .. + WM and columns
// (w % WC) * WN .. + WN. kd % 16 == 0.
template <int M, int N>
struct TcAcc {
    static constexpr int RT = M / 16, WR = RT >= 8 ? 8 : RT, WC = 8 / WR, WM = M / WR, WN = N / WC;
    static constexpr int MI = WM / 16, NJ = WN / 8;
    static_assert(WR * WC == 8 && MI * 16 * WR == M && NJ * 8 * WC == N && NJ >= 1, "tensor-core warp tiling");
    float c[MI][NJ][4];

    __device__ __forceinline__ int row0() const { return (threadIdx.x / 32 / WC) * WM; }
    __device__ __forceinline__ int col0() const { return (threadIdx.x / 32 % WC) * WN; }
    __device__ __forceinline__ void zero() {
#pragma unroll
        for (int i = 0; i < MI; i++)
#pragma unroll
            for (int j = 0; j < NJ; j++) c[i][j][0] = c[i][j][1] = c[i][j][2] = c[i][j][3] = 0.0f;
    }
    // PROD: B = b (.) b2 elementwise (the product rounded to bf16, as rn(fp32(b) fp32(b2)) would be)
    template <bool AT, bool BT, bool PROD = false>
    __device__ __forceinline__ void mma(const bf16 *a, int lda, const bf16 *b, int ldb, int kd, const bf16 *b2 = nullptr) {
        const int lane = threadIdx.x % 32, l8 = lane & 7, mi = lane >> 3, m0 = row0(), n0 = col0();
#pragma unroll 2
        for (int k0 = 0; k0 < kd; k0 += 16) {
            uint32_t af[MI][4];
#pragma unroll
            for (int i = 0; i < MI; i++) {
                const int m = m0 + 16 * i;
                if (AT) ldsm_x4_t(af[i], a + (size_t)(k0 + l8 + (mi >> 1) * 8) * lda + m + (mi & 1) * 8);
                else ldsm_x4(af[i], a + (size_t)(m + (lane & 15)) * lda + k0 + (lane >> 4) * 8);
            }
#pragma unroll
            for (int j = 0; j + 1 < NJ; j += 2) { // two 8-column blocks per ldmatrix.x4
                const int n = n0 + 8 * j;
                uint32_t bf[4];
                const size_t ob = BT ? (size_t)(n + l8 + (mi >> 1) * 8) * ldb + k0 + (mi & 1) * 8
                                     : (size_t)(k0 + l8 + (mi & 1) * 8) * ldb + n + (mi >> 1) * 8;
                if (BT) ldsm_x4(bf, b + ob);
                else ldsm_x4_t(bf, b + ob);
                if (PROD) {
                    uint32_t b2f[4];
                    if (BT) ldsm_x4(b2f, b2 + ob);
                    else ldsm_x4_t(b2f, b2 + ob);
#pragma unroll
                    for (int q = 0; q < 4; q++) bf[q] = mul_bf16x2(bf[q], b2f[q]);
                }
#pragma unroll
                for (int i = 0; i < MI; i++) {
                    mma_bf16(c[i][j], af[i][0], af[i][1], af[i][2], af[i][3], bf[0], bf[1]);
                    mma_bf16(c[i][j + 1], af[i][0], af[i][1], af[i][2], af[i][3], bf[2], bf[3]);
                }
            }
            if (NJ & 1) {
                const int n = n0 + 8 * (NJ - 1), ml = mi & 1;
                uint32_t bf[2];
                const size_t ob = BT ? (size_t)(n + l8) * ldb + k0 + ml * 8 : (size_t)(k0 + l8 + ml * 8) * ldb + n;
                if (BT) ldsm_x2(bf, b + ob);
                else ldsm_x2_t(bf, b + ob);
                if (PROD) {
                    uint32_t b2f[2];
                    if (BT) ldsm_x2(b2f, b2 + ob);
                    else ldsm_x2_t(b2f, b2 + ob);
                    bf[0] = mul_bf16x2(bf[0], b2f[0]);
                    bf[1] = mul_bf16x2(bf[1], b2f[1]);
                }
#pragma unroll
                for (int i = 0; i < MI; i++) mma_bf16(c[i][NJ - 1], af[i][0], af[i][1], af[i][2], af[i][3], bf[0], bf[1]);
            }
        }
    }
    // fe(m, n, c_mn, c_m,n+1) for every pair the thread holds (n even); the values are references
    template <class FE>
    __device__ __forceinline__ void each_pair(FE fe) {
        const int lane = threadIdx.x % 32, gq = lane >> 2, tq = lane & 3, m0 = row0(), n0 = col0();
#pragma unroll
        for (int i = 0; i < MI; i++)
#pragma unroll
            for (int j = 0; j < NJ; j++) {
                const int m = m0 + 16 * i + gq, n = n0 + 8 * j + 2 * tq;
                fe(m, n, c[i][j][0], c[i][j][1]);
                fe(m + 8, n, c[i][j][2], c[i][j][3]);
            }
    }
};

#endif
