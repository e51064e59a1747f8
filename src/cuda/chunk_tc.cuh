// The bf16 fast path of the chunk kernels (included by chunk_fast.cu): the scans, the
// output, the value side of the backward with the WY part of the key side (k_bv_tc), and the key
// side split by 64-channel halves (k_bk_tc).
//
// Used when the inputs are bf16 and K == KP, V == VP (64 or 128). The workspace tensors that the
// official kernels round to bf16 (docs/CUDA.md) are stored in bf16 here too: Y, Qg, Kg, Aqk (and A
// when the backward runs; written by k_prep_tc), H (chunk-start states), R (v_new) and dR. U,
// gamma_last, dH and the other backward intermediates stay fp32. Each of those bf16 tensors was
// already rounded to bf16 where the generic kernels feed it to a tensor-core product, so storing it
// rounded changes only the rowsum(S0 . dS) term of dg (S0 now bf16). Operand tiles arrive by
// cp.async into bf16 shared memory (double-buffered in the scans) and reach the tensor cores through
// ldmatrix (tc.cuh); a state stays fp32 in the registers of the product that updates it, with a
// bf16 copy in shared memory as the operand of the next chunk.

// ------------------------------------------------------------------------------------------------
// k_state_tc: per (BV-column V tile, sequence*hv), sequential over the sequence's chunks:
//   H[ch] = S;  R = U - Y S;  S = Diag(gamma_last) S + Kg^T R
// Operands arrive by cp.async, each as early as its buffer is free: Y double-buffered (chunk c+1's
// issued when chunk c starts), U and gamma_last once R of chunk c is done (gamma_last double-
// buffered: the update still reads it), Kg once the update of chunk c is done (it is needed only by
// the next update). Single buffers for Kg and U keep BV = 64 at two blocks per SM.
// ------------------------------------------------------------------------------------------------
template <int KP, int BV>
constexpr int state_tc_smem_bytes() {
    return 3 * CS * (KP + 8) * 2 + CS * (BV + 4) * 4 + 2 * KP * 4 + KP * (BV + 8) * 2 + CS * (BV + 8) * 2;
}

