// Would a persistent decode step pay? (issue 13: the batch-1 step of gdn2_1.3B takes 1,607 us on an H100, 58 % of
// the byte floor; bench/results/h100-decode-prof/README.md: 165 kernels a step, the products at 1.3-2.3 TB/s cold,
// ~55 latency-bound small kernels a layer's worth of idle DRAM.)
//
// One gdn2_1.3B decode step at batch 1 (18 layers, d 2304, 16 heads of 128, low rank 128, MLP 6208, vocab 32000;
// 2.75 GB of bf16 weights, all distinct, so every step reads them from DRAM), as a list of phases:
//   per layer: multi (q|k|v, f0|g0, b|w with their sigmoids: one product table, gemv.cuh), f1 (128 -> 2048),
//   decode (a stand-in for the recurrent step: per head, the state's columns read once, erased, written, and
//   o = S^T q), g1 with the output gate's norm-swish epilogue, o_proj, add + RMSNorm, w1|w3 with SwiGLU, w2,
//   add + RMSNorm; then the lm_head (fp32 logits).
// The products are the library's own (src/cuda/gemv.cuh gemv_block, its epilogues); decode and the norms are
// this program's stand-ins (the library's kernels for those are of the same size: 1 block a norm, 1 MB of
// state a layer). Three ways to run the same phases:
//   graph       a kernel a phase, the products as programmatic dependents (gemv_launch, gemv_multi_launch with
//               pdl = 1, as the library's step), captured in a CUDA graph: what the library does today;
//   persist     one cooperative kernel for the whole step: each phase's blocks spread over the resident blocks,
//               a grid barrier between phases;
//   persist+pf  the same, and a block that has finished its share of a phase prefetches into L2 the next
//               AHEAD MB of weights the step will read (in the order it reads them), each byte once, so the
//               DRAM keeps streaming through the small phases and the barriers;
//   graph+pf    the graph, with the same ranges hinted into L2 by a small kernel on a side stream as each phase
//               starts (the cheap way: no persistent kernel, one more node a phase).
// and each of them again with the norms folded in ("fold": issue 13's design (a), each block of the product after a
// norm computes the add + RMSNorm of the row itself into shared memory, block 0 writing the residual; 37 phases
// fewer, and in the graph 37 kernels fewer).
// It checks first that every way gives the same bits as the graph (final residual, logits, every state), then
// times each (events around 10 steps, median of 7 groups) and prints us a step against the floor (weight and
// state bytes at the copy bandwidth measured in the same run, read + write counted).
//
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -Iinclude -Isrc dev/cuda/decode_persist_dev.cu \
//        -o /tmp/decode_persist_dev && /tmp/decode_persist_dev [AHEAD_MB ...]
// (no library: the products are header code). Not run yet (written without a device, nineteenth session).
#define GEMV_LOAD_X(p) (*(p)) // X is written inside the persistent kernel: no read-only-cache loads (the graph's
                              // products here too, unlike the library's __ldg: the same code for both ways)
#include "../../src/cuda/gemv.cuh"

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "dev_check.h"

namespace cg = cooperative_groups;
typedef __nv_bfloat16 bf16;

