// What another choice of cuBLASLt algorithm would save in the training step (issue 16).
//
// The library (src/cuda/gemm.cu) takes cuBLASLt's first heuristic algorithm for each product, with the
// reduction schemes that run in a fixed order (none, or in the workspace). The step's products are
// 55-60 % of its time (bench/results/h100-attn3/: GEMM 204 of 373 ms in the profiled swa_gdn2_1.3B step,
// ~590 TFLOP/s). Before building any choice other than the first, measure what the choice is worth:
// for each weight shape of gdn2_1.3B / swa_gdn2_1.3B at N = B*T = 16384 tokens, the three products the
// library runs, with its layouts, C types and beta (src/cuda/gemm.cu's header):
//   fwd  Y = X W^T      op TN, m = out, n = N,   k = in,  C bf16, beta 0
//   dX   dX = dY W      op NN, m = in,  n = N,   k = out, C bf16, beta 0
//   dW   dW += dY^T X   op NT, m = in,  n = out, k = N,   C fp32, beta 1
// this prints the first algorithm's time, the fastest of the up to 32 the heuristic offers (same
// preferences: workspace 32 MiB, the library's reduction mask, 256-byte aligned operands), its index,
// and both in TFLOP/s. Each time: the median of 7 groups of 5 launches between two CUDA events, after a
// group of warm-up. Inputs are small random bf16 values (the time does not depend on them).
//
//   nvcc -O2 -std=c++17 -arch=sm_90a dev/cuda/gemm_train.cu -lcublasLt -lcublas -o /tmp/gemm_train && /tmp/gemm_train
//
// A faster algorithm would only be usable if the choice were fixed (timing-based choices differ between
// processes, and the bits with them: docs/BACKEND.md, Determinism).
//
// Second question (fifteenth session): the official trainer's own profile (bench/results/h100-conv/,
// official_train.json) sums its GEMM kernels to 132.7 ms a gdn2_1.3B step at B = 3 on an H100, where ours take
// ~150. torch reaches cuBLAS through cublasGemmEx (bf16 in and out, fp32 compute, cuBLAS's own heuristic) and
// computes a weight gradient as a bf16 product (beta 0) followed by an fp32 add into .grad. So each row also
// times that path ("gemmex": cublasGemmEx with CUBLAS_GEMM_DEFAULT, 32 MiB workspace; dW as bf16, beta 0, plus an
// fp32 add kernel of the dW's size), and the end prints both sums weighted by gdn2_1.3B's calls a step
// (18 layers; the low-rank products as they are). Usage: /tmp/gemm_train [N tokens, default 16384] [quick]
// (quick: the first algorithm and torch's path only, no sweep).
//
// Fourth (seventeenth session): each row also names the first algorithm's configuration (algo id, tile, stages,
// cluster, split-k: cublasLt.h's enums) and times the first algorithm of a heuristic queried without the library's
// preferences ("no prefs": any reduction scheme, default alignment). dev/cuda/torch_gemm.py times torch's own calls
// at the same shapes, with the kernels they run.
//
// Third question (sixteenth session): the official's products are cuBLAS's nvjet kernels (192x192 and 256x128 tiles
// in its profile) from the cuBLAS torch bundles. Built against that copy instead of the toolkit's (run50.sh:
// -I/-L site-packages/nvidia/cublas), the same rows say whether the cuBLAS version is the difference.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#include "dev_check.h"

static size_t WS_BYTES = 32u << 20; // the library's GDN2_LT_WORKSPACE_BYTES; GEMM_WS_MB=n: another size
static cublasLtHandle_t g_lt;
static void *g_ws;
static cudaStream_t g_st;
static cudaEvent_t g_e0, g_e1;

static int cmpf(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    const void *A, *B;
    void *C;
    float beta;
} prod;

static int run(const prod *p, const cublasLtMatmulAlgo_t *algo) {
    const float alpha = 1.0f;
    return cublasLtMatmul(g_lt, p->op, &alpha, p->A, p->la, p->B, p->lb, &p->beta, p->C, p->lc, p->C, p->lc, algo, g_ws,
                          WS_BYTES, g_st) == CUBLAS_STATUS_SUCCESS;
}

// median over 7 groups of the per-call time of 5 back-to-back calls of launch() (ms), after a warm-up group;
// < 0: a call refused
template <class F> static float median_ms(F launch) {
    float t[7];
    for (int g = -1; g < 7; g++) {
        CK(cudaEventRecord(g_e0, g_st));
        for (int i = 0; i < 5; i++)
            if (!launch()) return -1.0f;
        CK(cudaEventRecord(g_e1, g_st));
        CK(cudaEventSynchronize(g_e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, g_e0, g_e1));
        if (g >= 0) t[g] = ms / 5.0f;
    }
    qsort(t, 7, sizeof t[0], cmpf);
    return t[3];
}
static float time_ms(const prod *p, const cublasLtMatmulAlgo_t *algo) { return median_ms([&] { return run(p, algo); }); }

