// Token-serial GDN-2 on a pool of states: the decode step (T = 1), short prompts and speculative
// decoding (per-token state snapshots, dense or into pool slots). Memory bound: each (sequence,
// value head) state is K x V, read once and written once per call whatever T is (with snap_slots:
// written once per token, into the snapshot slots, and not back). The pool is fp32, or bf16 (half
// the bytes): widened on load, updated in fp32 registers, rounded to nearest even on each store.
//
// Per token (key head h = hv / (HV/H)):  S' = Diag(exp g) S;  r = S'^T (b.k);  u = w.v - r;
//                                         S = S' + k u^T;      o = scale S^T q
// One block of 256 threads per (sequence, value head, V tile); a thread holds K/32 rows x one
// 16-byte run of columns of the state; the column sums over K go through warp shuffles and shared
// memory. The token's inputs are loaded while the state is in flight.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <string.h>

#include "common.cuh"
#include "gdn2_cuda.h"
#include "host.cuh"
#include "pdl.cuh"

#define RNT 256

struct RecParams {
    int B, T, H, HV, K, V, G;
    float scale;
    int l2, gate;
    int g_tin; // g in the inputs' type Tin (gdn2_cuda_recurrent_args.g_dtype), else fp32
    float lb;
    const void *q, *k, *v, *b, *w;
    const float *g, *A_log, *dt_bias;
    void *o;
    void *pool;
    const int32_t *slots;
    size_t slot_stride; // pool elements from one slot to the next
    float *snap;
    const int32_t *snap_slots; // [B,T] or NULL: the state after each token to these pool slots,
                               // and no write-back to slots[i] (speculative verify)
};

// CPT consecutive state values (one 16-byte access: 4 fp32 or 8 bf16) <-> floats
__device__ __forceinline__ void ld_state(const float *s, float (&x)[4]) {
    const float4 a = *(const float4 *)s;
    x[0] = a.x; x[1] = a.y; x[2] = a.z; x[3] = a.w;
}
__device__ __forceinline__ void ld_state(const __nv_bfloat16 *s, float (&x)[8]) {
    const uint4 u = *(const uint4 *)s;
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 f = __bfloat1622float2(*(const __nv_bfloat162 *)&w[i]);
        x[2 * i] = f.x;
        x[2 * i + 1] = f.y;
    }
}
__device__ __forceinline__ void st_state(float *s, const float (&x)[4]) { *(float4 *)s = make_float4(x[0], x[1], x[2], x[3]); }
__device__ __forceinline__ void st_state(__nv_bfloat16 *s, const float (&x)[8]) {
    uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        __nv_bfloat162 h = __floats2bfloat162_rn(x[2 * i], x[2 * i + 1]);
        w[i] = *(uint32_t *)&h;
    }
    *(uint4 *)s = make_uint4(w[0], w[1], w[2], w[3]);
}