template <int KP, int VP, int BV>
__global__ __launch_bounds__(NT, 2) void k_state_tc(ChunkParams p) {
    extern __shared__ __align__(16) unsigned char smb[];
    constexpr int LK = KP + 8, LB = BV + 8, LU = BV + 4;
    bf16 *sY = (bf16 *)smb, *sK = sY + 2 * CS * LK;   // [2][CS][LK], [CS][LK]
    float *sU = (float *)(sK + CS * LK);               // [CS][LU]
    float *sGl = sU + CS * LU;                         // [2][KP]
    bf16 *sSb = (bf16 *)(sGl + 2 * KP), *sR = sSb + KP * LB; // [KP][LB], [CS][LB]
    const int n = blockIdx.y / p.HV, hv = blockIdx.y % p.HV, v0 = blockIdx.x * BV;
    const bf16 *gY = (const bf16 *)p.Y, *gK = (const bf16 *)p.Kg;
    bf16 *gH = (bf16 *)p.Hs, *gR = (bf16 *)p.R;
    const size_t sidx = (size_t)(n * p.HV + hv) * KP * VP;
    int c0, c1;
    seq_chunks(p, n, c0, c1);
    auto chk = [&](int c) { return (size_t)c * p.HV + hv; };
    auto issue_y = [&](int c) { cp_tile<CS, KP, NT>(sY + (c & 1) * CS * LK, LK, gY + chk(c) * CS * KP, KP); cp_async_commit(); };
    auto issue_u = [&](int c) {
        cp_tile<CS, BV, NT>(sU, LU, p.U + chk(c) * CS * VP + v0, VP);
        cp_tile<1, KP, NT>(sGl + (c & 1) * KP, KP, p.Gl + chk(c) * KP, KP);
        cp_async_commit();
    };
    auto issue_k = [&](int c) { cp_tile<CS, KP, NT>(sK, LK, gK + chk(c) * CS * KP, KP); cp_async_commit(); };
    // pending groups at the top of iteration c: Y(c), U(c), K(c) in that order
    if (c0 < c1) {
        issue_y(c0);
        issue_u(c0);
        issue_k(c0);
    }
    TcAcc<KP, BV> S; // the state, fp32, in the registers of the product that updates it
    S.each_pair([&](int d, int j, float &x0, float &x1) {
        x0 = p.h0 ? p.h0[sidx + (size_t)d * VP + v0 + j] : 0.0f;
        x1 = p.h0 ? p.h0[sidx + (size_t)d * VP + v0 + j + 1] : 0.0f;
        st2(&sSb[d * LB + j], x0, x1);
    });
    for (int c = c0; c < c1; c++) {
        const bool next = c + 1 < c1;
        const size_t ch = chk(c);
        cp_async_wait<1>(); // Y(c), U(c) (K(c) may still be in flight)
        __syncthreads();    // chunk c's Y, U, gamma_last and sSb (S at the chunk start) are visible
        if (next) issue_y(c + 1); // the other Y buffer: its last reader (chunk c-1) is done
        for (int i = threadIdx.x; i < KP * BV / 8; i += NT) {
            const int d = i / (BV / 8), j = (i % (BV / 8)) * 8;
            *reinterpret_cast<uint4 *>(gH + ch * KP * VP + (size_t)d * VP + v0 + j) = *reinterpret_cast<const uint4 *>(sSb + d * LB + j);
        }
        TcAcc<CS, BV> X;
        X.zero();
        X.template mma<false, false>(sY + (c & 1) * CS * LK, LK, sSb, LB, KP);
        X.each_pair([&](int r, int j, float &a0, float &a1) {
            const uint32_t pk = pack_bf16(sU[r * LU + j] - a0, sU[r * LU + j + 1] - a1);
            *reinterpret_cast<uint32_t *>(&sR[r * LB + j]) = pk;
            *reinterpret_cast<uint32_t *>(&gR[ch * CS * VP + (size_t)r * VP + v0 + j]) = pk;
        });
        if (next) cp_async_wait<1>(); // K(c) (Y(c+1) may still be in flight)
        else cp_async_wait<0>();
        __syncthreads(); // R complete, every read of sSb and sU done, K(c) visible
        if (next) issue_u(c + 1);
        const float *gl = sGl + (c & 1) * KP;
        S.each_pair([&](int d, int j, float &x0, float &x1) {
            x0 *= gl[d];
            x1 *= gl[d];
        });
        S.template mma<true, false>(sK, LK, sR, LB, CS);
        S.each_pair([&](int d, int j, float &x0, float &x1) { st2(&sSb[d * LB + j], x0, x1); });
        __syncthreads(); // sSb holds the next chunk's start state; every read of sK and sR is done
        if (next) issue_k(c + 1);
    }
    if (p.ht)
        S.each_pair([&](int d, int j, float &x0, float &x1) {
            *reinterpret_cast<float2 *>(&p.ht[sidx + (size_t)d * VP + v0 + j]) = make_float2(x0, x1);
        });
}

// ------------------------------------------------------------------------------------------------
// k_out_tc: per (chunk, hv): O = Qg S0 + Aqk R
// ------------------------------------------------------------------------------------------------
template <int KP, int VP>
constexpr int out_tc_smem_bytes() { return (CS * (KP + 8) + KP * (VP + 8) + CS * (CS + 8) + CS * (VP + 8)) * 2; }

template <int KP, int VP>
__global__ __launch_bounds__(NT, 2) void k_out_tc(ChunkParams p) {
    extern __shared__ __align__(16) unsigned char smb[];
    constexpr int LK = KP + 8, LV = VP + 8, LC = CS + 8;
    bf16 *sQ = (bf16 *)smb, *sS = sQ + CS * LK, *sA = sS + KP * LV, *sR = sA + CS * LC;
    const int c = blockIdx.x, hv = blockIdx.y;
    int n, len;
    size_t tok0;
    chunk_info(p, c, n, tok0, len);
    const size_t ch = (size_t)c * p.HV + hv;
    cp_tile<CS, KP, NT>(sQ, LK, (const bf16 *)p.Qg + ch * CS * KP, KP);
    cp_tile<KP, VP, NT>(sS, LV, (const bf16 *)p.Hs + ch * KP * VP, VP);
    cp_tile<CS, CS, NT>(sA, LC, (const bf16 *)p.Aqk + ch * CS * CS, CS);
    cp_tile<CS, VP, NT>(sR, LV, (const bf16 *)p.R + ch * CS * VP, VP);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    TcAcc<CS, VP> O;
    O.zero();
    O.template mma<false, false>(sQ, LK, sS, LV, KP);
    O.template mma<false, false>(sA, LC, sR, LV, CS);
    bf16 *o = (bf16 *)p.o;
    O.each_pair([&](int r, int e, float &x0, float &x1) {
        if (r < len) st2(&o[((tok0 + r) * p.HV + hv) * VP + e], x0, x1);
    });
}