namespace {

constexpr int D = 2304, DK = 2048, R = 128, I = 6208, NH = 16, HD = 128, NL = 18, VOCAB = 32000;
constexpr int BS = GEMV_WARPS * 32; // threads a block, every kernel here
constexpr int VQ = 4;               // decode: blocks a head (32 state columns each)
constexpr float EPS = 1e-5f, KS = 1.0f / 64.0f;

enum { PH_GEMV = 0, PH_MULTI = 1, PH_DECODE = 2, PH_NORM = 3 };

// one phase of the step
struct Phase {
    int type;
    unsigned nvb, nbx; // its blocks; a product's blocks a part
    // PH_GEMV
    int64_t in, out;
    const bf16 *X, *W;
    size_t wstride;
    void *Y;
    int ybf16, count;
    gemv_epi ep;
    // PH_MULTI
    gemv_table tab;
    // PH_DECODE: state [NH][HD][HD], qkv [3][DK], bw [2][DK], f [DK] -> o [DK]
    float *S;
    const bf16 *qkv, *bw, *f;
    bf16 *o;
    // PH_NORM: out = a + b (b given), y = bf16(norm(a + b) w); a product with prenorm: the same norm, done by each
    // of its blocks into shared memory as its X (the norm phase ahead folded in: design (a) of issue 13)
    int prenorm;
    const float *a, *w;
    const bf16 *b;
    float *nout;
    bf16 *ny;
    // persist+pf: the bytes this phase's blocks prefetch once done
    const char *pf;
    size_t pf_len;
};

// decode stand-in, block (head hh, quarter qq): thread t owns column c = 32 qq + (t & 31) and the rows of its
// slice (t >> 5), 32 of them, in registers between the two passes. k is scaled by KS (|k|^2 ~ 0.1 with these
// weights, as the L2-normalised keys keep the real step's erase a contraction).
//   decay_k = exp(-softplus(f_k));  a_c = sum_k S_kc decay_k b_k k_k
//   S'_kc = S_kc decay_k - k_k a_c + k_k w_c v_c;  o_c = scale sum_k S'_kc q_k
__device__ void run_decode(const Phase &p, unsigned vb) {
    __shared__ float red[4][32];
    const int hh = vb / VQ, qq = vb % VQ, t = threadIdx.x, c = 32 * qq + (t & 31), sl = t >> 5;
    const bf16 *q = p.qkv + hh * HD, *k = p.qkv + DK + hh * HD, *v = p.qkv + 2 * DK + hh * HD;
    const bf16 *b = p.bw + hh * HD, *w = p.bw + DK + hh * HD;
    const bf16 *f = p.f + hh * HD;
    float *S = p.S + (size_t)hh * HD * HD;
    float s[32]; // the decays and keys are recomputed in the second pass (registers: the persistent kernel's
                 // occupancy is set by its largest phase)
    float part = 0.0f;
#pragma unroll
    for (int i = 0; i < 32; i++) {
        const int r = 32 * sl + i;
        s[i] = S[(size_t)r * HD + c];
        part += s[i] * expf(-log1pf(expf(__bfloat162float(f[r])))) * __bfloat162float(b[r]) * (KS * __bfloat162float(k[r]));
    }
    red[sl][t & 31] = part;
    __syncthreads();
    const float ac = red[0][t & 31] + red[1][t & 31] + red[2][t & 31] + red[3][t & 31];
    const float wv = __bfloat162float(w[c]) * __bfloat162float(v[c]);
    __syncthreads();
    part = 0.0f;
#pragma unroll
    for (int i = 0; i < 32; i++) {
        const int r = 32 * sl + i;
        const float kr = KS * __bfloat162float(k[r]);
        const float sn = s[i] * expf(-log1pf(expf(__bfloat162float(f[r])))) - kr * ac + kr * wv;
        S[(size_t)r * HD + c] = sn;
        part += sn * __bfloat162float(q[r]);
    }
    red[sl][t & 31] = part;
    __syncthreads();
    if (sl == 0)
        p.o[hh * HD + c] =
            __float2bfloat16_rn(0.08838834764831845f * (red[0][t] + red[1][t] + red[2][t] + red[3][t]));
    __syncthreads(); // red is reused by the block's next virtual block
}

// add + RMSNorm of one row of D (one block): thread t the columns t + BS j; sums per thread in j order, the warp's
// butterfly, then the warps in order
__device__ void norm_row(const Phase &p, bf16 *ny, int write_out) {
    __shared__ float wred[GEMV_WARPS];
    constexpr int J = (D + BS - 1) / BS;
    const int t = threadIdx.x;
    float v[J], ss = 0.0f;
#pragma unroll
    for (int j = 0; j < J; j++) {
        const int i = t + BS * j;
        v[j] = 0.0f;
        if (i >= D) continue;
        v[j] = p.a[i] + (p.b ? __bfloat162float(p.b[i]) : 0.0f);
        if (p.b && write_out) p.nout[i] = v[j];
        ss += v[j] * v[j];
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((t & 31) == 0) wred[t >> 5] = ss;
    __syncthreads();
    ss = 0.0f;
#pragma unroll
    for (int k = 0; k < GEMV_WARPS; k++) ss += wred[k];
    const float r = 1.0f / sqrtf(ss / (float)D + EPS);
#pragma unroll
    for (int j = 0; j < J; j++) {
        const int i = t + BS * j;
        if (i < D) ny[i] = __float2bfloat16_rn(v[j] * r * p.w[i]);
    }
    __syncthreads();
}
__device__ __forceinline__ void run_norm(const Phase &p) { norm_row(p, p.ny, 1); }

__device__ __forceinline__ void run_multi(const Phase &p, unsigned vb, const bf16 *X) { // k_gemv_multi's selection
    int i = 0;
#pragma unroll
    for (int k = 1; k < GEMV_MULTI_MAX; k++)
        if (k < p.tab.n && vb >= p.tab.p[k].first) i = k;
    const gemv_product &g = p.tab.p[i];
    const unsigned b = vb - g.first;
    gemv_block<1>(b % g.nbx, b / g.nbx, 1, p.in, g.out, X, g.W, g.wstride, g.bias, g.Y, g.ystride, g.ybf16, 0, g.ep);
}

// xs: the block's normalised row when the phase has prenorm (computed before, by norm_row)
__device__ __forceinline__ void run_phase(const Phase &p, unsigned vb, const bf16 *xs = NULL) {
    const bf16 *X = p.prenorm ? xs : p.X;
    switch (p.type) {
    case PH_GEMV: {
        gemv_block<1>(vb % p.nbx, vb / p.nbx, 1, p.in, p.out, X, p.W, p.wstride, NULL, p.Y, p.out, p.ybf16, 0, p.ep);
        break;
    }
    case PH_MULTI: run_multi(p, vb, X); break;
    case PH_DECODE: run_decode(p, vb); break;
    default: run_norm(p); break;
    }
}

// the graph's kernels for the phases that are not products (ordinary launches, as the library's)
__global__ void __launch_bounds__(BS) k_phase(const Phase *ph) {
    pdl_trigger(); // the next kernel may be a product launched as a dependent
    run_phase(*ph, blockIdx.x);
}

// a product with its norm folded in, in the graph: launched as a dependent like the library's products; it hints its
// rows' first 2 KB into L2 (as gemv_block does) before the wait, then each block normalises the row itself (block 0
// also writes the residual), then the product reads X from shared memory
__device__ void hint_rows(const Phase &p, unsigned vb) {
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const bf16 *W = p.W;
    size_t ws = p.wstride;
    int64_t out = p.out;
    unsigned nbx = p.nbx;
    int mode = p.ep.mode;
    if (p.type == PH_MULTI) {
        int i = 0;
        for (int k = 1; k < p.tab.n; k++)
            if (vb >= p.tab.p[k].first) i = k;
        W = p.tab.p[i].W, ws = p.tab.p[i].wstride, out = p.tab.p[i].out, nbx = p.tab.p[i].nbx, mode = p.tab.p[i].ep.mode;
        vb -= p.tab.p[i].first;
    }
    const int64_t bx = vb % nbx, by = vb / nbx;
    for (int r = 0; r < GEMV_ROWS; r++) {
        const int64_t j = mode == GEMV_SWIGLU ? bx * GEMV_WARPS + w : (bx * GEMV_WARPS + w) * GEMV_ROWS + r;
        const bf16 *row = mode == GEMV_SWIGLU ? W + r * ws + j * p.in : W + by * ws + j * p.in;
        if (j < out && lane < 16 && 64 * lane < p.in) prefetch_l2(row + 64 * lane);
    }
}
__global__ void __launch_bounds__(BS) k_prod_norm(const Phase *ph) {
    __shared__ __align__(16) bf16 xs[D];
    pdl_trigger();
    hint_rows(*ph, blockIdx.x);
    pdl_wait();
    norm_row(*ph, xs, blockIdx.x == 0);
    run_phase(*ph, blockIdx.x, xs);
}

// the whole step in one cooperative kernel
#ifndef PERSIST_MIN_BLOCKS
#define PERSIST_MIN_BLOCKS 8 // blocks an SM (64 registers), as the product kernels k_gemv_bf16<1> get
#endif
__global__ void __launch_bounds__(BS, PERSIST_MIN_BLOCKS) k_persist(const Phase *ph, int nph, int pf) {
    __shared__ __align__(16) bf16 xs[D];
    cg::grid_group grid = cg::this_grid();
    for (int i = 0; i < nph; i++) {
        const Phase &p = ph[i];
        if (p.prenorm && blockIdx.x < p.nvb) norm_row(p, xs, blockIdx.x == 0); // once a block and phase
        for (unsigned vb = blockIdx.x; vb < p.nvb; vb += gridDim.x) run_phase(p, vb, xs);
        if (pf && p.pf_len) { // this block's share of the lines, 128 bytes each
            const size_t lines = (p.pf_len + 127) / 128, per = (lines + gridDim.x - 1) / gridDim.x;
            const size_t l0 = per * blockIdx.x, l1 = min(lines, l0 + per);
            for (size_t l = l0 + threadIdx.x; l < l1; l += BS) prefetch_l2(p.pf + 128 * l);
        }
        grid.sync();
    }
}

// graph+pf's side kernel: the range's lines hinted into L2 (fire and forget: it ends once they are issued)
__global__ void __launch_bounds__(BS) k_prefetch(const char *pf, size_t len) {
    const size_t lines = (len + 127) / 128;
    for (size_t l = blockIdx.x * (size_t)BS + threadIdx.x; l < lines; l += (size_t)gridDim.x * BS) prefetch_l2(pf + 128 * l);
}

// the barriers alone (their share of the persistent step)
__global__ void __launch_bounds__(BS, PERSIST_MIN_BLOCKS) k_sync_only(int n) {
    cg::grid_group grid = cg::this_grid();
    for (int i = 0; i < n; i++) grid.sync();
}

__global__ void k_fill_bf16(bf16 *x, size_t n, uint32_t seed, float amp) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15, h *= 2246822519u, h ^= h >> 13, h *= 3266489917u, h ^= h >> 16;
        x[i] = __float2bfloat16_rn(amp * ((float)(h >> 8) * (1.0f / 8388608.0f) - 1.0f));
    }
}
__global__ void k_fill_f32(float *x, size_t n, uint32_t seed, float amp, float base) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15, h *= 2246822519u, h ^= h >> 13, h *= 3266489917u, h ^= h >> 16;
        x[i] = base + amp * ((float)(h >> 8) * (1.0f / 8388608.0f) - 1.0f);
    }
}

