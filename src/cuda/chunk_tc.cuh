// The bf16 fast path of the chunk kernels (included by chunk.cu after k_prep_tc): the scans, the
// output and the value-side backward.
//
// Used when the inputs are bf16 and K == KP, V == VP (64 or 128). The workspace tensors that the
// official kernels round to bf16 (GDN2.md §11.4) are stored in bf16 here too: Y, Qg, Kg, Aqk (and A
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
// ------------------------------------------------------------------------------------------------
template <int KP, int BV>
constexpr int state_tc_smem_bytes() {
    return 2 * 2 * CS * (KP + 8) * 2 + 2 * CS * (BV + 4) * 4 + 2 * KP * 4 + KP * (BV + 8) * 2 + CS * (BV + 8) * 2;
}

template <int KP, int VP, int BV>
__global__ __launch_bounds__(NT, 2) void k_state_tc(ChunkParams p) {
    extern __shared__ __align__(16) unsigned char smb[];
    constexpr int LK = KP + 8, LB = BV + 8, LU = BV + 4;
    bf16 *sY = (bf16 *)smb, *sK = sY + 2 * CS * LK;   // [2][CS][LK] each
    float *sU = (float *)(sK + 2 * CS * LK);           // [2][CS][LU]
    float *sGl = sU + 2 * CS * LU;                     // [2][KP]
    bf16 *sSb = (bf16 *)(sGl + 2 * KP), *sR = sSb + KP * LB; // [KP][LB], [CS][LB]
    const int n = blockIdx.y / p.HV, hv = blockIdx.y % p.HV, v0 = blockIdx.x * BV;
    const bf16 *gY = (const bf16 *)p.Y, *gK = (const bf16 *)p.Kg;
    bf16 *gH = (bf16 *)p.Hs, *gR = (bf16 *)p.R;
    const size_t sidx = (size_t)(n * p.HV + hv) * KP * VP;
    int c0, c1;
    seq_chunks(p, n, c0, c1);
    auto issue = [&](int c, int buf) {
        const size_t ch = (size_t)c * p.HV + hv;
        cp_tile<CS, KP, NT>(sY + buf * CS * LK, LK, gY + ch * CS * KP, KP);
        cp_tile<CS, KP, NT>(sK + buf * CS * LK, LK, gK + ch * CS * KP, KP);
        cp_tile<CS, BV, NT>(sU + buf * CS * LU, LU, p.U + ch * CS * VP + v0, VP);
        cp_tile<1, KP, NT>(sGl + buf * KP, KP, p.Gl + ch * KP, KP);
        cp_async_commit();
    };
    if (c0 < c1) issue(c0, 0);
    TcAcc<KP, BV> S; // the state, fp32, in the registers of the product that updates it
    S.each_pair([&](int d, int j, float &x0, float &x1) {
        x0 = p.h0 ? p.h0[sidx + (size_t)d * VP + v0 + j] : 0.0f;
        x1 = p.h0 ? p.h0[sidx + (size_t)d * VP + v0 + j + 1] : 0.0f;
        st2(&sSb[d * LB + j], x0, x1);
    });
    for (int c = c0; c < c1; c++) {
        const int buf = (c - c0) & 1;
        const size_t ch = (size_t)c * p.HV + hv;
        if (c + 1 < c1) {
            issue(c + 1, buf ^ 1);
            cp_async_wait<1>();
        } else cp_async_wait<0>();
        __syncthreads(); // chunk c's tiles and sSb (S at the chunk start) are visible
        for (int i = threadIdx.x; i < KP * BV / 8; i += NT) {
            const int d = i / (BV / 8), j = (i % (BV / 8)) * 8;
            *reinterpret_cast<uint4 *>(gH + ch * KP * VP + (size_t)d * VP + v0 + j) = *reinterpret_cast<const uint4 *>(sSb + d * LB + j);
        }
        TcAcc<CS, BV> X;
        X.zero();
        X.template mma<false, false>(sY + buf * CS * LK, LK, sSb, LB, KP);
        const float *u = sU + buf * CS * LU;
        X.each_pair([&](int r, int j, float &a0, float &a1) {
            const uint32_t pk = pack_bf16(u[r * LU + j] - a0, u[r * LU + j + 1] - a1);
            *reinterpret_cast<uint32_t *>(&sR[r * LB + j]) = pk;
            *reinterpret_cast<uint32_t *>(&gR[ch * CS * VP + (size_t)r * VP + v0 + j]) = pk;
        });
        __syncthreads(); // R complete, every read of sSb done
        const float *gl = sGl + buf * KP;
        S.each_pair([&](int d, int j, float &x0, float &x1) {
            x0 *= gl[d];
            x1 *= gl[d];
        });
        S.template mma<true, false>(sK + buf * CS * LK, LK, sR, LB, CS);
        S.each_pair([&](int d, int j, float &x0, float &x1) { st2(&sSb[d * LB + j], x0, x1); });
        __syncthreads(); // sSb holds the next chunk's start state; this chunk's buffers are free
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
// k_bv_tc: value-side contractions per (chunk, hv) (as k_bv):
//   dAqk = tril(dO R^T),  dA1 = dR Z^T (Z = w.v),  dZ = A^T dR -> dv = dZ.w, dw = dZ.v
//   dY = -dR S0^T,  dQi = dO S0^T,  dKi = R dSC^T,  dGl = rowsum(S0 . dSC)   (64 key rows at a time)
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
    {
        TcAcc<CS, CS> X;
        X.zero();
        X.template mma<false, true>(sdO, LV, sR, LV, VP);
        X.each_pair([&](int r, int s, float &a0, float &a1) {
            st2(&p.dAqk[ch * CS * CS + r * CS + s], s <= r ? a0 : 0.0f, s + 1 <= r ? a1 : 0.0f);
        });
        X.zero();
        X.template mma<false, true, true>(sdR, LV, sV, LV, VP, sW);
        X.each_pair([&](int r, int s, float &a0, float &a1) { st2(&p.dA1[ch * CS * CS + r * CS + s], a0, a1); });
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
        X.template mma<false, true>(sdR, LV, sS0, LV, VP);
        X.each_pair([&](int r, int dd, float &a0, float &a1) { st2(&p.dY[ob + r * KP + dd], -a0, -a1); });
        X.zero();
        X.template mma<false, true>(sdO, LV, sS0, LV, VP);
        X.each_pair([&](int r, int dd, float &a0, float &a1) { st2(&p.dQi[ob + r * KP + dd], a0, a1); });
        X.zero();
        X.template mma<false, true>(sR, LV, sdS, LV, VP);
        X.each_pair([&](int r, int dd, float &a0, float &a1) { st2(&p.dKi[ob + r * KP + dd], a0, a1); });
    }
}