// ------------------------------------------------------------------------------------------------
// k_bstate_tc: reverse scan per (BV-column V tile, sequence*hv). dS = gradient of the chunk's END state:
//   dH[ch] = dS;  dR = Aqk^T dO + Kg dS;  dS <- Diag(gamma_last) dS + Qg^T dO - Y^T dR
// ------------------------------------------------------------------------------------------------
template <int KP, int BV>
constexpr int bstate_tc_smem_bytes() {
    return 2 * (CS * (CS + 8) + 3 * CS * (KP + 8) + CS * (BV + 8)) * 2 + 2 * KP * 4 + (KP + CS) * (BV + 8) * 2;
}

template <int KP, int VP, int BV>
__global__ __launch_bounds__(NT, 1) void k_bstate_tc(ChunkParams p) {
    extern __shared__ __align__(16) unsigned char smb[];
    constexpr int LK = KP + 8, LB = BV + 8, LC = CS + 8;
    constexpr int BUF = CS * LC + 3 * CS * LK + CS * LB; // bf16 elements of one chunk's operands
    bf16 *sBuf = (bf16 *)smb;                            // [2][BUF]: Aqk, Kg, Qg, Y, dO
    float *sGl = (float *)(sBuf + 2 * BUF);              // [2][KP]
    bf16 *sdSb = (bf16 *)(sGl + 2 * KP), *sdRn = sdSb + KP * LB; // dS (bf16 copy), -dR
    const int n = blockIdx.y / p.HV, hv = blockIdx.y % p.HV, v0 = blockIdx.x * BV;
    const size_t sidx = (size_t)(n * p.HV + hv) * KP * VP;
    const bf16 *dO = (const bf16 *)p.d_o;
    auto op = [&](int buf, int which) { // 0 Aqk, 1 Kg, 2 Qg, 3 Y, 4 dO
        bf16 *b = sBuf + buf * BUF;
        return which == 0 ? b : which == 4 ? b + CS * LC + 3 * CS * LK : b + CS * LC + (which - 1) * CS * LK;
    };
    auto issue = [&](int c, int buf) {
        const size_t ch = (size_t)c * p.HV + hv;
        int nn, len;
        size_t tok0;
        chunk_info(p, c, nn, tok0, len);
        cp_tile<CS, CS, NT>(op(buf, 0), LC, (const bf16 *)p.Aqk + ch * CS * CS, CS);
        cp_tile<CS, KP, NT>(op(buf, 1), LK, (const bf16 *)p.Kg + ch * CS * KP, KP);
        cp_tile<CS, KP, NT>(op(buf, 2), LK, (const bf16 *)p.Qg + ch * CS * KP, KP);
        cp_tile<CS, KP, NT>(op(buf, 3), LK, (const bf16 *)p.Y + ch * CS * KP, KP);
        cp_tile<CS, BV, NT>(op(buf, 4), LB, dO + (tok0 * p.HV + hv) * VP + v0, (size_t)p.HV * VP, len);
        cp_tile<1, KP, NT>(sGl + buf * KP, KP, p.Gl + ch * KP, KP);
        cp_async_commit();
    };
    int c0, c1;
    seq_chunks(p, n, c0, c1);
    if (c0 < c1) issue(c1 - 1, 0);
    TcAcc<KP, BV> dS;
    dS.each_pair([&](int d, int j, float &x0, float &x1) {
        x0 = p.dht ? p.dht[sidx + (size_t)d * VP + v0 + j] : 0.0f;
        x1 = p.dht ? p.dht[sidx + (size_t)d * VP + v0 + j + 1] : 0.0f;
        st2(&sdSb[d * LB + j], x0, x1);
    });
    for (int c = c1 - 1; c >= c0; c--) {
        const int buf = (c1 - 1 - c) & 1;
        const size_t ch = (size_t)c * p.HV + hv;
        if (c > c0) {
            issue(c - 1, buf ^ 1);
            cp_async_wait<1>();
        } else cp_async_wait<0>();
        __syncthreads();
        dS.each_pair([&](int d, int j, float &x0, float &x1) {
            *reinterpret_cast<float2 *>(&p.dHs[ch * KP * VP + (size_t)d * VP + v0 + j]) = make_float2(x0, x1);
        });
        TcAcc<CS, BV> X;
        X.zero();
        X.template mma<true, false>(op(buf, 0), LC, op(buf, 4), LB, CS);
        X.template mma<false, false>(op(buf, 1), LK, sdSb, LB, KP);
        X.each_pair([&](int r, int j, float &a0, float &a1) {
            st2((bf16 *)p.dR + ch * CS * VP + (size_t)r * VP + v0 + j, a0, a1);
            st2(&sdRn[r * LB + j], -a0, -a1);
        });
        __syncthreads(); // -dR complete, every read of sdSb done
        const float *gl = sGl + buf * KP;
        dS.each_pair([&](int d, int j, float &x0, float &x1) {
            x0 *= gl[d];
            x1 *= gl[d];
        });
        dS.template mma<true, false>(op(buf, 2), LK, op(buf, 4), LB, CS);
        dS.template mma<true, false>(op(buf, 3), LK, sdRn, LB, CS);
        dS.each_pair([&](int d, int j, float &x0, float &x1) { st2(&sdSb[d * LB + j], x0, x1); });
        __syncthreads();
    }
    if (p.dh0)
        dS.each_pair([&](int d, int j, float &x0, float &x1) {
            *reinterpret_cast<float2 *>(&p.dh0[sidx + (size_t)d * VP + v0 + j]) = make_float2(x0, x1);
        });
}