// One block of 256 threads per (sequence, value head, TW-column V tile): lane = column group
// (lane % CG, CPT columns: one 16-byte access of the pool) x row group (warp * 32/CG + lane / CG);
// a thread holds NR rows x CPT columns = 32 state values (K = 128) in registers, so that each
// block keeps 32 KB of fp32 state loads in flight (the step is bound by how many bytes are in
// flight, not by arithmetic). The fp32 pool's kernel fits in 64 registers without spilling: four
// blocks per SM, 128 KB in flight (at N = 64 the grid fills 3.9 waves instead of 5.2 at three);
// the bf16 pool's would spill there and keeps three. TW = 128 (the bf16 pool at V = 128, where
// the launcher's rule finds blocks enough for the SMs): a block takes the whole state, 64 values a
// thread, two blocks per SM: 32 KB a block as the fp32 pool's, so that the block's fixed cost (the token's loads, the norms, five barriers) is spread over twice
// the bytes of the 64-column tile (16 KB a block, measured at ~5 us a wave against ~9 for the fp32
// pool's 32 KB: the bf16 pool moved 53-67 % of copy bandwidth, the fp32 one 79-95 %).
template <class Tin, int KP, class TS, int TW>
__global__ __launch_bounds__(RNT, TW == 128 ? 2 : sizeof(TS) == 4 ? 4 : 3) void k_recurrent(RecParams p) {
    pdl_trigger(); // the next kernel may be a one-row product (src/cuda/pdl.cuh)
    constexpr int CPT = 16 / (int)sizeof(TS), CG = TW / CPT, RGW = 32 / CG, RG = RGW * RNT / 32, NR = KP / RG, RBV = CG * CPT;
    static_assert(CG <= 32 && RGW >= 1 && NR >= 1 && RBV <= RNT, "k_recurrent: tile");
    __shared__ float sq[KP], sk[KP], sbk[KP], sa[KP];
    __shared__ float red[RNT / 32][RBV];
    __shared__ float srow[RBV];
    const int i = blockIdx.z, hv = blockIdx.y, h = hv / p.G, v0 = blockIdx.x * RBV;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int cg = lane % CG, rg = warp * RGW + lane / CG; // column group, row group
    const int col = v0 + cg * CPT;
    const bool colok = col < p.V; // V % CPT == 0 (checked by the caller)
    const int slot = p.slots ? p.slots[i] : i;
    Tin *o = (Tin *)p.o;
    if (slot < 0) {
        for (int t = 0; t < p.T; t++)
            for (int e = threadIdx.x; e < RBV; e += RNT)
                if (v0 + e < p.V) stf(o, (((size_t)i * p.T + t) * p.HV + hv) * p.V + v0 + e, 0.0f);
        return;
    }
    TS *S = (TS *)p.pool + (size_t)slot * p.slot_stride + (size_t)hv * p.K * p.V;
    float st[NR][CPT];
#pragma unroll
    for (int j = 0; j < NR; j++) {
        const int d = rg + RG * j;
        if (d < p.K && colok) ld_state(S + (size_t)d * p.V + col, st[j]);
        else
#pragma unroll
            for (int c = 0; c < CPT; c++) st[j][c] = 0.0f;
    }
    const Tin *q = (const Tin *)p.q, *k = (const Tin *)p.k, *b = (const Tin *)p.b;
    const Tin *v = (const Tin *)p.v, *w = (const Tin *)p.w;
    for (int t = 0; t < p.T; t++) {
        const size_t tok = (size_t)i * p.T + t, ik = (tok * p.H + h) * p.K;
        // w and v of this token's columns: loads issued now (used after the first reduction), so
        // that they fly with the keys and the state
        float zw = 0.0f, zv = 0.0f;
        if (threadIdx.x < RBV && v0 + threadIdx.x < p.V) {
            const size_t iv = (tok * p.HV + hv) * p.V + v0 + threadIdx.x;
            zw = ldf(w, iv);
            zv = ldf(v, iv);
        }
        __syncthreads();
        for (int d = threadIdx.x; d < KP; d += RNT) {
            float qv = 0, kv = 0, bv = 0, g = 0;
            if (d < p.K) {
                qv = ldf(q, ik + d);
                kv = ldf(k, ik + d);
                bv = ldf(b, ik + d);
                g = p.g_tin ? ldf((const Tin *)(const void *)p.g, ik + d) : p.g[ik + d];
                if (p.gate) g = gate_fwd(g, p.A_log[h], p.dt_bias[(size_t)h * p.K + d], p.lb);
            }
            sq[d] = qv;
            sk[d] = kv;
            sbk[d] = bv;
            sa[d] = expf(g);
        }
        __syncthreads();
        if (p.l2 && warp == 0) { // x / sqrt(sum x^2 + 1e-6)
            float a = 0, c = 0;
            for (int d = lane; d < KP; d += 32) {
                a += sq[d] * sq[d];
                c += sk[d] * sk[d];
            }
            a = 1.0f / sqrtf(warp_sum(a) + 1e-6f);
            c = 1.0f / sqrtf(warp_sum(c) + 1e-6f);
            for (int d = lane; d < KP; d += 32) {
                sq[d] *= a;
                sk[d] *= c;
            }
        }
        __syncthreads();
        // decay, then the erase read r = S'^T (b.k), summed over all K rows
        float r[CPT];
#pragma unroll
        for (int c = 0; c < CPT; c++) r[c] = 0.0f;
#pragma unroll
        for (int j = 0; j < NR; j++) {
            const int d = rg + RG * j;
            const float a = sa[d], bk = sbk[d] * sk[d];
#pragma unroll
            for (int c = 0; c < CPT; c++) {
                st[j][c] *= a;
                r[c] += st[j][c] * bk;
            }
        }
#pragma unroll
        for (int c = 0; c < CPT; c++) {
#pragma unroll
            for (int m = CG; m < 32; m <<= 1) r[c] += __shfl_xor_sync(0xffffffffu, r[c], m);
            if (lane < CG) red[warp][cg * CPT + c] = r[c];
        }
        __syncthreads();
        if (threadIdx.x < RBV) { // u = w.v - r
            float s = 0;
            for (int m = 0; m < RNT / 32; m++) s += red[m][threadIdx.x];
            srow[threadIdx.x] = zw * zv - s;
        }
        __syncthreads();
        float ov[CPT], u[CPT];
#pragma unroll
        for (int c = 0; c < CPT; c++) {
            ov[c] = 0.0f;
            u[c] = srow[cg * CPT + c];
        }
#pragma unroll
        for (int j = 0; j < NR; j++) {
            const int d = rg + RG * j;
            const float kd = sk[d], qd = sq[d];
#pragma unroll
            for (int c = 0; c < CPT; c++) {
                st[j][c] += kd * u[c];
                ov[c] += qd * st[j][c];
            }
        }
        if (p.snap_slots) { // the state after this token, in the pool's dtype, to its snapshot slot
            TS *D = (TS *)p.pool + (size_t)p.snap_slots[tok] * p.slot_stride + (size_t)hv * p.K * p.V;
#pragma unroll
            for (int j = 0; j < NR; j++) {
                const int d = rg + RG * j;
                if (d < p.K && colok) st_state(D + (size_t)d * p.V + col, st[j]);
            }
        }
        if (p.snap) {
            float *sn = p.snap + ((tok * p.HV) + hv) * (size_t)p.K * p.V;
#pragma unroll
            for (int j = 0; j < NR; j++) {
                const int d = rg + RG * j;
                if (d < p.K && colok)
#pragma unroll
                    for (int c = 0; c < CPT; c += 4)
                        *(float4 *)(sn + (size_t)d * p.V + col + c) = make_float4(st[j][c], st[j][c + 1], st[j][c + 2], st[j][c + 3]);
            }
        }
#pragma unroll
        for (int c = 0; c < CPT; c++)
#pragma unroll
            for (int m = CG; m < 32; m <<= 1) ov[c] += __shfl_xor_sync(0xffffffffu, ov[c], m);
        __syncthreads(); // red is reused
        if (lane < CG)
#pragma unroll
            for (int c = 0; c < CPT; c++) red[warp][cg * CPT + c] = ov[c];
        __syncthreads();
        if (threadIdx.x < RBV && v0 + threadIdx.x < p.V) {
            float s = 0;
            for (int m = 0; m < RNT / 32; m++) s += red[m][threadIdx.x];
            stf(o, (tok * p.HV + hv) * p.V + v0 + threadIdx.x, p.scale * s);
        }
    }
    if (p.snap_slots) return; // the source slot stays as it was (the last snapshot is the final state)
#pragma unroll
    for (int j = 0; j < NR; j++) {
        const int d = rg + RG * j;
        if (d < p.K && colok) st_state(S + (size_t)d * p.V + col, st[j]);
    }
}

