/* The local communicator: ranks are processes of one machine sharing an anonymous MAP_SHARED
 * arena made before the launcher forks. Per rank a slot of SLOT_FLOATS floats and a few doubles;
 * every collective is: copy in -> barrier -> read every slot in rank order -> barrier.
 * Barrier: each rank counts the barriers it has passed (arrive[rank]); a rank waits until every
 * rank's count reaches its own, yielding the CPU while it waits. A rank that does not arrive within
 * the timeout, whose process is gone, or that marked itself failed, makes the waiting ranks fail
 * with a message naming it. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "../util/internal.h"
#include "comm.h"

enum { MAX_RANKS = 64, HOST_DOUBLES = 64 };
#define SLOT_FLOATS ((size_t)1 << 20) /* 4 MiB per rank per chunk */

struct gdn2_local_arena {
    int world;
    double timeout_s;
    size_t bytes;
    _Atomic long pid[MAX_RANKS];
    _Atomic unsigned long arrive[MAX_RANKS];
    _Atomic int failed[MAX_RANKS];
    double host[MAX_RANKS][HOST_DOUBLES];
    float slots[]; /* world * SLOT_FLOATS */
};

typedef struct {
    gdn2_local_arena *a;
    unsigned long passed; /* barriers this rank has passed */
} local_ctx;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int gdn2_comm_local_arena(int world, double timeout_s, gdn2_local_arena **out) {
    *out = NULL;
    if (world < 1 || world > MAX_RANKS)
        return gdn2_error(GDN2_ERR_ARG, "local ranks: %d ranks, expected 1..%d", world, MAX_RANKS);
    const size_t bytes = sizeof(gdn2_local_arena) + (size_t)world * SLOT_FLOATS * sizeof(float);
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return gdn2_error(GDN2_ERR_NOMEM, "local ranks: shared arena of %zu bytes: %s", bytes, strerror(errno));
    gdn2_local_arena *a = p; /* mmap'ed memory is zero */
    a->world = world;
    a->timeout_s = timeout_s > 0 ? timeout_s : 600.0;
    a->bytes = bytes;
    *out = a;
    return GDN2_OK;
}

void gdn2_comm_local_arena_free(gdn2_local_arena *a) {
    if (a) munmap(a, a->bytes);
}

void gdn2_comm_local_set_pid(gdn2_local_arena *a, int rank, long pid) {
    if (a && rank >= 0 && rank < a->world) atomic_store(&a->pid[rank], pid);
}

/* wait until every rank has passed as many barriers as this one is about to */
static int barrier(gdn2_comm *c) {
    local_ctx *x = c->ctx;
    gdn2_local_arena *a = x->a;
    const unsigned long target = ++x->passed;
    atomic_store(&a->arrive[c->rank], target);
    const double t0 = now_s();
    for (unsigned long spin = 0;; spin++) {
        int late = -1;
        for (int r = 0; r < a->world; r++) {
            if (atomic_load(&a->failed[r]))
                return gdn2_error(GDN2_ERR_DEVICE, "rank %d of %d failed; rank %d stops", r, a->world, c->rank);
            if (atomic_load(&a->arrive[r]) < target && late < 0) late = r;
        }
        if (late < 0) return GDN2_OK;
        if ((spin & 255) == 255) {
            const long pid = atomic_load(&a->pid[late]);
            if (pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH)
                return gdn2_error(GDN2_ERR_DEVICE, "rank %d of %d (pid %ld) is gone; rank %d stops", late, a->world,
                                  pid, c->rank);
            if (now_s() - t0 > a->timeout_s)
                return gdn2_error(GDN2_ERR_DEVICE, "rank %d of %d did not reach a collective within %.0f s; rank %d stops",
                                  late, a->world, a->timeout_s, c->rank);
            struct timespec ts = {0, 100000}; /* 0.1 ms: ranks may outnumber the cores */
            nanosleep(&ts, NULL);
        } else {
            sched_yield();
        }
    }
}

static float *slot(gdn2_local_arena *a, int r) { return a->slots + (size_t)r * SLOT_FLOATS; }