static cublasHandle_t g_cb;
static int g_quick; // "quick": the heuristic's first algorithm only (no sweep of the others)
__global__ void k_add_f32(float *acc, const __nv_bfloat16 *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        acc[i] += __bfloat162float(x[i]);
}
// torch's path for the same product: cublasGemmEx, bf16 C = D, beta 0; with add_n > 0 also an fp32 add of add_n
// elements of C into acc (a weight gradient's .grad += bf16 product). c32: instead the library's dW form through
// cublasGemmEx (C fp32, beta 1, in place; cuBLAS's own choice of kernel for our arithmetic).
static float gemmex_ms(cublasOperation_t ta, cublasOperation_t tb, long m, long n, long k, const void *A,
                       const void *B, void *C, float *acc, size_t add_n, int c32) {
    const float alpha = 1.0f, beta = c32 ? 1.0f : 0.0f;
    if (c32) C = acc, add_n = 0;
    return median_ms([&] {
        if (cublasGemmEx(g_cb, ta, tb, (int)m, (int)n, (int)k, &alpha, A, CUDA_R_16BF, ta == CUBLAS_OP_N ? (int)m : (int)k,
                         B, CUDA_R_16BF, tb == CUBLAS_OP_N ? (int)k : (int)n, &beta, C, c32 ? CUDA_R_32F : CUDA_R_16BF,
                         (int)m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS)
            return 0;
        if (add_n) k_add_f32<<<1024, 256, 0, g_st>>>(acc, (const __nv_bfloat16 *)C, add_n);
        return 1;
    });
}

// C [m,n] (ldc m) = op(A) op(B) (+ C), column-major as cuBLASLt sees the library's row-major buffers: each
// algorithm the heuristic offers, timed; returns the library's time (the heuristic's first algorithm), ms;
// *ex: torch's path (gemmex_ms)
static float sweep(const char *what, const char *kind, cublasOperation_t ta, cublasOperation_t tb, long m, long n,
                  long k, cudaDataType_t cdt, float beta, const void *A, const void *B, void *C, double *sum_first,
                  double *sum_best, void *Cb, float *ex) {
    prod p;
    p.A = A, p.B = B, p.C = C, p.beta = beta;
    LK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    int32_t tA = ta, tB = tb;
    LK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &tA, sizeof tA));
    LK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tB, sizeof tB));
    LK(cublasLtMatrixLayoutCreate(&p.la, CUDA_R_16BF, ta == CUBLAS_OP_N ? m : k, ta == CUBLAS_OP_N ? k : m,
                                  ta == CUBLAS_OP_N ? m : k));
    LK(cublasLtMatrixLayoutCreate(&p.lb, CUDA_R_16BF, tb == CUBLAS_OP_N ? k : n, tb == CUBLAS_OP_N ? n : k,
                                  tb == CUBLAS_OP_N ? k : n));
    LK(cublasLtMatrixLayoutCreate(&p.lc, cdt, m, n, m));
    cublasLtMatmulPreference_t pref;
    LK(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t wsb = WS_BYTES;
    uint32_t red = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE |
                   CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE;
    uint32_t al = 256;
    LK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
    LK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red, sizeof red));
    LK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al, sizeof al));
    LK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al, sizeof al));
    LK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al, sizeof al));
    LK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al, sizeof al));
    cublasLtMatmulHeuristicResult_t res[32];
    int nres = 0;
    const cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(g_lt, p.op, p.la, p.lb, p.lc, p.lc, pref, 32, res, &nres);
    float first = -1, best = 1e30f;
    int besti = -1;
    for (int a = 0; hs == CUBLAS_STATUS_SUCCESS && a < (g_quick && nres > 1 ? 1 : nres); a++) {
        const float ms = time_ms(&p, &res[a].algo);
        if (ms < 0) continue;
        if (a == 0) first = ms;
        if (ms < best) best = ms, besti = a;
    }
    // the first algorithm's configuration (id, tile, stages, cluster shape, split-k: cublasLt.h's enums), and the
    // first algorithm of a heuristic without the library's preferences (any reduction scheme, default alignment):
    // what the determinism and alignment preferences cost, if anything
    int cfg[5] = {-1, -1, -1, -1, -1};
    const cublasLtMatmulAlgoConfigAttributes_t ca[5] = {CUBLASLT_ALGO_CONFIG_ID, CUBLASLT_ALGO_CONFIG_TILE_ID,
                                                        CUBLASLT_ALGO_CONFIG_STAGES_ID,
                                                        CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID,
                                                        CUBLASLT_ALGO_CONFIG_SPLITK_NUM};
    for (int c = 0; nres > 0 && c < 5; c++) {
        size_t got = 0;
        uint32_t v = 0;
        if (cublasLtMatmulAlgoConfigGetAttribute(&res[0].algo, ca[c], &v, sizeof v, &got) == CUBLAS_STATUS_SUCCESS)
            cfg[c] = (int)v;
    }
    float freet = -1;
    {
        cublasLtMatmulPreference_t pf;
        LK(cublasLtMatmulPreferenceCreate(&pf));
        LK(cublasLtMatmulPreferenceSetAttribute(pf, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
        cublasLtMatmulHeuristicResult_t fr;
        int nf = 0;
        if (cublasLtMatmulAlgoGetHeuristic(g_lt, p.op, p.la, p.lb, p.lc, p.lc, pf, 1, &fr, &nf) == CUBLAS_STATUS_SUCCESS &&
            nf > 0)
            freet = time_ms(&p, &fr.algo);
        cublasLtMatmulPreferenceDestroy(pf);
    }
    const double tf = 2.0 * m * n * k / 1e12;
    // torch's path: a dW (fp32 C, beta 1 here) is its bf16 product plus the fp32 add
    *ex = gemmex_ms(ta, tb, m, n, k, A, B, Cb, cdt == CUDA_R_32F ? (float *)C : NULL,
                    cdt == CUDA_R_32F ? (size_t)m * n : 0, 0);
    const float ex32 = cdt == CUDA_R_32F ? gemmex_ms(ta, tb, m, n, k, A, B, Cb, (float *)C, 0, 1) : -1.0f;
    if (first < 0)
        printf("%-12s %-4s %6ld %6ld %6ld | first algorithm refused (heuristic status %d, %d results)\n", what, kind, m,
               n, k, (int)hs, nres);
    else {
        printf("%-12s %-4s %6ld %6ld %6ld | first %7.3f ms %5.0f TFLOP/s | best %7.3f ms %5.0f TFLOP/s (#%d of %d) | %+5.1f %% | gemmex%s %7.3f ms",
               what, kind, m, n, k, first, tf / (first * 1e-3), best, tf / (best * 1e-3), besti, nres,
               100.0 * (best - first) / first, cdt == CUDA_R_32F ? " bf16+add" : "", *ex);
        if (ex32 >= 0) printf(" | gemmex fp32 beta 1 %7.3f ms", ex32);
        printf(" | algo %d tile %d stages %d cluster %d splitk %d | no prefs %7.3f ms\n", cfg[0], cfg[1], cfg[2], cfg[3],
               cfg[4], freet);
        *sum_first += first, *sum_best += best;
    }
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(p.la), cublasLtMatrixLayoutDestroy(p.lb), cublasLtMatrixLayoutDestroy(p.lc);
    cublasLtMatmulDescDestroy(p.op);
    return first;
}

__global__ void k_fill(__nv_bfloat16 *x, size_t n, unsigned seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        unsigned s = (unsigned)i * 2654435761u ^ seed;
        s ^= s >> 13, s *= 0x5bd1e995u, s ^= s >> 15;
        x[i] = __float2bfloat16(((float)(s & 0xffff) / 65536.0f - 0.5f) * 0.1f);
    }
}

