// Profiling of the chunk kernels (dev): GDN2_CUDA_PROFILE=1 times each launch with events (Prof);
// builds with -DGDN2_CUDA_CLOCKS also record per-phase clock64() marks inside k_prep_tc.
#ifndef GDN2_CUDA_CHUNK_PROF_CUH
#define GDN2_CUDA_CHUNK_PROF_CUH

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#include "host.cuh"

// dev: per-phase clock64() marks of k_prep_tc's first 1024 blocks, printed by GDN2_CUDA_PROFILE=1
// when built with NVFLAGS_EXTRA=-DGDN2_CUDA_CLOCKS (thread 0's view, after each phase's barrier).
#define PREP_MARKS 8
#ifdef GDN2_CUDA_CLOCKS
static __device__ long long g_prep_clk[1024][PREP_MARKS];
#define PREP_MARK(i)                                                                                   \
    do {                                                                                               \
        const unsigned blk_ = blockIdx.x + gridDim.x * blockIdx.y;                                     \
        if (threadIdx.x == 0 && blk_ < 1024) g_prep_clk[blk_][i] = clock64();                          \
    } while (0)
#else
#define PREP_MARK(i) \
    do {             \
    } while (0)
#endif

// GDN2_CUDA_PROFILE=1 in the environment: time each kernel with events and print the split.
static int profile_on(void) {
    static std::atomic<int> on_env{INT_MIN};
    return env_once(on_env, "GDN2_CUDA_PROFILE", [](const char *e) { return e && *e && *e != '0' ? 1 : 0; });
}
// One launch sequence's marks: an event recorded on the stream at each mark, the differences
// printed by report(). Marks past the array's end are counted and reported, not recorded.
struct Prof {
    static constexpr int MAX_MARKS = 8;
    cudaEvent_t ev[MAX_MARKS];
    const char *name[MAX_MARKS];
    int n = 0, dropped = 0;
    cudaStream_t st;
    explicit Prof(cudaStream_t s) : st(s) {}
    Prof(const Prof &) = delete;
    Prof &operator=(const Prof &) = delete;
    ~Prof() { release(); }
    void mark(const char *nm) {
        if (!profile_on()) return;
        if (n >= MAX_MARKS) {
            dropped++;
            return;
        }
        if (cudaEventCreate(&ev[n]) != cudaSuccess) return;
        cudaEventRecord(ev[n], st);
        name[n++] = nm;
    }
    void report(const char *what) {
        if (!profile_on() || n < 2) {
            release();
            return;
        }
        cudaEventSynchronize(ev[n - 1]);
        fprintf(stderr, "[gdn2 cuda profile] %s:", what);
        for (int i = 1; i < n; i++) {
            float ms = 0;
            cudaEventElapsedTime(&ms, ev[i - 1], ev[i]);
            fprintf(stderr, " %s %.3f ms", name[i], ms);
        }
        if (dropped) fprintf(stderr, " (%d marks past the first %d not recorded)", dropped, MAX_MARKS);
        fprintf(stderr, "\n");
        release();
    }
    void release() {
        for (int i = 0; i < n; i++) cudaEventDestroy(ev[i]);
        n = 0;
        dropped = 0;
    }
};

#endif