// ------------------------------------------------------------------------------------------------
// k_bv_tc: value-side contractions per (chunk, hv) (as k_bv), and the WY part of the key side that
// needs all K channels at once (k_bk's first half), so that k_bk_tc can split the channels:
//   dAqk = tril(dO R^T),  dZ = A^T dR -> dv = dZ.w, dw = dZ.v
//   dY = -dR S0^T,  dQi = dO S0^T,  dKi = R dSC^T,  dGl = rowsum(S0 . dSC)   (64 key rows at a time)
//   dA = dR Z^T + dY E^T (Z = w.v, E = gamma.b.k from k_prep_tc),  dE = A^T dY  (-> p.dY)
//   dT = -tril(A^T tril(dA,-1) A^T, -1)  (-> p.dA1)
// dY, dA and M = tril(dA,-1) A^T are rounded to bf16 as the operands of the next product, as the
// generic k_bk's tensor-core products round them.
// ------------------------------------------------------------------------------------------------
template <int VP>
constexpr int bv_tc_smem_bytes() { return (5 * CS * (VP + 8) + CS * (CS + 8)) * 2; }

template <int KP, int VP>
__global__ __launch_bounds__(NT, 2) void k_bv_tc(ChunkParams p) {
    extern __shared__ __align__(16) unsigned char smb[];
    constexpr int LV = VP + 8, LC = CS + 8;
    bf16 *sdO = (bf16 *)smb, *sR = sdO + CS * LV, *sdR = sR + CS * LV, *sV = sdR + CS * LV, *sW = sV + CS * LV;
    bf16 *sA = sW + CS * LV;
    bf16 *sS0 = sV, *sdS = sW; // second phase: 64 key rows of S0 and dSC over v and w
    const int c = blockIdx.x, hv = blockIdx.y;
    int n, len;
    size_t tok0;
    chunk_info(p, c, n, tok0, len);
    const size_t ch = (size_t)c * p.HV + hv, io = (tok0 * p.HV + hv) * VP, gld = (size_t)p.HV * VP;
    cp_tile<CS, VP, NT>(sdO, LV, (const bf16 *)p.d_o + io, gld, len);
    cp_tile<CS, VP, NT>(sV, LV, (const bf16 *)p.v + io, gld, len);
    cp_tile<CS, VP, NT>(sW, LV, (const bf16 *)p.w + io, gld, len);
    cp_tile<CS, VP, NT>(sR, LV, (const bf16 *)p.R + ch * CS * VP, VP);
    cp_tile<CS, VP, NT>(sdR, LV, (const bf16 *)p.dR + ch * CS * VP, VP);
    cp_tile<CS, CS, NT>(sA, LC, (const bf16 *)p.A + ch * CS * CS, CS);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    TcAcc<CS, CS> dA; // dR Z^T, then += dY E^T over the key halves
    {
        TcAcc<CS, CS> X;
        X.zero();
        X.template mma<false, true>(sdO, LV, sR, LV, VP);
        X.each_pair([&](int r, int s, float &a0, float &a1) {
            st2(&p.dAqk[ch * CS * CS + r * CS + s], s <= r ? a0 : 0.0f, s + 1 <= r ? a1 : 0.0f);
        });
        dA.zero();
        dA.template mma<false, true, true>(sdR, LV, sV, LV, VP, sW);
    }
    {
        TcAcc<CS, VP> X;
        X.zero();
        X.template mma<true, false>(sA, LC, sdR, LV, CS);
        bf16 *dv = (bf16 *)p.dv, *dw = (bf16 *)p.dw;
        X.each_pair([&](int s, int e, float &a0, float &a1) {
            if (s < len) {
                const float2 wv = bf2_to_f2(&sW[s * LV + e]), vv = bf2_to_f2(&sV[s * LV + e]);
                const size_t idx = io + (size_t)s * gld + e;
                st2(dv + idx, a0 * wv.x, a1 * wv.y);
                st2(dw + idx, a0 * vv.x, a1 * vv.y);
            }
        });
    }
    constexpr int LPR = VP / 4; // lanes per row in the dSC pass (a warp covers whole rows)
    for (int kh = 0; kh < KP / 64; kh++) {
        __syncthreads(); // v, w (then the previous half) no longer read
        cp_tile<64, VP, NT>(sS0, LV, (const bf16 *)p.Hs + ch * KP * VP + (size_t)kh * 64 * VP, VP);
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();
        // dSC rows: fp32 -> bf16 operand, and dGl = rowsum(S0 . dSC) with the fp32 values
        for (int i = threadIdx.x; i < 64 * LPR; i += NT) {
            const int dd = i / LPR, e = (i % LPR) * 4;
            const float4 x = __ldg(reinterpret_cast<const float4 *>(p.dHs + ch * KP * VP + (size_t)(kh * 64 + dd) * VP + e));
            const float2 s01 = bf2_to_f2(&sS0[dd * LV + e]), s23 = bf2_to_f2(&sS0[dd * LV + e + 2]);
            float acc = x.x * s01.x + x.y * s01.y + x.z * s23.x + x.w * s23.y;
            st2(&sdS[dd * LV + e], x.x, x.y);
            st2(&sdS[dd * LV + e + 2], x.z, x.w);
#pragma unroll
            for (int o = LPR / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
            if (i % LPR == 0) p.dGl[ch * KP + kh * 64 + dd] = acc;
        }
        __syncthreads();
        const size_t ob = ch * CS * KP + kh * 64;
        TcAcc<CS, 64> X;
        X.zero();
        X.template mma<false, true>(sdO, LV, sS0, LV, VP);
        X.each_pair([&](int r, int dd, float &a0, float &a1) { st2(&p.dQi[ob + r * KP + dd], a0, a1); });
        X.zero();
        X.template mma<false, true>(sR, LV, sdS, LV, VP);
        X.each_pair([&](int r, int dd, float &a0, float &a1) { st2(&p.dKi[ob + r * KP + dd], a0, a1); });
        X.zero();
        X.template mma<false, true>(sdR, LV, sS0, LV, VP); // -dY
        __syncthreads(); // S0 and dSC no longer read: their tiles take E and dY of this key half
        bf16 *sE = sS0, *sdY = sdS;
        cp_tile<CS, 64, NT>(sE, LV, (const bf16 *)p.E + ob, KP);
        cp_async_commit();
        X.each_pair([&](int r, int dd, float &a0, float &a1) { st2(&sdY[r * LV + dd], -a0, -a1); });
        cp_async_wait<0>();
        __syncthreads();
        dA.template mma<false, true>(sdY, LV, sE, LV, 64);
        X.zero();
        X.template mma<true, false>(sA, LC, sdY, LV, CS);
        X.each_pair([&](int r, int dd, float &a0, float &a1) { st2(&p.dY[ob + r * KP + dd], a0, a1); });
    }
    // dT = -tril(A^T M, -1) with M = tril(dA,-1) A^T; the v, w tiles are free
    __syncthreads();
    bf16 *sdA = sV, *sM = sW;
    dA.each_pair([&](int r, int s, float &a0, float &a1) { st2(&sdA[r * LC + s], s < r ? a0 : 0.0f, s + 1 < r ? a1 : 0.0f); });
    __syncthreads();
    TcAcc<CS, CS> X;
    X.zero();
    X.template mma<false, true>(sdA, LC, sA, LC, CS);
    X.each_pair([&](int r, int s, float &a0, float &a1) { st2(&sM[r * LC + s], a0, a1); });
    __syncthreads();
    X.zero();
    X.template mma<true, false>(sA, LC, sM, LC, CS);
    X.each_pair([&](int r, int s, float &a0, float &a1) {
        st2(&p.dA1[ch * CS * CS + r * CS + s], s < r ? -a0 : 0.0f, s + 1 < r ? -a1 : 0.0f);
    });
}

// ------------------------------------------------------------------------------------------------
// k_bk_tc: the key side per (chunk, hv, 64-channel half kh), after k_bv_tc has reduced everything
// that needs all K channels (dT, dE = A^T dY). With gamma_r = 2^(G2_r - G2_start):
//   dq = scale gamma dQi + dq_in
//   dk = gamma dE.b + b.E' + dkt + 2^(G2_last-G2) dKi,      db = gamma dE.k + k.E'
//   dG = gamma dE.b.k + q.dq - ... (below), then dg = reverse cumulative sum of dG over the rows
// with dq_in, E', dkt the intra-chunk VJPs (intra_vjp_tc). q, k (L2-normalised over the whole row
// when asked), b and G2 of the half live in fp32 shared memory, dAqk and dT too (~103 KB: two blocks
// per SM); each gradient is written once, the cumulative sum runs in registers (warp shuffles) and
// across the four row blocks through shared memory. Per-hv results go to dQs, dKs, dBs, dGs for
// k_fin, as from k_bk.
// ------------------------------------------------------------------------------------------------
constexpr int BKH_LD = 68; // row stride of the [64][64] fp32 key tiles: 8 tq x gq lanes hit 32 banks
constexpr int bk_tc_smem_bytes() { return (6 * CS * BKH_LD + 9 * 64) * 4; } // + sSt [64], sEx [4][64], sTot [4][64]

template <int KP>
__global__ __launch_bounds__(NT, 2) void k_bk_tc(ChunkParams p) {
    extern __shared__ float sm[];
    constexpr int LD = BKH_LD;
    float *sQ = sm, *sK = sQ + CS * LD, *sB = sK + CS * LD, *sG = sB + CS * LD;
    float *sdAqk = sG + CS * LD, *sdT = sdAqk + CS * LD, *sSt = sdT + CS * LD, *sEx = sSt + 64, *sTot = sEx + 4 * 64;
    const int c = blockIdx.x, hv = blockIdx.y, kh = blockIdx.z, h = hv / p.G, d0 = kh * 64;
    int n, len;
    size_t tok0;
    chunk_info(p, c, n, tok0, len);
    const size_t ch = (size_t)c * p.HV + hv, ob = ch * CS * KP + d0;
    // dAqk and dT by cp.async; q, k, b (8 bf16 per 16-byte load) and g into registers, all in
    // flight at once, then widened (q, k times the row norms k_prep_tc kept) into fp32 tiles
    cp_tile<CS, CS, NT>(sdAqk, LD, p.dAqk + ch * CS * CS, CS);
    cp_tile<CS, CS, NT>(sdT, LD, p.dA1 + ch * CS * CS, CS);
    cp_async_commit();
    const bf16 *q = (const bf16 *)p.q, *k = (const bf16 *)p.k, *b = (const bf16 *)p.b;
    constexpr int P8 = CS * 8 / NT, P4 = CS * 16 / NT; // 16-byte pieces per thread: bf16 x 8, fp32 x 4
    uint4 u[3][P8];
    float4 g4[P4];
#pragma unroll
    for (int i = 0; i < P8; i++) {
        const int e = threadIdx.x + i * NT, r = e / 8, d = (e % 8) * 8;
        u[0][i] = u[1][i] = u[2][i] = make_uint4(0u, 0u, 0u, 0u);
        if (r < len) {
            const size_t idx = ((tok0 + r) * p.H + h) * KP + d0 + d;
            u[0][i] = __ldg(reinterpret_cast<const uint4 *>(q + idx));
            u[1][i] = __ldg(reinterpret_cast<const uint4 *>(k + idx));
            u[2][i] = __ldg(reinterpret_cast<const uint4 *>(b + idx));
        }
    }
#pragma unroll
    for (int i = 0; i < P4; i++) {
        const int e = threadIdx.x + i * NT, r = e / 16, d = (e % 16) * 4;
        g4[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (r < len) g4[i] = __ldg(reinterpret_cast<const float4 *>(p.g + ((tok0 + r) * p.H + h) * KP + d0 + d));
    }
#pragma unroll
    for (int i = 0; i < P8; i++) {
        const int e = threadIdx.x + i * NT, r = e / 8, d = (e % 8) * 8;
        const float nq = p.l2 ? p.Rn[ch * 2 * CS + r] : 1.0f, nk = p.l2 ? p.Rn[ch * 2 * CS + CS + r] : 1.0f;
        float *dst[3] = {sQ, sK, sB};
        const float nrm[3] = {nq, nk, 1.0f};
#pragma unroll
        for (int t = 0; t < 3; t++) {
            const uint32_t *w = reinterpret_cast<const uint32_t *>(&u[t][i]);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&w[j]));
                *reinterpret_cast<float2 *>(&dst[t][r * LD + d + 2 * j]) = make_float2(f.x * nrm[t], f.y * nrm[t]);
            }
        }
    }
