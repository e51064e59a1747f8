// Chunkwise (C = 64, WY form) GDN-2 forward and gate-aware backward in CUDA C.
//
// Per chunk of 64 tokens (rows r, s), value head hv, key head h = hv / (HV/H), with the chunk-local
// log2 cumulative gate G2_r = log2(e) * sum_{i<=r} g_i (per key channel), gamma_r = 2^G2_r:
//   Aqk_rs = scale sum_d q_rd k_sd 2^(G2_rd - G2_sd)   (s <= r)
//   T_rs   =       sum_d b_rd k_rd k_sd 2^(G2_rd - G2_sd)   (s < r),  A = (I + T)^-1
//   Y = A (gamma . b . k),  U = A (w . v),  Qg = scale q . gamma,  Kg = k . 2^(G2_last - G2)
//   R = U - Y S0,  O = Qg S0 + Aqk R,  S_C = Diag(gamma_last) S0 + Kg^T R
// Every exponent above is <= 0 (the pairwise 2^(G2_r - G2_s) is evaluated exactly per element, so
// the chunk's first row is the reference point of each factor): strong decay cannot overflow.
//
// Kernels (one block of 256 threads each, fp32 math in shared memory; bf16 inputs are widened on
// load):
//   forward : k_prep (chunk, hv) -> Y,U,Qg,Kg,gamma_last,Aqk[,A];  k_state (V tile, seq*hv):
//             sequential over the chunks of one sequence -> H (state at chunk start), R, ht;
//             k_out (chunk, hv) -> o.
//   backward: k_prep, k_state (recompute; skipped with reuse_forward after a keep_for_backward
//             forward), k_bstate (reverse scan -> dH (grad of chunk end state), dR, dh0),
//             k_bv (value-side contractions, dv, dw), k_bk (key side, the WY and intra-chunk
//             VJPs, reverse cumsum of dG), k_fin (GVA group sum, L2-norm and gate VJPs).
// Nothing of size O(T K V) is allocated: the per-chunk states are O(T/64 K V).
// This file: the host side. chunk_params.cuh: the parameters and the launchers it calls;
// chunk_device.cuh: what the kernel translation units share (loaders, k_prep / k_prep_tc, k_fin);
// chunk_generic.cuh via chunk_f32.cu / chunk_bf16.cu: the generic kernels; chunk_fast.cu +
// chunk_tc.cuh: the bf16 fast path.
#include <stdlib.h>
#include <string.h>

#include "chunk_params.cuh"
#include "host.cuh"

// ================================================================================================
// host side
// ================================================================================================
struct WsLayout {
    size_t nch, KP, VP, total; // total in bytes
    size_t off[32];            // float offsets
    size_t tab_off;            // byte offset of the int tables
    size_t roff[2][32], rtotal[2]; // a separate reserve (gdn2_cuda_fwd_args.reserve): float offsets of
                               // the kept buffers (ws_kept) in it and its size in bytes, [0] for any
                               // path (fp32 slots), [1] for the bf16 fast path (ws_fast_bf16 halved)
};

static int pad_dim(int64_t x) { return x <= 64 ? 64 : 128; }

static int64_t count_chunks(const gdn2_dims *d, const gdn2_opts *o) {
    if (!o->cu_seqlens) return d->B * ((d->T + CS - 1) / CS);
    int64_t n = 0;
    for (int64_t i = 0; i < o->n_seqs; i++) n += (o->cu_seqlens[i + 1] - o->cu_seqlens[i] + CS - 1) / CS;
    return n;
}

