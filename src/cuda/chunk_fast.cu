// The bf16 fast path of the chunk kernels: its kernels (chunk_tc.cuh) and their launch sequence.
// Used when the inputs are bf16, K and V are 64 or 128 and every tensor is 16-byte aligned
// (chunk.cu decides: fast_path_ok).
#include "chunk_device.cuh"
#include "chunk_tc.cuh"
#include "host.cuh"

// dev (GDN2_CUDA_CLOCKS builds, GDN2_CUDA_PROFILE=1): mean cycles of each k_prep_tc phase
static void prep_clocks_report(int nblocks) {
#ifdef GDN2_CUDA_CLOCKS
    if (!profile_on()) return;
    long long(*clk)[PREP_MARKS] = (long long(*)[PREP_MARKS])malloc(sizeof(long long) * 1024 * PREP_MARKS);
    cudaDeviceSynchronize();
    if (!clk || cudaMemcpyFromSymbol(clk, g_prep_clk, sizeof(long long) * 1024 * PREP_MARKS) != cudaSuccess) {
        free(clk);
        return;
    }
    const char *name[PREP_MARKS] = {"", "loads", "scores", "QgKgE", "solve-diag", "solve-merge", "Y", "U"};
    const int nb = nblocks < 1024 ? nblocks : 1024;
    fprintf(stderr, "[gdn2 cuda clocks] k_prep_tc, mean cycles over %d blocks:", nb);
    for (int m = 1; m < PREP_MARKS; m++) {
        double s = 0;
        for (int b = 0; b < nb; b++) s += (double)(clk[b][m] - clk[b][m - 1]);
        fprintf(stderr, " %s %.0f", name[m], s / nb);
    }
    fprintf(stderr, "\n");
    free(clk);
#else
    (void)nblocks;
#endif
}

// The bf16 fast path (chunk_tc.cuh): bf16 workspace, cp.async + ldmatrix scans and output.
// BV: the forward scan's tile (chunk.cu's dispatch); the reverse scan takes 64-column tiles when the
// forward does (the pairs fill the GPU: it holds one block per multiprocessor, so wider tiles halve
// its operand traffic), else 16.
template <int KP, int VP, int BV>
static cudaError_t launch_fast(ChunkParams &p, int bwd, int kept, cudaStream_t st) {
    typedef __nv_bfloat16 Tin;
    constexpr int BVB = BV == 64 ? 64 : 16;
    const int nsm_prep = prep_smem_bytes<__nv_bfloat16, KP>(), nsm_state = state_tc_smem_bytes<KP, BV>();
    const int nsm_out = out_tc_smem_bytes<KP, VP>(), nsm_bstate = bstate_tc_smem_bytes<KP, BVB>();
    const int nsm_bv = bv_tc_smem_bytes<VP>(), nsm_bk = bk_tc_smem_bytes();
    static PerDevice attr; // the shared-memory limits are set once per device
    const cudaError_t ea = once_per_device(attr, [&] {
        const cudaFuncAttribute m = cudaFuncAttributeMaxDynamicSharedMemorySize;
        cudaError_t e = cudaFuncSetAttribute(k_prep_tc<Tin, KP, VP, bf16>, m, nsm_prep);
        if (e == cudaSuccess) e = cudaFuncSetAttribute(k_state_tc<KP, VP, BV>, m, nsm_state);
        if (e == cudaSuccess) e = cudaFuncSetAttribute(k_out_tc<KP, VP>, m, nsm_out);
        if (e == cudaSuccess) e = cudaFuncSetAttribute(k_bstate_tc<KP, VP, BVB>, m, nsm_bstate);
        if (e == cudaSuccess) e = cudaFuncSetAttribute(k_bv_tc<KP, VP>, m, nsm_bv);
        if (e == cudaSuccess) e = cudaFuncSetAttribute(k_bk_tc<KP>, m, nsm_bk);
        return e;
    });
    if (ea != cudaSuccess) return ea;
    Prof pr(st);
    const dim3 gc(p.nchunks, p.HV), gs(VP / BV, p.nseq * p.HV), gb(VP / BVB, p.nseq * p.HV);
    const dim3 gk(p.nchunks, p.HV, KP / 64);
    pr.mark("start");
    if (!(bwd && kept)) { // as in launch_all
        if (p.nchunks > 0) k_prep_tc<Tin, KP, VP, bf16><<<gc, NT, nsm_prep, st>>>(p, bwd || kept);
        pr.mark("prep");
        prep_clocks_report(p.nchunks * p.HV);
        k_state_tc<KP, VP, BV><<<gs, NT, nsm_state, st>>>(p);
        pr.mark("state");
    }
    if (!bwd) {
        if (p.nchunks > 0) k_out_tc<KP, VP><<<gc, NT, nsm_out, st>>>(p);
        pr.mark("out");
        pr.report(kept ? "fwd (keep)" : "fwd");
        return cudaGetLastError();
    }
    k_bstate_tc<KP, VP, BVB><<<gb, NT, nsm_bstate, st>>>(p);
    pr.mark("bstate");
    if (p.nchunks > 0) {
        k_bv_tc<KP, VP><<<gc, NT, nsm_bv, st>>>(p);
        pr.mark("bv");
        k_bk_tc<KP><<<gk, NT, nsm_bk, st>>>(p);
        pr.mark("bk");
        launch_fin<Tin, KP>(p, st);
        pr.mark("fin");
    }
    pr.report(kept ? "bwd (reuse)" : "bwd");
    return cudaGetLastError();
}

cudaError_t chunk_launch_fast(ChunkParams &p, int KP, int VP, int BV, int bwd, int kept, cudaStream_t st) {
#define GDN2_FAST_BV(K_, V_)                                                                          \
    if (KP == K_ && VP == V_)                                                                         \
        return BV == 16 ? launch_fast<K_, V_, 16>(p, bwd, kept, st)                                   \
             : BV == 32 ? launch_fast<K_, V_, 32>(p, bwd, kept, st) : launch_fast<K_, V_, 64>(p, bwd, kept, st);
    GDN2_FAST_BV(64, 64)
    GDN2_FAST_BV(64, 128)
    GDN2_FAST_BV(128, 64)
    GDN2_FAST_BV(128, 128)
#undef GDN2_FAST_BV
    return cudaErrorInvalidValue;
}