#pragma unroll
    for (int i = 0; i < P4; i++) {
        const int e = threadIdx.x + i * NT, r = e / 16, d = (e % 16) * 4;
        float gv[4] = {g4[i].x, g4[i].y, g4[i].z, g4[i].w};
#pragma unroll
        for (int j = 0; j < 4; j++)
            if (p.gate && r < len) gv[j] = gate_fwd(gv[j], p.A_log[h], p.dt_bias[(size_t)h * p.K + d0 + d + j], p.lb);
        *reinterpret_cast<float4 *>(&sG[r * LD + d]) = make_float4(gv[0], gv[1], gv[2], gv[3]);
    }
    __syncthreads();
    gate_cumsum<64, LD>(sG, sSt);
    cp_async_wait<0>();
    __syncthreads();

    const int wp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane >> 2, tq = lane & 3, t = wp >> 1;
    float dG[2][8]; // this thread's dG of rows 16t + gq + 8h, local channels dbase + 8f + 2tq + c: [h][2f + c]
    // sum_r k.dKi-term per channel, deterministic (it was a shared-memory float atomicAdd per element, whose
    // order followed the warps' scheduling: the training step's bits differed between processes): this
    // thread's two rows (h = 0 then 1) in ex, the warp's 8 gq lanes by a butterfly, the 4 row blocks in
    // sEx [t][64], added in t order where it is read
    float ex[8];
