// Variant of the intra-chunk VJP block of k_bk (src/cuda/chunk.cu), kept for the next device
// session. This is the version that ran in device call 2 (2026-11-28 17:41 UTC, H200): all tests
// passed, and k_bk took 8.41 ms at (8,4096,16,128,128) bf16. The two-pass version now in
// src/cuda/chunk.cu (register accumulators over the thread's rows) passed the same tests in call 3
// but took 14.03 ms: a regression noticed after the last device call. Swapping this block back in
// (it replaces the block that starts at "intra-chunk VJPs" and ends with atomicAdd(&sEx[d], ex))
// should give back ~5.6 ms of fwd+bwd at that shape; check it on the device before adopting it.
// Uses the names of k_bk: sQ, sK, sB, sG, sdA (= dT), sdAqk, sSt, sEx, ob, p, LDK, KP.
    {
        constexpr int RS = NT / KP;
        const int d = threadIdx.x % KP, r0 = threadIdx.x / KP;
        const float g2l = sG[(CS - 1) * LDK + d];
        float ex = 0.0f;
        for (int r = r0; r < CS; r += RS) {
            const float g2r = sG[r * LDK + d], qr = sQ[r * LDK + d], kr = sK[r * LDK + d], br = sB[r * LDK + d];
            float dqa = 0, ep = 0, dkq = 0, dkb = 0;
            for (int s = 0; s <= r; s++) {
                float e = exp2f(g2r - sG[s * LDK + d]) * sK[s * LDK + d];
                dqa = fmaf(sdAqk[r * 65 + s], e, dqa);
                ep = fmaf(sdA[r * 65 + s], e, ep); // dT is zero on the diagonal
            }
            for (int r2 = r; r2 < CS; r2++) {
                float e = exp2f(sG[r2 * LDK + d] - g2r);
                dkq = fmaf(sdAqk[r2 * 65 + r] * sQ[r2 * LDK + d], e, dkq);
                dkb = fmaf(sdA[r2 * 65 + r] * sB[r2 * LDK + d] * sK[r2 * LDK + d], e, dkb);
            }
            const float dq_in = p.scale * dqa, dkt = p.scale * dkq + dkb;
            const float dqi = p.scale * exp2f(g2r - sSt[d]) * p.dQi[ob + r * KP + d];
            const float dki = exp2f(g2l - g2r) * p.dKi[ob + r * KP + d];
            const size_t o = ob + r * KP + d;
            p.dQs[o] = dqi + dq_in;
            p.dKs[o] += br * ep + dkt + dki;
            p.dBs[o] += kr * ep;
            p.dGs[o] += qr * (dq_in + dqi) + br * kr * ep - kr * (dkt + dki);
            ex += kr * dki;
        }
        atomicAdd(&sEx[d], ex);
    }