int main(int argc, char **argv) {
    const long N = argc > 1 ? atol(argv[1]) : 16384; // tokens: B x T (16384 = 4 x 4096, 12288 = 3 x 4096)
    if (N <= 0 || (argc > 2 && strcmp(argv[2], "quick") && strcmp(argv[2], "all"))) {
        fprintf(stderr, "usage: gemm_train [N tokens > 0, default 16384] [quick|all] [rows whose name contains this]\n"
                        "  env GEMM_WS_MB=n: a workspace of n MiB (default 32, the library's)\n");
        return 2;
    }
    g_quick = argc > 2 && !strcmp(argv[2], "quick");
    const char *only = argc > 3 ? argv[3] : NULL;
    if (getenv("GEMM_WS_MB")) WS_BYTES = (size_t)atol(getenv("GEMM_WS_MB")) << 20;
    if (WS_BYTES == 0) {
        fprintf(stderr, "gemm_train: GEMM_WS_MB must be a positive number of MiB\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); // a row at a time: a run cut short keeps what it measured
    // (what, out, in, calls a gdn2_1.3B step): its weights (d 2304, H K = HV V = 2048, rank 128, MLP 6208),
    // then swa_gdn2_1.3B's MLP (6784; not in the weighted sum)
    const struct { const char *what; long out, in; int calls; } w[] = {
        {"q k v b w", 2048, 2304, 5 * 18}, {"o_proj", 2304, 2048, 18},  {"f0 g0", 128, 2304, 2 * 18},
        {"f1 g1", 2048, 128, 2 * 18},      {"w1 w2 6208", 6208, 2304, 2 * 18}, {"w3 6208", 2304, 6208, 18},
        {"lm_head", 32000, 2304, 1},       {"w1 w2 6784", 6784, 2304, 0},      {"w3 6784", 2304, 6784, 0}};
    const int nw = (int)(sizeof w / sizeof w[0]);
    LK(cublasLtCreate(&g_lt));
    LK(cublasCreate(&g_cb));
    CK(cudaMalloc(&g_ws, WS_BYTES));
    CK(cudaStreamCreate(&g_st));
    LK(cublasSetStream(g_cb, g_st));
    void *cb_ws;
    CK(cudaMalloc(&cb_ws, WS_BYTES));
    LK(cublasSetWorkspace(g_cb, cb_ws, WS_BYTES)); // torch's default on Hopper: 32 MiB
    CK(cudaEventCreate(&g_e0));
    CK(cudaEventCreate(&g_e1));
    const size_t maxw = 32000 * 2304, maxa = (size_t)N * 32000;
    __nv_bfloat16 *W, *X, *Y, *Wb;
    float *dW;
    CK(cudaMalloc(&W, maxw * 2));
    CK(cudaMalloc(&Wb, maxw * 2));
    CK(cudaMalloc(&X, maxa * 2));
    CK(cudaMalloc(&Y, maxa * 2));
    CK(cudaMalloc(&dW, maxw * 4));
    k_fill<<<1024, 256, 0, g_st>>>(W, maxw, 1u);
    k_fill<<<4096, 256, 0, g_st>>>(X, maxa, 2u);
    k_fill<<<4096, 256, 0, g_st>>>(Y, maxa, 3u);
    CK(cudaMemsetAsync(dW, 0, maxw * 4, g_st));
    CK(cudaStreamSynchronize(g_st));
    int rt = 0;
    CK(cudaRuntimeGetVersion(&rt));
    // which cuBLAS: torch bundles its own (pip nvidia-cublas-cu12), so the same program built against that copy
    // answers whether the library version, not the call, makes the official's products faster
    printf("cuBLASLt %zu (headers %d.%d.%d), CUDA runtime %d\n", cublasLtGetVersion(), CUBLAS_VER_MAJOR, CUBLAS_VER_MINOR,
           CUBLAS_VER_PATCH, rt);
    printf("N = %ld tokens; m n k as cuBLASLt sees them (column-major); times per launch\n", N);
    double f_all = 0, b_all = 0, step_lib = 0, step_ex = 0;
    printf("workspace %zu MiB%s%s\n", WS_BYTES >> 20, only ? "; rows containing " : "", only ? only : "");
    for (int i = 0; i < nw; i++) {
        if (only && !strstr(w[i].what, only)) continue;
        const long out = w[i].out, in = w[i].in;
        float ex, t;
        double f = 0, b = 0;
        // fwd: Y^T [out,N] = W^T(T) . X^T
        t = sweep(w[i].what, "fwd", CUBLAS_OP_T, CUBLAS_OP_N, out, N, in, CUDA_R_16BF, 0.0f, W, X, Y, &f, &b, Y, &ex);
        step_lib += w[i].calls * (double)t, step_ex += w[i].calls * (double)ex;
        // dX^T [in,N] = W^T [in,out] . dY^T [out,N]
        t = sweep(w[i].what, "dX", CUBLAS_OP_N, CUBLAS_OP_N, in, N, out, CUDA_R_16BF, 0.0f, W, Y, X, &f, &b, X, &ex);
        step_lib += w[i].calls * (double)t, step_ex += w[i].calls * (double)ex;
        // dW^T [in,out] += X^T [in,N] . (dY^T [out,N])^T   (torch: a bf16 dW, then .grad += it in fp32)
        t = sweep(w[i].what, "dW", CUBLAS_OP_N, CUBLAS_OP_T, in, out, N, CUDA_R_32F, 1.0f, X, Y, dW, &f, &b, Wb, &ex);
        step_lib += w[i].calls * (double)t, step_ex += w[i].calls * (double)ex;
        f_all += f, b_all += b;
    }
    printf("sum over the rows (one of each, not weighted by the step's call counts): first %.2f ms, best %.2f ms (%+.1f %%)\n",
           f_all, b_all, 100.0 * (b_all - f_all) / f_all);
    printf("gdn2_1.3B step, weighted by its calls: library (cuBLASLt first algorithm, fp32 dW beta 1) %.1f ms; "
           "torch's path (cublasGemmEx, bf16 dW + fp32 add) %.1f ms (%+.1f %%)\n",
           step_lib, step_ex, 100.0 * (step_ex - step_lib) / step_lib);
    return 0;
}