#pragma unroll
    for (int u = 0; u < 8; u++) ex[u] = 0.0f;
    intra_vjp_tc<LD, LD>(sQ, sK, sB, sG, sdAqk, sdT, p.scale, (wp & 1) * 32, true,
                     [&](int hh, int f, int r, int dl, const float(&dq_in)[2], const float(&ept)[2], const float(&dkt)[2]) {
        const size_t o = ob + r * KP + dl;
        const float2 vE = *reinterpret_cast<const float2 *>(&p.dY[o]), vqi = *reinterpret_cast<const float2 *>(&p.dQi[o]);
        const float2 vki = *reinterpret_cast<const float2 *>(&p.dKi[o]);
        const float dE[2] = {vE.x, vE.y}, qi[2] = {vqi.x, vqi.y}, ki[2] = {vki.x, vki.y};
        float dq[2], dk[2], db[2];
#pragma unroll
        for (int cc = 0; cc < 2; cc++) {
            const int d = dl + cc;
            const float gr = sG[r * LD + d], gam = exp2f(gr - sSt[d]);
            const float qr = sQ[r * LD + d], kr = sK[r * LD + d], br = sB[r * LD + d];
            const float e = gam * dE[cc], dqi = p.scale * gam * qi[cc];
            const float dki = exp2f(sG[(CS - 1) * LD + d] - gr) * ki[cc];
            dq[cc] = dqi + dq_in[cc];
            dk[cc] = e * br + br * ept[cc] + dkt[cc] + dki;
            db[cc] = e * kr + kr * ept[cc];
            dG[hh][2 * f + cc] = e * br * kr + qr * dq[cc] + br * kr * ept[cc] - kr * (dkt[cc] + dki);
            ex[2 * f + cc] += kr * dki;
        }
        *reinterpret_cast<float2 *>(&p.dQs[o]) = make_float2(dq[0], dq[1]);
        *reinterpret_cast<float2 *>(&p.dKs[o]) = make_float2(dk[0], dk[1]);
        *reinterpret_cast<float2 *>(&p.dBs[o]) = make_float2(db[0], db[1]);
    });
    // dg_r = init + sum_{r' >= r} dG_r' (init: gamma_last rowsum(S0.dSC) + sum_r k.dKi-term, on G2_last).
    // Within the warp: suffix sums over gq (lanes 4 apart), row gq gets the 8 rows gq+8.. added; the
    // block totals of the later row blocks come through sTot.
    float tot[8];