// buffers: 0 Y,1 U,2 Qg,3 Kg,4 Gl,5 Aqk,6 R,7 Hs | 8 A,9 dHs,10 dR,11 dY,12 dA1,13 dAqk,14 dQi,15 dKi,
// 16 dGl,17 dQs,18 dKs,19 dBs,20 dGs,21 E,22 Rn
// What a keep_for_backward forward leaves for the backward: what k_prep (bwd flag: A, and on the
// fast path E and Rn) and k_state write; 9..20 are the backward's own scratch.
static bool ws_kept(int i) { return i <= 8 || i == 21 || i == 22; }
// the kept buffers the bf16 fast path stores in bf16 (chunk_prep.cuh k_prep_tc, chunk_tc.cuh: every
// access casts to bf16 and indexes in elements): Y Qg Kg Aqk R Hs A E; U, Gl and Rn stay fp32
static bool ws_fast_bf16(int i) { return i == 0 || i == 2 || i == 3 || (i >= 5 && i <= 8) || i == 21; }
// The fast path's workspace: the slots above and dR (k_bstate_tc stores it in bf16) take half the
// bytes, and dQs, dKs, dBs, dGs (17..20) none: k_bk_tc writes dQs, dKs, dBs over dQi, dKi, dY, the
// elements each thread has just read (chunk_tc.cuh), and dGs over dHs, which nothing reads after
// k_bv_tc. The generic kernels keep every slot in fp32 and apart.
static int ws_fast_alias(int i) { return i == 17 ? 14 : i == 18 ? 15 : i == 19 ? 11 : i == 20 ? 9 : -1; }
static bool ws_fast_half(int i) { return ws_fast_bf16(i) || i == 10; }
// The layout of one call. fast: the bf16 fast path (above); split: the kept buffers in a separate
// reserve (gdn2_cuda_fwd_args.reserve), the workspace the backward's scratch only. fast = split = 0
// is the largest, gdn2_cuda_chunk_workspace_size's.
static void ws_layout(const gdn2_dims *d, const gdn2_opts *o, int bwd, int fast, int split, WsLayout *L) {
    const size_t nch = (size_t)count_chunks(d, o) * d->HV, KP = pad_dim(d->K), VP = pad_dim(d->V);
    const size_t per[23] = {CS * KP, CS * VP, CS * KP, CS * KP, KP, CS * CS, CS * VP, KP * VP,
                            CS * CS, KP * VP, CS * VP, CS * KP, CS * CS, CS * CS, CS * KP, CS * KP,
                            KP, CS * KP, CS * KP, CS * KP, CS * KP, CS * KP, 2 * CS};
    const int nb = bwd ? 23 : 8;
    size_t off = 0;
    for (int i = 0; i < 23; i++) {
        L->off[i] = off;
        if (i >= nb || (split && ws_kept(i)) || (fast && ws_fast_alias(i) >= 0)) continue;
        const size_t fl = fast && ws_fast_half(i) ? (nch * per[i] + 1) / 2 : nch * per[i]; // in floats
        off += ((fl + 63) / 64) * 64; // 256-byte aligned
    }
    if (fast)
        for (int i = 0; i < 23; i++)
            if (ws_fast_alias(i) >= 0) L->off[i] = L->off[ws_fast_alias(i)];
    for (int f = 0; f < 2; f++) {
        size_t roff = 0;
        for (int i = 0; i < 23; i++) {
            L->roff[f][i] = roff;
            const size_t fl = f && ws_fast_bf16(i) ? (nch * per[i] + 1) / 2 : nch * per[i]; // in floats
            if (ws_kept(i)) roff += ((fl + 63) / 64) * 64;
        }
        L->rtotal[f] = roff * sizeof(float) + 256;
    }
    L->nch = nch;
    L->KP = KP;
    L->VP = VP;
    L->tab_off = off * sizeof(float);
    const size_t ntab = o->cu_seqlens ? (size_t)count_chunks(d, o) * 3 + o->n_seqs + 1 : 0;
    L->total = L->tab_off + ntab * sizeof(int) + 256;
}

