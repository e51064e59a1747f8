// Reverse cumulative sum of dG at the end of k_bk (src/cuda/chunk.cu), version 3. Included in
// place of that loop when built with -DGDN2_CUDA_V3. Written 2026-11-28 without a GPU.
// What changed: the loop in chunk.cu runs on KP of the 256 threads, each a chain of 64 dependent
// global read-modify-writes of dGs (the load of row r - 1 cannot start before the store of row r
// is issued: same pointer), ~64 L2 latencies per block, ~0.5-1 ms of k_bk at
// (8,4096,16,128,128). Here every thread (channel d, row part of CS/(NT/KP) rows) issues all its
// loads at once, sums its part from the bottom up in registers, and adds the totals of the later
// parts (through shared memory, the A region, which nothing reads any more) and the chunk-end
// terms. Summation order differs from the serial loop only by fp32 rounding.
// Expected gain (not measured): ~0.5 ms of k_bk at (8,4096,16,128,128).
// Uses the names of k_bk: sG, sSt, sEx, sA, ob, ch, p, LDK, KP.
    {
        constexpr int NP = NT / KP, NRW = CS / NP;
        static_assert(NP * KP == NT && NP * NRW == CS, "cumsum parts");
        const int d = threadIdx.x % KP, part = threadIdx.x / KP, rb = part * NRW;
        float x[NRW];
#pragma unroll
        for (int i = 0; i < NRW; i++) x[i] = p.dGs[ob + (rb + i) * KP + d];
#pragma unroll
        for (int i = NRW - 2; i >= 0; i--) x[i] += x[i + 1];
        float *sPart = sA;
        sPart[part * KP + d] = x[0];
        __syncthreads();
        float base = exp2f(sG[(CS - 1) * LDK + d] - sSt[d]) * p.dGl[ch * KP + d] + sEx[d];
        for (int j = NP - 1; j > part; j--) base += sPart[j * KP + d];
#pragma unroll
        for (int i = 0; i < NRW; i++) p.dGs[ob + (rb + i) * KP + d] = x[i] + base;
    }