#pragma unroll
    for (int u = 0; u < 8; u++) {
#pragma unroll
        for (int hh = 0; hh < 2; hh++)
#pragma unroll
            for (int off = 1; off < 8; off <<= 1) {
                const float x = __shfl_down_sync(0xffffffffu, dG[hh][u], 4 * off);
                if (gq + off < 8) dG[hh][u] += x;
            }
        const float lower = __shfl_sync(0xffffffffu, dG[1][u], tq); // sum of rows 8..15 of the block
        dG[0][u] += lower;
        tot[u] = dG[0][u]; // at gq == 0: the block total
    }
#pragma unroll
    for (int u = 0; u < 8; u++)
#pragma unroll
        for (int o = 4; o < 32; o <<= 1) ex[u] += __shfl_xor_sync(0xffffffffu, ex[u], o);
    if (gq == 0)
#pragma unroll
        for (int u = 0; u < 8; u++) {
            sTot[t * 64 + (wp & 1) * 32 + 8 * (u >> 1) + 2 * tq + (u & 1)] = tot[u];
            sEx[t * 64 + (wp & 1) * 32 + 8 * (u >> 1) + 2 * tq + (u & 1)] = ex[u];
        }
    __syncthreads(); // sTot and sEx complete
#pragma unroll
    for (int f = 0; f < 4; f++) {
        const int dl = (wp & 1) * 32 + 8 * f + 2 * tq;
        float add[2];
#pragma unroll
        for (int cc = 0; cc < 2; cc++) {
            const int d = dl + cc;
            const float ext = ((sEx[d] + sEx[64 + d]) + sEx[128 + d]) + sEx[192 + d];
            float a = exp2f(sG[(CS - 1) * LD + d] - sSt[d]) * p.dGl[ch * KP + d0 + d] + ext;
            for (int t2 = t + 1; t2 < 4; t2++) a += sTot[t2 * 64 + d];
            add[cc] = a;
        }
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            const size_t o = ob + (16 * t + gq + 8 * hh) * KP + dl;
            *reinterpret_cast<float2 *>(&p.dGs[o]) = make_float2(dG[hh][2 * f] + add[0], dG[hh][2 * f + 1] + add[1]);
        }
    }
}