static int all_reduce(gdn2_comm *c, float *buf, size_t n) {
    gdn2_local_arena *a = ((local_ctx *)c->ctx)->a;
    int st;
    for (size_t off = 0; off < n; off += SLOT_FLOATS) {
        const size_t len = n - off < SLOT_FLOATS ? n - off : SLOT_FLOATS;
        memcpy(slot(a, c->rank), buf + off, len * sizeof(float));
        if ((st = barrier(c))) return st;
        /* buf = slot_0 + slot_1 + ... in rank order: the same bits on every rank */
        memcpy(buf + off, slot(a, 0), len * sizeof(float));
        for (int r = 1; r < a->world; r++) {
            const float *s = slot(a, r);
            for (size_t i = 0; i < len; i++) buf[off + i] += s[i];
        }
        if ((st = barrier(c))) return st;
    }
    return GDN2_OK;
}

static int reduce_scatter(gdn2_comm *c, const float *in, float *out, size_t shard) {
    gdn2_local_arena *a = ((local_ctx *)c->ctx)->a;
    const int W = a->world;
    const size_t csz = SLOT_FLOATS / (size_t)W; /* per destination rank, per round */
    int st;
    for (size_t i0 = 0; i0 < shard; i0 += csz) {
        const size_t len = shard - i0 < csz ? shard - i0 : csz;
        float *mine = slot(a, c->rank);
        for (int j = 0; j < W; j++) memcpy(mine + (size_t)j * csz, in + (size_t)j * shard + i0, len * sizeof(float));
        if ((st = barrier(c))) return st;
        memcpy(out + i0, slot(a, 0) + (size_t)c->rank * csz, len * sizeof(float));
        for (int r = 1; r < W; r++) {
            const float *s = slot(a, r) + (size_t)c->rank * csz;
            for (size_t i = 0; i < len; i++) out[i0 + i] += s[i];
        }
        if ((st = barrier(c))) return st;
    }
    return GDN2_OK;
}

static int all_gather(gdn2_comm *c, const void *in, void *out, size_t bytes) {
    gdn2_local_arena *a = ((local_ctx *)c->ctx)->a;
    const size_t cap = SLOT_FLOATS * sizeof(float);
    int st;
    for (size_t off = 0; off < bytes; off += cap) {
        const size_t len = bytes - off < cap ? bytes - off : cap;
        memmove(slot(a, c->rank), (const char *)in + off, len);
        if ((st = barrier(c))) return st;
        for (int r = 0; r < a->world; r++) memcpy((char *)out + (size_t)r * bytes + off, slot(a, r), len);
        if ((st = barrier(c))) return st;
    }
    return GDN2_OK;
}

static int all_reduce_host(gdn2_comm *c, double *v, int n) {
    gdn2_local_arena *a = ((local_ctx *)c->ctx)->a;
    if (n < 0 || n > HOST_DOUBLES) return gdn2_error(GDN2_ERR_ARG, "all_reduce_host: %d values, at most %d", n, HOST_DOUBLES);
    int st;
    memcpy(a->host[c->rank], v, (size_t)n * sizeof(double));
    if ((st = barrier(c))) return st;
    for (int i = 0; i < n; i++) {
        double s = 0.0;
        for (int r = 0; r < a->world; r++) s += a->host[r][i];
        v[i] = s;
    }
    return barrier(c);
}

static void destroy(gdn2_comm *c) {
    if (!c) return;
    free(c->ctx);
    free(c);
}

int gdn2_comm_local(gdn2_local_arena *a, int rank, gdn2_comm **out) {
    *out = NULL;
    if (!a || rank < 0 || rank >= a->world)
        return gdn2_error(GDN2_ERR_ARG, "local communicator: rank %d outside [0, %d)", rank, a ? a->world : 0);
    gdn2_comm *c = calloc(1, sizeof *c);
    local_ctx *x = calloc(1, sizeof *x);
    if (!c || !x) {
        free(c), free(x);
        return gdn2_error(GDN2_ERR_NOMEM, "out of memory for a communicator");
    }
    x->a = a;
    c->name = "local", c->rank = rank, c->world = a->world, c->ctx = x;
    c->all_reduce = all_reduce, c->reduce_scatter = reduce_scatter, c->all_gather = all_gather;
    c->all_reduce_host = all_reduce_host, c->barrier = barrier, c->destroy = destroy;
    *out = c;
    return GDN2_OK;
}

/* mark this rank failed so that the others stop at their next collective instead of timing out */
void gdn2_comm_local_fail(gdn2_comm *c) {
    if (c && c->name && !strcmp(c->name, "local")) atomic_store(&((local_ctx *)c->ctx)->a->failed[c->rank], 1);
}