struct Net {
    std::vector<Phase> ph; // host copy
    Phase *dph = NULL;     // device copy
    std::vector<const char *> wseg; // the weight stream: each phase's weight range in reading order
    char *wbase = NULL;
    size_t wbytes = 0;
    float *x0 = NULL, *S0 = NULL; // initial residual and states (restored before each check run)
    float *x = NULL, *mid = NULL, *S = NULL, *logits = NULL;
    size_t sbytes = 0;
};

void fill(bf16 *p, size_t n, uint32_t seed, float amp) { k_fill_bf16<<<1024, 256>>>(p, n, seed, amp); CK(cudaGetLastError()); }
void fillf(float *p, size_t n, uint32_t seed, float amp, float base) {
    k_fill_f32<<<1024, 256>>>(p, n, seed, amp, base);
    CK(cudaGetLastError());
}

// the phases, the weights in one buffer in the order the step reads them
void build(Net &n) {
    const size_t per_layer = (size_t)(3 * DK + 2 * R + 2 * DK) * D + 2 * (size_t)DK * R + (size_t)D * DK +
                             2 * (size_t)I * D + (size_t)D * I; // elements
    n.wbytes = ((size_t)NL * per_layer + (size_t)VOCAB * D) * sizeof(bf16);
    CK(cudaMalloc(&n.wbase, n.wbytes));
    fill((bf16 *)n.wbase, n.wbytes / 2, 1u, 0.02f);
    // activations
    bf16 *h, *qkv, *fg, *bw, *f, *o, *go, *y, *act;
    CK(cudaMalloc(&n.x, D * 4)); CK(cudaMalloc(&n.mid, D * 4)); CK(cudaMalloc(&n.x0, D * 4));
    CK(cudaMalloc(&h, D * 2)); CK(cudaMalloc(&qkv, 3 * DK * 2)); CK(cudaMalloc(&fg, 2 * R * 2));
    CK(cudaMalloc(&bw, 2 * DK * 2)); CK(cudaMalloc(&f, DK * 2)); CK(cudaMalloc(&o, DK * 2)); CK(cudaMalloc(&go, DK * 2));
    CK(cudaMalloc(&y, D * 2)); CK(cudaMalloc(&act, I * 2)); CK(cudaMalloc(&n.logits, VOCAB * 4));
    fillf(n.x0, D, 7u, 1.0f, 0.0f);
    n.sbytes = (size_t)NL * NH * HD * HD * 4;
    CK(cudaMalloc(&n.S, n.sbytes)); CK(cudaMalloc(&n.S0, n.sbytes));
    fillf(n.S0, n.sbytes / 4, 9u, 0.1f, 0.0f);
    float *nw, *wn; // norm weights [2 NL + 1][D], the output gate's [HD]
    CK(cudaMalloc(&nw, (2 * NL + 1) * D * 4)); CK(cudaMalloc(&wn, HD * 4));
    fillf(nw, (2 * NL + 1) * D, 11u, 0.1f, 1.0f);
    fillf(wn, HD, 13u, 0.1f, 1.0f);

    bf16 *wp = (bf16 *)n.wbase;
    auto take = [&](size_t elems) { bf16 *r = wp; wp += elems; n.wseg.push_back((const char *)r); return r; };
    auto gemv = [&](int64_t in, int64_t out, const bf16 *X, const bf16 *W, size_t wstride, int count, void *Y,
                    int ybf16, gemv_epi ep) {
        Phase p = {};
        p.type = PH_GEMV, p.in = in, p.out = out, p.X = X, p.W = W, p.wstride = wstride, p.count = count, p.Y = Y;
        p.ybf16 = ybf16, p.ep = ep;
        p.nbx = gemv_blocks(out, ep.mode);
        p.nvb = p.nbx * gemv_parts(count, ep.mode);
        return p;
    };
    auto norm = [&](const float *a, const bf16 *b, float *out, const float *w, bf16 *yy) {
        Phase p = {};
        p.type = PH_NORM, p.nvb = 1, p.a = a, p.b = b, p.nout = out, p.w = w, p.ny = yy;
        return p;
    };
    gemv_epi plain = {};
    plain.mode = GEMV_STORE, plain.D = 1;
    n.ph.push_back(norm(n.x, NULL, NULL, nw, h));
    for (int l = 0; l < NL; l++) {
        float *Sl = n.S + (size_t)l * NH * HD * HD;
        const bf16 *Wqkv = take((size_t)3 * DK * D), *Wfg = take((size_t)2 * R * D), *Wbw = take((size_t)2 * DK * D);
        Phase m = {};
        m.type = PH_MULTI, m.in = D, m.X = h;
        gemv_epi sig = plain;
        sig.mode = GEMV_SIGMOID;
        m.tab.n = 3;
        m.tab.p[0] = {Wqkv, (size_t)DK * D, NULL, qkv, (size_t)DK, DK, 0, 0, 1, plain};
        m.tab.p[1] = {Wfg, (size_t)R * D, NULL, fg, (size_t)R, R, 0, 0, 1, plain};
        m.tab.p[2] = {Wbw, (size_t)DK * D, NULL, bw, (size_t)DK, DK, 0, 0, 1, sig};
        const int cnt[3] = {3, 2, 2};
        unsigned blocks = 0;
        for (int i = 0; i < 3; i++) { // gemv_multi_launch's table
            m.tab.p[i].first = blocks, m.tab.p[i].nbx = gemv_blocks(m.tab.p[i].out, m.tab.p[i].ep.mode);
            blocks += m.tab.p[i].nbx * cnt[i];
        }
        m.nvb = blocks, m.count = 0;
        n.ph.push_back(m);
        n.wseg.pop_back(), n.wseg.pop_back(); // the multi phase reads the three as one range
        n.ph.push_back(gemv(R, DK, fg, take((size_t)DK * R), 0, 1, f, 1, plain));
        Phase dc = {};
        dc.type = PH_DECODE, dc.nvb = NH * VQ, dc.S = Sl, dc.qkv = qkv, dc.bw = bw, dc.f = f, dc.o = o;
        n.ph.push_back(dc);
        n.wseg.push_back(NULL); // decode reads no weights
        gemv_epi ns = plain;
        ns.mode = GEMV_NORM_SWISH, ns.o = o, ns.wn = wn, ns.D = HD, ns.eps = EPS;
        n.ph.push_back(gemv(R, DK, fg + R, take((size_t)DK * R), 0, 1, go, 1, ns));
        n.ph.push_back(gemv(DK, D, go, take((size_t)D * DK), 0, 1, y, 1, plain));
        n.ph.push_back(norm(n.x, y, n.mid, nw + (2 * l + 1) * D, h));
        n.wseg.push_back(NULL);
        gemv_epi sw = plain;
        sw.mode = GEMV_SWIGLU;
        n.ph.push_back(gemv(D, I, h, take((size_t)2 * I * D), (size_t)I * D, 2, act, 1, sw));
        n.ph.push_back(gemv(I, D, act, take((size_t)D * I), 0, 1, y, 1, plain));
        n.ph.push_back(norm(n.mid, y, n.x, nw + (2 * l + 2) * D, h));
        n.wseg.push_back(NULL);
    }
    n.ph.push_back(gemv(D, VOCAB, h, take((size_t)VOCAB * D), 0, 1, n.logits, 0, plain));
    if ((size_t)((char *)wp - n.wbase) != n.wbytes) { fprintf(stderr, "weight layout: %zu != %zu\n", (size_t)((char *)wp - n.wbase), n.wbytes); exit(1); }
    // the first norm reads no weights: wseg has one entry a phase from phase 1 on
    n.wseg.insert(n.wseg.begin(), (const char *)NULL);
    if (n.wseg.size() != n.ph.size()) { fprintf(stderr, "wseg %zu != phases %zu\n", n.wseg.size(), n.ph.size()); exit(1); }
    CK(cudaMalloc(&n.dph, n.ph.size() * sizeof(Phase)));
}