static int validate(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_cuda_fwd_args *a) {
    int rc = gdn2_check(d, o);
    if (rc) return rc;
    if (!a) return gdn2_error(GDN2_ERR_ARG, "%s: args must not be NULL", fn);
    const char *miss = !a->q ? "q" : !a->k ? "k" : !a->v ? "v" : !a->g ? "g" : !a->b ? "b" : !a->w ? "w" : NULL;
    if (!miss && o->gate_in_kernel) miss = !a->A_log ? "A_log" : !a->dt_bias ? "dt_bias" : NULL;
    if (miss) return gdn2_error(GDN2_ERR_ARG, "%s: input tensor '%s' is NULL", fn, miss);
    if (d->K > 128 || d->V > 128)
        return gdn2_error(GDN2_ERR_UNSUPPORTED, "%s: K=%lld V=%lld, the CUDA kernels support K,V <= 128", fn,
                          (long long)d->K, (long long)d->V);
    if (a->dtype != GDN2_CUDA_F32 && a->dtype != GDN2_CUDA_BF16)
        return gdn2_error(GDN2_ERR_ARG, "%s: dtype=%d, expected GDN2_CUDA_F32 or GDN2_CUDA_BF16", fn, a->dtype);
    if ((int64_t)count_chunks(d, o) * d->HV > 2147483647LL / CS || d->B * d->T * d->HV * 128 > (1LL << 40))
        return gdn2_error(GDN2_ERR_ARG, "%s: problem too large", fn);
    return GDN2_OK;
}

extern "C" size_t gdn2_cuda_chunk_workspace_size(const gdn2_dims *d, const gdn2_opts *o, int backward) {
    if (!d || !o || gdn2_check(d, o)) return 0;
    WsLayout L;
    ws_layout(d, o, backward, 0, 0, &L);
    return L.total;
}

extern "C" size_t gdn2_cuda_chunk_reserve_size(const gdn2_dims *d, const gdn2_opts *o, int dtype) {
    if (!d || !o || gdn2_check(d, o)) return 0;
    WsLayout L;
    ws_layout(d, o, 1, 0, 0, &L);
    return L.rtotal[dtype == GDN2_CUDA_BF16 && L.KP == (size_t)d->K && L.VP == (size_t)d->V];
}