// 1 when p is pinned (page-locked, cudaMallocHost / cudaHostRegister) host memory: the host may
// read it without synchronising with the device (which only reads slot arrays). Device, managed and
// unregistered pointers give 0 (a managed array may still be in flight from earlier stream work).
static int pinned_host(const void *ptr) {
    cudaPointerAttributes at;
    if (cudaPointerGetAttributes(&at, ptr) != cudaSuccess) {
        (void)cudaGetLastError(); // clear the (non-sticky) error the query left
        return 0;
    }
    return at.type == cudaMemoryTypeHost;
}

// snap_slots rules (include/gdn2_cuda.h), checked only where both arrays are pinned host memory
// (slots NULL: sequence i's slot is i): no device synchronisation, no copy. The kernel does not
// check them.
static int check_snap_slots(const char *fn, const gdn2_dims *d, const gdn2_cuda_recurrent_args *a) {
    if (!pinned_host(a->snap_slots) || (a->slots && !pinned_host(a->slots))) return GDN2_OK;
    const int64_t n = d->B, T = d->T, ns = a->n_slots;
    if (ns < 1) return GDN2_OK; // with device slots n_slots is not read; nothing to index by
    int64_t *owner = (int64_t *)calloc((size_t)ns, sizeof(int64_t)); // 0 free, 1+i slots[i], 1+n+i*T+j snap
    if (!owner) return GDN2_OK;                                       // a check, not a requirement
    int rc = GDN2_OK;
    for (int64_t i = 0; i < n && !rc; i++) {
        const int64_t s = a->slots ? a->slots[i] : i;
        if (s >= 0 && s < ns) owner[s] = 1 + i;
    }
    for (int64_t i = 0; i < n && !rc; i++) {
        if (a->slots && a->slots[i] < 0) continue;
        for (int64_t j = 0; j < T && !rc; j++) {
            const int32_t s = a->snap_slots[i * T + j];
            if (s < 0 || s >= ns)
                rc = gdn2_error(GDN2_ERR_ARG, "%s: snap_slots[%lld,%lld]=%d is out of range (n_slots=%lld)", fn, (long long)i,
                                (long long)j, (int)s, (long long)ns);
            else if (owner[s] && owner[s] - 1 < n)
                rc = gdn2_error(GDN2_ERR_ARG, "%s: snap_slots[%lld,%lld]=%d is also slots[%lld]: a snapshot slot must not be "
                                "a source slot of the call", fn, (long long)i, (long long)j, (int)s, (long long)(owner[s] - 1));
            else if (owner[s])
                rc = gdn2_error(GDN2_ERR_ARG, "%s: snap_slots[%lld,%lld]=%d is also snap_slots[%lld,%lld]: snapshot slots must "
                                "be distinct", fn, (long long)i, (long long)j, (int)s, (long long)((owner[s] - 1 - n) / T),
                                (long long)((owner[s] - 1 - n) % T));
            else owner[s] = 1 + n + i * T + j;
        }
    }
    free(owner);
    return rc;
}