// the norm phases folded into the products after them (each of them a product of h: multi, w1|w3, lm_head)
void fold(Net &n) {
    std::vector<Phase> ph;
    std::vector<const char *> ws;
    for (size_t i = 0; i < n.ph.size(); i++) {
        if (n.ph[i].type == PH_NORM && i + 1 < n.ph.size() &&
            (n.ph[i + 1].type == PH_GEMV || n.ph[i + 1].type == PH_MULTI)) {
            Phase q = n.ph[i + 1];
            q.prenorm = 1, q.a = n.ph[i].a, q.b = n.ph[i].b, q.nout = n.ph[i].nout, q.w = n.ph[i].w;
            ph.push_back(q), ws.push_back(n.wseg[i + 1]);
            i++;
            continue;
        }
        ph.push_back(n.ph[i]), ws.push_back(n.wseg[i]);
    }
    n.ph = ph, n.wseg = ws;
}

// phase i prefetches [its weights' end + what earlier phases already covered, its end + ahead): each byte once
void set_prefetch(Net &n, size_t ahead) {
    const char *done = n.wbase; // prefetched (or read) up to here
    const char *end = n.wbase + n.wbytes;
    const char *cur_end = n.wbase;
    for (size_t i = 0; i < n.ph.size(); i++) {
        // the end of what phase i reads: the start of the next phase that reads weights
        if (n.wseg[i]) {
            const char *next = end;
            for (size_t j = i + 1; j < n.ph.size(); j++)
                if (n.wseg[j]) { next = n.wseg[j]; break; }
            cur_end = next;
        }
        const char *from = std::max(done, cur_end), *to = std::min(end, cur_end + ahead);
        n.ph[i].pf = from, n.ph[i].pf_len = ahead && to > from ? (size_t)(to - from) : 0;
        if (n.ph[i].pf_len) done = to;
    }
    CK(cudaMemcpy(n.dph, n.ph.data(), n.ph.size() * sizeof(Phase), cudaMemcpyHostToDevice));
    CK(cudaDeviceSynchronize()); // the steps run on a non-blocking stream: the table must have landed first
}