#define CU(call)                                                                                            \
    do {                                                                                                    \
        cudaError_t e_ = (call);                                                                            \
        if (e_ != cudaSuccess) {                                                                            \
            rc = gdn2_error(GDN2_ERR_DEVICE, "%s: %s failed: %s", fn, #call, cudaGetErrorString(e_));       \
            goto done;                                                                                      \
        }                                                                                                   \
    } while (0)

// bf16 inputs at K == KP, V == VP with 16-byte aligned tensors take the fast path. Split in the
// part a forward and its backward share (dims, inputs) and the part that differs between them
// (the outputs: o, ht in the forward; d_o, dht, dh0 in the backward), which keep/reuse must not
// let switch the path (run_chunk).
static bool fast_inputs_ok(const ChunkParams &p, int KP, int VP) {
    const uintptr_t al = (uintptr_t)p.q | (uintptr_t)p.k | (uintptr_t)p.v | (uintptr_t)p.b | (uintptr_t)p.w |
                         (uintptr_t)p.h0;
    // GDN2_CUDA_GENERIC=1: always the generic kernels (for comparisons)
    static std::atomic<int> generic_env{INT_MIN};
    const int generic = env_once(generic_env, "GDN2_CUDA_GENERIC", [](const char *e) { return e != NULL ? 1 : 0; });
    return p.K == KP && p.V == VP && al % 16 == 0 && !generic;
}
// the first output that is not 16-byte aligned, or NULL
static const char *fast_outputs_misaligned(const ChunkParams &p) {
    const void *t[5] = {p.o, p.ht, p.d_o, p.dht, p.dh0};
    const char *name[5] = {"o", "ht", "d_o", "dht", "dh0"};
    for (int i = 0; i < 5; i++)
        if ((uintptr_t)t[i] % 16) return name[i];
    return NULL;
}
static bool fast_path_ok(const ChunkParams &p, int KP, int VP) {
    return fast_inputs_ok(p, KP, VP) && !fast_outputs_misaligned(p);
}

// V tile of the sequential state kernels. Each block is a chain over its sequence's chunks, so
// wider tiles (fewer blocks, each operand tile loaded by fewer of them) win as long as the blocks
// still cover the multiprocessors: the widest of 64 (fast path only), 32, 16 columns that gives at
// least 15/16 of a block per multiprocessor, else 16. Measured on the H200 (132 SMs), fwd ms at
// (B,T,H) = (8,4096,16) / (2,16384,16) / (1,65536,16) / (32,2048,32): 64-32-16-64 (this rule)
// 1.48 / 1.67 / 3.98 / 5.77; all 32 (the former rule) 1.56 / 1.67 / 4.23 / 6.13; 16 at the second
// 1.77. GDN2_CUDA_STATE_BV=16|32|64 forces the tile (dev; 64 only on the fast path).
template <class Tin>
static cudaError_t dispatch(ChunkParams &p, int KP, int VP, int bwd, int kept, cudaStream_t st) {
    static std::atomic<int> forced_env{INT_MIN};
    const int forced = env_once(forced_env, "GDN2_CUDA_STATE_BV", [](const char *e) {
        const int bv = e ? atoi(e) : 0;
        return bv == 16 || bv == 32 || bv == 64 ? bv : 0;
    });
    const int nsm = multiprocessors();
    const long pairs = (long)p.nseq * p.HV, enough = nsm - nsm / 16;
    const bool fast = is_bf16<Tin>::value && fast_path_ok(p, KP, VP);
    int BV = fast && pairs * (VP / 64) >= enough ? 64 : pairs * (VP / 32) >= enough ? 32 : 16;
    if (forced) BV = forced == 64 && !fast ? 32 : forced;
    if (fast) return chunk_launch_fast(p, KP, VP, BV, bwd, kept, st);
    return chunk_launch_generic<Tin>(p, KP, VP, BV, bwd, kept, st);
}

// What decides a call's workspace, worked out before anything is queued: the checks of its
// arguments, the kernel parameters (tensors and dims; the workspace buffers come later), keep/reuse,
// a separate reserve, the kernel path and the layout. Shared by run_chunk and
// gdn2_cuda_chunk_call_workspace_size, so that the size a caller is told is the size the call checks.
struct CallPlan {
    ChunkParams p;
    int bwd, kept, split, fast;
    const char *kfield; // the keep/reuse field of this call, for messages
    WsLayout L;
};
static int plan_call(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_cuda_fwd_args *a,
                     const gdn2_cuda_bwd_args *g, CallPlan *c) {
    int rc = validate(fn, d, o, a);
    if (rc) return rc;
    const int bwd = g != NULL;
    if (bwd) {
        const char *miss = !g->d_o ? "d_o" : !g->dq ? "dq" : !g->dk ? "dk" : !g->dv ? "dv" : !g->dg ? "dg"
                         : !g->db ? "db" : !g->dw ? "dw" : NULL;
        if (!miss && o->gate_in_kernel) miss = !g->dA_log ? "dA_log" : !g->ddt_bias ? "ddt_bias" : NULL;
        if (miss) return gdn2_error(GDN2_ERR_ARG, "%s: gradient tensor '%s' is NULL", fn, miss);
    } else if (!a->o)
        return gdn2_error(GDN2_ERR_ARG, "%s: output tensor 'o' is NULL", fn);
    // keep_for_backward / reuse_forward: what k_prep (with its bwd flag) and k_state write stays in
    // the caller's workspace (or reserve) between the calls, laid out as for the backward
    c->bwd = bwd;
    c->kept = (bwd ? g->reuse_forward : a->keep_for_backward) != 0;
    c->kfield = bwd ? "reuse_forward" : "keep_for_backward";
    // a separate reserve: the kept buffers there, the workspace is scratch only
    c->split = c->kept && a->reserve != NULL;
    if (c->split && (uintptr_t)a->reserve % 256)
        return gdn2_error(GDN2_ERR_ARG, "%s: the reserve must be 256-byte aligned", fn);
    ChunkParams &p = c->p;
    memset(&p, 0, sizeof p);
    fill_kernel_params(p, d, o, a);
    p.nchunks = (int)count_chunks(d, o);
    p.nseq = (int)gdn2_num_states(d, o);
    p.h0 = a->h0;
    p.ht = bwd ? NULL : a->ht;
    if (bwd) {
        p.d_o = g->d_o; p.dht = g->dht; p.dq = g->dq; p.dk = g->dk; p.dv = g->dv; p.db = g->db; p.dw = g->dw;
        p.dg = g->dg; p.dh0 = g->dh0; p.dA_log = g->dA_log; p.ddt_bias = g->ddt_bias;
    }
    const int KP = pad_dim(d->K), VP = pad_dim(d->V);
    c->fast = a->dtype == GDN2_CUDA_BF16 && fast_path_ok(p, KP, VP);
    if (c->kept && a->dtype == GDN2_CUDA_BF16 && fast_inputs_ok(p, KP, VP)) {
        // the workspace's layout follows the path: forward and backward must take the same one
        const char *bad = fast_outputs_misaligned(p);
        if (bad)
            return gdn2_error(GDN2_ERR_ARG, "%s: %s=%d with bf16 at K=%d V=%d needs '%s' 16-byte aligned (the forward "
                              "and the backward must take the same kernel path)", fn, c->kfield, c->kept, p.K, p.V, bad);
    }
    ws_layout(d, o, bwd || c->kept, c->fast, c->split, &c->L);
    return GDN2_OK;
}

extern "C" size_t gdn2_cuda_chunk_call_workspace_size(const gdn2_dims *d, const gdn2_opts *o, const gdn2_cuda_fwd_args *a,
                                                      const gdn2_cuda_bwd_args *g) {
    CallPlan c;
    if (!d || !o) {
        gdn2_error(GDN2_ERR_ARG, "gdn2_cuda_chunk_call_workspace_size: dims and opts must not be NULL");
        return 0;
    }
    return plan_call(g ? "gdn2_cuda_chunk_call_workspace_size (backward)" : "gdn2_cuda_chunk_call_workspace_size (forward)",
                     d, o, a, g, &c) ? 0 : c.L.total;
}

static int run_chunk(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_cuda_fwd_args *a,
                     const gdn2_cuda_bwd_args *g, void *stream) {
    CallPlan plan;
    int rc = plan_call(fn, d, o, a, g, &plan);
    if (rc) return rc;
    const int bwd = plan.bwd, kept = plan.kept, split = plan.split, fast = plan.fast;
    const char *kfield = plan.kfield;
    const WsLayout &L = plan.L;
    ChunkParams p = plan.p;
    cudaStream_t st = (cudaStream_t)stream;
    if (kept && !split && (!o->workspace || o->workspace_size < L.total))
        return gdn2_error(GDN2_ERR_ARG, "%s: %s=%d needs opts->workspace (a device buffer of at least "
                          "gdn2_cuda_chunk_call_workspace_size = %zu bytes), got %s of %zu bytes", fn, kfield,
                          kept, L.total, o->workspace ? "one" : "NULL", o->workspace_size);
    const int64_t nchunks = p.nchunks, nseq = p.nseq;
    char *ws = (char *)o->workspace, *own = NULL;
    int *htab = NULL;
    if (ws && o->workspace_size < L.total) {
        return gdn2_error(GDN2_ERR_ARG, "%s: workspace_size=%zu, need %zu (gdn2_cuda_chunk_call_workspace_size; "
                          "gdn2_cuda_chunk_workspace_size is enough for any call)", fn, o->workspace_size, L.total);
    }
    if (!ws) {
        CU(cudaMallocAsync((void **)&own, L.total, st));
        ws = own;
    }
    // the layout follows the path (the fast one stores most of it in bf16, and aliases four scratch slots)
    {
        float *f = (float *)ws;
        float **bufs[23] = {&p.Y, &p.U, &p.Qg, &p.Kg, &p.Gl, &p.Aqk, &p.R, &p.Hs, &p.A, &p.dHs, &p.dR,
                            &p.dY, &p.dA1, &p.dAqk, &p.dQi, &p.dKi, &p.dGl, &p.dQs, &p.dKs, &p.dBs, &p.dGs, &p.E, &p.Rn};
        for (int i = 0; i < (bwd || kept ? 23 : 8); i++)
            *bufs[i] = split && ws_kept(i) ? (float *)a->reserve + L.roff[fast][i] : f + L.off[i];
    }
    if (split && a->reserve_size < L.rtotal[fast]) {
        rc = gdn2_error(GDN2_ERR_ARG, "%s: %s=%d with a reserve of %zu bytes, need %zu (gdn2_cuda_chunk_reserve_size "
                        "with dtype %s%s)", fn, kfield, kept, a->reserve_size, L.rtotal[fast],
                        a->dtype == GDN2_CUDA_BF16 ? "bf16" : "fp32",
                        a->dtype == GDN2_CUDA_BF16 && !fast ? ": these bf16 tensors take the generic path, whose "
                        "reserve is the fp32 size" : "");
        goto done;
    }
    if (o->cu_seqlens) { // chunk table {seq, tok0, len} and per-sequence chunk offsets
        const size_t ntab = (size_t)nchunks * 3 + nseq + 1;
        htab = (int *)malloc(ntab * sizeof(int));
        if (!htab) { rc = gdn2_error(GDN2_ERR_NOMEM, "%s: chunk table", fn); goto done; }
        int c = 0;
        for (int64_t s = 0; s < nseq; s++) {
            htab[nchunks * 3 + s] = c;
            for (int64_t t0 = o->cu_seqlens[s]; t0 < o->cu_seqlens[s + 1]; t0 += CS, c++) {
                htab[3 * c] = (int)s;
                htab[3 * c + 1] = (int)t0;
                htab[3 * c + 2] = (int)(o->cu_seqlens[s + 1] - t0 < CS ? o->cu_seqlens[s + 1] - t0 : CS);
            }
        }
        htab[nchunks * 3 + nseq] = c;
        int *dtab = (int *)(ws + L.tab_off);
        CU(cudaMemcpyAsync(dtab, htab, ntab * sizeof(int), cudaMemcpyHostToDevice, st));
        p.ctab = dtab;
        p.cofs = dtab + nchunks * 3;
    }
    // with no chunk (T = 0 everywhere) no kernel writes the gate's gradients: they are zero
    if (bwd && o->gate_in_kernel && nchunks == 0) {
        CU(cudaMemsetAsync(g->dA_log, 0, d->H * sizeof(float), st));
        CU(cudaMemsetAsync(g->ddt_bias, 0, d->H * d->K * sizeof(float), st));
    }
    if (a->dtype == GDN2_CUDA_BF16)
        CU(dispatch<__nv_bfloat16>(p, (int)L.KP, (int)L.VP, bwd, kept, st));
    else
        CU(dispatch<float>(p, (int)L.KP, (int)L.VP, bwd, kept, st));
    if (htab) CU(cudaStreamSynchronize(st)); // the pageable table must outlive the copy
done:
    if (own) cudaFreeAsync(own, st);
    free(htab);
    return rc;
}

extern "C" int gdn2_cuda_chunk_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_cuda_fwd_args *a, void *stream) {
    return run_chunk("gdn2_cuda_chunk_fwd", d, o, a, NULL, stream);
}

extern "C" int gdn2_cuda_chunk_bwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_cuda_fwd_args *a,
                                   const gdn2_cuda_bwd_args *g, void *stream) {
    if (!g) return gdn2_error(GDN2_ERR_ARG, "gdn2_cuda_chunk_bwd: gradient args must not be NULL");
    return run_chunk("gdn2_cuda_chunk_bwd", d, o, a, g, stream);
}