// k_recurrent for pool dtype TS and tile TW, by input dtype (bf: bf16) and key size (small: K <= 64)
template <class TS, int TW>
static void rec_launch(bool bf, bool small, dim3 grid, cudaStream_t st, const RecParams &p) {
    typedef __nv_bfloat16 b16;
    if (bf && small) k_recurrent<b16, 64, TS, TW><<<grid, RNT, 0, st>>>(p);
    else if (bf) k_recurrent<b16, 128, TS, TW><<<grid, RNT, 0, st>>>(p);
    else if (small) k_recurrent<float, 64, TS, TW><<<grid, RNT, 0, st>>>(p);
    else k_recurrent<float, 128, TS, TW><<<grid, RNT, 0, st>>>(p);
}

extern "C" int gdn2_cuda_recurrent_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_cuda_recurrent_args *a,
                                       void *stream) {
    const char *fn = "gdn2_cuda_recurrent_fwd";
    int rc = gdn2_check(d, o);
    if (rc) return rc;
    if (!a) return gdn2_error(GDN2_ERR_ARG, "%s: args must not be NULL", fn);
    if (o->cu_seqlens) return gdn2_error(GDN2_ERR_UNSUPPORTED, "%s: cu_seqlens is not supported (pass B rows of T tokens)", fn);
    const char *miss = !a->q ? "q" : !a->k ? "k" : !a->v ? "v" : !a->g ? "g" : !a->b ? "b" : !a->w ? "w"
                     : !a->o ? "o" : !a->state_pool ? "state_pool" : NULL;
    if (!miss && o->gate_in_kernel) miss = !a->A_log ? "A_log" : !a->dt_bias ? "dt_bias" : NULL;
    if (miss) return gdn2_error(GDN2_ERR_ARG, "%s: tensor '%s' is NULL", fn, miss);
    const int vmul = a->state_dtype == GDN2_CUDA_BF16 ? 8 : 4; // one 16-byte pool access per thread
    if (d->K > 128 || d->V % vmul != 0)
        return gdn2_error(GDN2_ERR_UNSUPPORTED, "%s: K=%lld V=%lld, need K <= 128 and V a multiple of %d (%s state)", fn,
                          (long long)d->K, (long long)d->V, vmul, vmul == 8 ? "bf16" : "fp32");
    if (!a->slots && a->n_slots < d->B)
        return gdn2_error(GDN2_ERR_ARG, "%s: slots is NULL, so n_slots=%lld must be >= B=%lld", fn,
                          (long long)a->n_slots, (long long)d->B);
    if (a->dtype != GDN2_CUDA_F32 && a->dtype != GDN2_CUDA_BF16)
        return gdn2_error(GDN2_ERR_ARG, "%s: dtype=%d, expected GDN2_CUDA_F32 or GDN2_CUDA_BF16", fn, a->dtype);
    if (a->state_dtype != GDN2_CUDA_F32 && a->state_dtype != GDN2_CUDA_BF16)
        return gdn2_error(GDN2_ERR_ARG, "%s: state_dtype=%d, expected GDN2_CUDA_F32 or GDN2_CUDA_BF16", fn, a->state_dtype);
    if (a->g_dtype != GDN2_CUDA_F32 && a->g_dtype != a->dtype)
        return gdn2_error(GDN2_ERR_ARG, "%s: g_dtype=%d, expected GDN2_CUDA_F32 or dtype (%d)", fn, a->g_dtype, a->dtype);
    const int64_t dense = d->HV * d->K * d->V;
    if (a->slot_stride < 0 || (a->slot_stride > 0 && a->slot_stride < dense))
        return gdn2_error(GDN2_ERR_ARG, "%s: slot_stride=%lld must be 0 or >= HV*K*V=%lld", fn,
                          (long long)a->slot_stride, (long long)dense);
    const size_t esz = a->state_dtype == GDN2_CUDA_BF16 ? 2 : 4;
    if (((uintptr_t)a->state_pool % 16) || ((size_t)a->slot_stride * esz) % 16)
        return gdn2_error(GDN2_ERR_ARG, "%s: state_pool (%p) and slot_stride (%lld elements) must keep every state "
                          "16-byte aligned", fn, a->state_pool, (long long)a->slot_stride);
    if (a->snap_slots && (rc = check_snap_slots(fn, d, a))) return rc;
    if (d->T == 0 || d->B == 0) return GDN2_OK;
    RecParams p;
    memset(&p, 0, sizeof p);
    fill_kernel_params(p, d, o, a);
    p.pool = a->state_pool; p.slots = a->slots; p.snap = a->snapshots; p.snap_slots = a->snap_slots;
    p.g_tin = a->g_dtype != GDN2_CUDA_F32;
    p.slot_stride = a->slot_stride > 0 ? (size_t)a->slot_stride : (size_t)(d->HV * d->K * d->V);
    const bool bf = a->dtype == GDN2_CUDA_BF16, small = d->K <= 64, sb = a->state_dtype == GDN2_CUDA_BF16;
    // V columns per block (k_recurrent's TW): 128 for the bf16 pool at V > 64 once the wide blocks cover the
    // multiprocessors (15/16 of a block each, as the chunk kernels' rule), else 64. Measured on an H100
    // (bench/results/h100-cand/README.md), 128 against 64: N = 16 / 64 / 256 / 1024 (256 blocks and up)
    // -13 / -10 / -3 / -2.5 %, N = 1 (16 blocks) +5 %. GDN2_CUDA_DECODE_TILE=64 forces the 64-column tile (dev).
    static std::atomic<int> tile_env{INT_MIN};
    const int tile64 = env_once(tile_env, "GDN2_CUDA_DECODE_TILE", [](const char *e) { return e && atoi(e) == 64 ? 1 : 0; });
    const int nsm = multiprocessors();
    const bool wide = sb && d->V > 64 && !tile64 && d->B * d->HV * ((d->V + 127) / 128) >= nsm - nsm / 16;
    const int rbv = wide ? 128 : 64;
    dim3 grid((unsigned)((d->V + rbv - 1) / rbv), (unsigned)d->HV, (unsigned)d->B);
    cudaStream_t st = (cudaStream_t)stream;
    if (sb && wide) rec_launch<__nv_bfloat16, 128>(bf, small, grid, st, p); // the whole 128-column state a block
    else if (sb) rec_launch<__nv_bfloat16, 64>(bf, small, grid, st, p);
    else rec_launch<float, 64>(bf, small, grid, st, p);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return gdn2_error(GDN2_ERR_DEVICE, "%s: launch failed: %s", fn, cudaGetErrorString(e));
    return GDN2_OK;
}