// side != NULL (graph+pf): as each phase starts, a small kernel on the side stream hints the phase's prefetch range
// into L2 (the same ranges as persist+pf), in parallel with the phase; the side stream joins at the end
void launch_graph_step(const Net &n, cudaStream_t st, cudaStream_t side = NULL, cudaEvent_t *ev = NULL, int pfb = 32) {
    for (size_t i = 0; i < n.ph.size(); i++) {
        const Phase &p = n.ph[i];
        if (side && p.pf_len) {
            CK(cudaEventRecord(ev[i], st));
            CK(cudaStreamWaitEvent(side, ev[i], 0));
            k_prefetch<<<pfb, BS, 0, side>>>(p.pf, p.pf_len);
            CK(cudaGetLastError());
        }
        if (p.prenorm) {
            cudaLaunchAttribute at[1];
            cudaLaunchConfig_t cfg = gemv_cfg(dim3(p.nvb), 1, st, at);
            const Phase *dp = n.dph + i;
            CK(cudaLaunchKernelEx(&cfg, k_prod_norm, dp));
        } else if (p.type == PH_GEMV) {
            CK(gemv_launch(1, p.in, p.out, p.X, p.W, p.wstride, NULL, p.Y, p.out, p.ybf16, 0, &p.ep, p.count, 1, st));
        } else if (p.type == PH_MULTI) {
            gemv_table t = p.tab;
            const int cnt[3] = {3, 2, 2};
            CK(gemv_multi_launch(1, p.in, p.X, &t, cnt, 1, st));
        } else {
            k_phase<<<p.nvb, BS, 0, st>>>(n.dph + i);
            CK(cudaGetLastError());
        }
    }
    if (side) {
        CK(cudaEventRecord(ev[n.ph.size()], side));
        CK(cudaStreamWaitEvent(st, ev[n.ph.size()], 0));
    }
}

int persist_grid(int *per_sm) {
    int dev, sms, occ;
    CK(cudaGetDevice(&dev));
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, k_persist, BS, 0));
    const char *e = getenv("BPS");
    if (e && atoi(e) > 0 && atoi(e) < occ) occ = atoi(e);
    *per_sm = occ;
    return sms * occ;
}

void launch_persist(const Net &n, int grid, int pf, cudaStream_t st) {
    int nph = (int)n.ph.size();
    const Phase *d = n.dph;
    void *args[] = {(void *)&d, (void *)&nph, (void *)&pf};
    CK(cudaLaunchCooperativeKernel((const void *)k_persist, dim3(grid), dim3(BS), args, 0, st));
}

void reset(const Net &n, cudaStream_t st) {
    CK(cudaMemcpyAsync(n.x, n.x0, D * 4, cudaMemcpyDeviceToDevice, st));
    CK(cudaMemcpyAsync(n.S, n.S0, n.sbytes, cudaMemcpyDeviceToDevice, st));
    CK(cudaMemsetAsync(n.logits, 0, VOCAB * 4, st));
}

struct Out { std::vector<float> x, logits, S; };
Out grab(const Net &n) {
    Out o;
    o.x.resize(D), o.logits.resize(VOCAB), o.S.resize(n.sbytes / 4);
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(o.x.data(), n.x, D * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(o.logits.data(), n.logits, VOCAB * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(o.S.data(), n.S, n.sbytes, cudaMemcpyDeviceToHost));
    return o;
}
// the largest |a - b| / max|a| (0: bit for bit equal, NaN excepted); the first differing index printed
double differ(const char *what, const std::vector<float> &a, const std::vector<float> &b) {
    double mx = 0.0, dmax = 0.0;
    size_t first = a.size();
    for (size_t i = 0; i < a.size(); i++) {
        mx = std::max(mx, (double)fabsf(a[i]));
        if (memcmp(&a[i], &b[i], 4)) {
            if (first == a.size()) first = i;
            dmax = std::max(dmax, (double)fabsf(a[i] - b[i]));
        }
    }
    if (first < a.size()) printf("  %s: first difference at %zu (%.9g vs %.9g), max |diff| %.3g of max |x| %.3g\n", what,
                                 first, a[first], b[first], dmax, mx);
    return first == a.size() ? 0.0 : (mx > 0 ? dmax / mx : 1.0);
}
int finite(const std::vector<float> &a) {
    for (float v : a)
        if (!isfinite(v)) return 0;
    return 1;
}

template <typename F> float time_step_us(F step, cudaStream_t st) {
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
    for (int i = 0; i < 3; i++) step();
    std::vector<float> t;
    for (int g = 0; g < 7; g++) {
        CK(cudaEventRecord(e0, st));
        for (int i = 0; i < 10; i++) step();
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        t.push_back(ms * 100.0f); // us a step
    }
    std::sort(t.begin(), t.end());
    CK(cudaEventDestroy(e0)); CK(cudaEventDestroy(e1));
    return t[3];
}


double check_one(Net &n, cudaStream_t st, const Out &ref);
// a captured graph of one step (side: graph+pf's side stream, NULL for the plain graph), replayed once from the
// start and checked against ref (*d: its relative difference), then timed
float time_graph(Net &n, cudaStream_t st, cudaStream_t side, cudaEvent_t *ev, int pfb, const Out &ref, double *d) {
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
    launch_graph_step(n, st, side, ev, pfb);
    CK(cudaStreamEndCapture(st, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    reset(n, st);
    CK(cudaGraphLaunch(ge, st));
    *d = check_one(n, st, ref);
    const float t = time_step_us([&] { CK(cudaGraphLaunch(ge, st)); }, st);
    CK(cudaGraphExecDestroy(ge)); CK(cudaGraphDestroy(g));
    return t;
}

// the step just queued (after reset) against ref: the largest relative difference of x, logits and the states
double check_one(Net &n, cudaStream_t st, const Out &ref) {
    const Out o = grab(n);
    return std::max(differ("x", ref.x, o.x), std::max(differ("logits", ref.logits, o.logits), differ("states", ref.S, o.S)));
}
static const char *verdict(double d) { return d == 0.0 ? "same bits" : d <= 1e-3 ? "close, not the same bits" : "FAIL"; }

// one step each way from the same start, against ref (the unfolded kernel-a-phase step); 0 when all agree
int check(Net &n, cudaStream_t st, int grid, const Out &ref, const char *tag) {
    int bad = 0;
    for (int way = 0; way < 3; way++) {
        reset(n, st);
        if (way == 0) launch_graph_step(n, st);
        else launch_persist(n, grid, way == 2, st);
        // the same arithmetic in each, so the same bits are expected; a relative 1e-3 still times (an FMA
        // contracted otherwise in another kernel), more is a bug
        const double d = check_one(n, st, ref);
        printf("check %s%s against the kernel-a-phase step: %s (%.3g)\n", tag,
               way == 0 ? "graph" : way == 1 ? "persist" : "persist+pf", verdict(d), d);
        bad += !(d <= 1e-3);
    }
    return bad;
}

// every way of running the phases, timed; tag "" for the norms as phases of their own, "fold " for them folded in
void measure(Net &n, cudaStream_t st, int grid, const std::vector<size_t> &aheads, double floor_us, const char *tag,
             const Out &ref) {
    double d;
    const float tg = time_graph(n, st, NULL, NULL, 0, ref, &d);
    printf("%sgraph        %8.1f us a step  (%.1f %% of the floor; %zu phases; replay: %s)\n", tag, tg,
           100.0 * floor_us / tg, n.ph.size(), verdict(d));
    const float tp = time_step_us([&] { launch_persist(n, grid, 0, st); }, st);
    printf("%spersist      %8.1f us a step  (%.1f %% of the floor)\n", tag, tp, 100.0 * floor_us / tp);
    int nph = (int)n.ph.size();
    void *args[] = {(void *)&nph};
    const float ts = time_step_us(
        [&] { CK(cudaLaunchCooperativeKernel((const void *)k_sync_only, dim3(grid), dim3(BS), args, 0, st)); }, st);
    printf("%sbarriers only %7.1f us a step  (%d grid barriers: %.2f us each)\n", tag, ts, nph, ts / nph);
    for (size_t ah : aheads) {
        set_prefetch(n, ah);
        const float tf = time_step_us([&] { launch_persist(n, grid, 1, st); }, st);
        printf("%spersist+pf %3zu MB ahead %8.1f us a step  (%.1f %% of the floor)\n", tag, ah >> 20, tf,
               100.0 * floor_us / tf);
    }
    // the graph with the same ranges hinted by a side kernel as each phase starts (a graph of its own)
    cudaStream_t side;
    CK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
    std::vector<cudaEvent_t> ev(n.ph.size() + 1);
    for (auto &e : ev) CK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    const char *pfb_env = getenv("PFB");
    const int pfb = pfb_env && atoi(pfb_env) > 0 ? atoi(pfb_env) : 32;
    for (size_t ah : aheads) {
        if (!ah) continue; // no ranges: the side stream would never join the capture
        set_prefetch(n, ah);
        const float t2 = time_graph(n, st, side, ev.data(), pfb, ref, &d);
        printf("%sgraph+pf   %3zu MB ahead %8.1f us a step  (%.1f %% of the floor; %d side blocks; replay: %s)\n", tag,
               ah >> 20, t2, 100.0 * floor_us / t2, pfb, verdict(d));
    }
    for (auto &e : ev) CK(cudaEventDestroy(e));
    CK(cudaStreamDestroy(side));
}

} // namespace

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0); // each line out as it is printed (a run cut short by timeout keeps them)
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device %s, %d SMs, L2 %.0f MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1048576.0);
    if (prop.major < 9) printf("note: below sm_90 the products do not launch as dependents (PDL is a no-op)\n");
    std::vector<size_t> aheads;
    for (int i = 1; i < argc; i++) aheads.push_back((size_t)atoi(argv[i]) << 20);
    if (aheads.empty()) aheads = {(size_t)8 << 20, (size_t)16 << 20, (size_t)32 << 20};
    Net n;
    build(n);
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    int per_sm, grid = persist_grid(&per_sm);
    printf("phases %zu, weights %.1f MB a step, persistent grid %d (%d a SM)\n", n.ph.size(), n.wbytes / 1e6, grid,
           per_sm);

    // the reference: the kernel-a-phase step, norms as phases of their own; every other way against it
    set_prefetch(n, aheads[0]);
    reset(n, st);
    launch_graph_step(n, st);
    const Out ref = grab(n);
    if (!finite(ref.x) || !finite(ref.logits) || !finite(ref.S)) { printf("FAIL: the graph step is not finite\n"); return 1; }
    Net nf = n; // the same buffers, the norms folded into the products after them
    fold(nf);
    CK(cudaMalloc(&nf.dph, nf.ph.size() * sizeof(Phase)));
    set_prefetch(nf, aheads[0]);
    if (check(n, st, grid, ref, "") + check(nf, st, grid, ref, "fold ")) return 1;

    // copy bandwidth: 1 GiB device to device, read + write counted
    char *a, *b;
    const size_t cb = (size_t)1 << 30;
    CK(cudaMalloc(&a, cb)); CK(cudaMalloc(&b, cb));
    const float cus = time_step_us([&] { CK(cudaMemcpyAsync(b, a, cb, cudaMemcpyDeviceToDevice, st)); }, st);
    const double bw = 2.0 * cb / (cus * 1e-6) / 1e9;
    CK(cudaFree(a)); CK(cudaFree(b));
    const double floor_us = (n.wbytes + 2.0 * n.sbytes) / (bw * 1e9) * 1e6;
    printf("copy %.0f GB/s; floor (weights + states read and written) %.1f us\n", bw, floor_us);

    measure(n, st, grid, aheads, floor_us, "", ref);
    measure(nf, st, grid, aheads, floor_us, "fold ", ref);
    return 0;
}
