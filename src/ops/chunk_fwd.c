/* fp32 chunkwise (WY, chunk 64) forward of GDN-2 on the CPU (docs/ALGORITHM.md §2).
 *
 * Per (sequence, value head), chunk by chunk with the state S (K x V) carried in fp32:
 *   scores Aqk, T (F2) -> A = (I+T)^-1 (F3) -> [Y|U] = A[Ē|Z] (F4) -> R = U − Y S (F5)
 *   O = scale·(q̂⊙γ) S + Aqk R (F6) -> S <- Diag(γ_last) S + kgᵀ R (F7)
 * The block products go through gdn2_sgemm; OpenMP runs over (sequence, value head). */
#include <stdlib.h>
#include <string.h>

#include "chunk_common.h"
#include "gate.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* tasks of the forward: (sequence, value head); of the backward: (sequence, key head) */
static int64_t n_tasks(const gdn2_dims *d, const gdn2_opts *o, int backward) {
    return gdn2_num_states(d, o) * (backward ? d->H : d->HV);
}

static int64_t max_seq_len(const gdn2_dims *d, const gdn2_opts *o) {
    if (!o->cu_seqlens) return d->T;
    int64_t m = 0;
    for (int64_t i = 0; i < o->n_seqs; i++) {
        int64_t l = o->cu_seqlens[i + 1] - o->cu_seqlens[i];
        if (l > m) m = l;
    }
    return m;
}

/* threads actually used: the requested count, capped by the number of tasks */
int gdn2_chunk_threads(const gdn2_dims *d, const gdn2_opts *o, int backward) {
    int64_t nt = gdn2_threads(o->n_threads), tasks = n_tasks(d, o, backward);
    if (nt > tasks) nt = tasks;
    return nt < 1 ? 1 : (int)nt;
}

size_t gdn2_chunk_per_thread_floats(const gdn2_dims *d, const gdn2_opts *o, int backward) {
    size_t f = gdn2_chunk_ws_floats(d->K, d->V);
    if (backward) f += gdn2_chunk_bwd_extra_floats(d->K, d->V, max_seq_len(d, o));
    return f + 16;
}

size_t gdn2_chunk_workspace_size(const gdn2_dims *d, const gdn2_opts *o, int backward) {
    if (!d || !o || gdn2_check(d, o) != GDN2_OK) return 0;
    return (size_t)gdn2_chunk_threads(d, o, backward) * gdn2_chunk_per_thread_floats(d, o, backward) *
           sizeof(float);
}

/* Shared argument checks of the chunk ops; fills the flattened args. */
int gdn2_chunk_setup(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                     gdn2_chunk_args *a) {
    int st = gdn2_check(d, o);
    if (st) return st;
    if (!t) return gdn2_error(GDN2_ERR_ARG, "%s: tensors must not be NULL", fn);
    const char *miss = !t->q ? "q" : !t->k ? "k" : !t->v ? "v" : !t->g ? "g" : NULL;
    if (!miss && !a->beta) miss = !t->b ? "b" : !t->w ? "w" : NULL;
    if (!miss && o->gate_in_kernel) miss = !t->A_log ? "A_log" : !t->dt_bias ? "dt_bias" : NULL;
    if (miss) return gdn2_error(GDN2_ERR_ARG, "%s: input tensor '%s' is NULL", fn, miss);
    if (d->K > 4096 || d->V > 4096)
        return gdn2_error(GDN2_ERR_ARG, "%s: K=%lld V=%lld exceed 4096", fn, (long long)d->K, (long long)d->V);
    a->H = d->H;
    a->HV = d->HV;
    a->K = d->K;
    a->V = d->V;
    a->G = d->HV / d->H;
    a->scale = gdn2_scale(d, o);
    a->l2norm = o->qk_l2norm != 0;
    a->gate = o->gate_in_kernel != 0;
    a->lb = o->gate_in_kernel ? o->lower_bound : 0.0f;
    a->q = t->q;
    a->k = t->k;
    a->v = t->v;
    a->g = t->g;
    a->b = t->b;
    a->w = t->w;
    a->A_log = t->A_log;
    a->dt_bias = t->dt_bias;
    return GDN2_OK;
}

/* Workspace: the caller's (checked for size) or a fresh allocation (*owned set). */
float *gdn2_chunk_workspace(const char *fn, const gdn2_opts *o, size_t need, float **owned) {
    *owned = NULL;
    if (o->workspace) {
        if (o->workspace_size < need) {
            gdn2_error(GDN2_ERR_ARG, "%s: workspace of %zu bytes is smaller than the %zu bytes needed "
                       "(gdn2_chunk_workspace_size)", fn, o->workspace_size, need);
            return NULL;
        }
        return (float *)o->workspace;
    }
    *owned = gdn2_malloc(need, "chunk workspace");
    return *owned;
}

/* One (sequence n, value head hv): the chunk loop of F2..F7. */
static void fwd_task(const gdn2_chunk_args *a, const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                     gdn2_chunk_ws *w, int64_t n, int64_t hv) {
    const int64_t K = a->K, V = a->V, HV = a->HV, h = hv / a->G;
    int64_t bos, len;
    gdn2_seq_range(d, o, n, &bos, &len);
    float *S = w->S;
    const size_t sbytes = (size_t)(K * V) * sizeof(float);
    if (t->h0) memcpy(S, t->h0 + (n * HV + hv) * K * V, sbytes);
    else memset(S, 0, sbytes);
    for (int64_t c0 = 0; c0 < len; c0 += GDN2_C) {
        const int cn = (int)(len - c0 < GDN2_C ? len - c0 : GDN2_C);
        gdn2_chunk_load(w, a, bos + c0, cn, h, hv);
        if (c0 + GDN2_C < len) {
            const int64_t left = len - c0 - GDN2_C;
            gdn2_chunk_prefetch(a, bos + c0 + GDN2_C, (int)(left < GDN2_C ? left : GDN2_C), h, hv);
        }
        gdn2_chunk_plan(w, K, cn);
        gdn2_chunk_scores(w, K, cn, a->scale, 1, 1);
        gdn2_chunk_solve(w, cn);
        gdn2_chunk_wy(w, K, V, cn, S);
        /* (F6) O = scale·(q̂⊙γ) S + Aqk R, written straight into o (row stride HV·V) */
        float *out = t->o + ((bos + c0) * HV + hv) * V;
        gdn2_sgemm(0, 0, cn, (int)V, (int)K, a->scale, w->qg, (int)K, S, (int)V, 0.0f, out, (int)(HV * V));
        gdn2_sgemm(0, 0, cn, (int)V, cn, 1.0f, w->Aqk, GDN2_C, w->R, (int)(K + V), 1.0f, out, (int)(HV * V));
        gdn2_chunk_state_update(w, K, V, cn, S);
    }
    if (t->ht) memcpy(t->ht + (n * HV + hv) * K * V, S, sbytes);
}

static int chunk_fwd(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                     const float *beta) {
    gdn2_chunk_args a;
    memset(&a, 0, sizeof a);
    a.beta = beta;
    int st = gdn2_chunk_setup(fn, d, o, t, &a);
    if (st) return st;
    if (!t->o) return gdn2_error(GDN2_ERR_ARG, "%s: output tensor 'o' is NULL", fn);
    if (!beta && (st = gdn2_check_values(fn, d, o, t, NULL))) return st; /* beta: checked by the caller */
    const int nt = gdn2_chunk_threads(d, o, 0);
    const size_t per = gdn2_chunk_per_thread_floats(d, o, 0);
    float *owned, *ws = gdn2_chunk_workspace(fn, o, (size_t)nt * per * sizeof(float), &owned);
    if (!ws) return o->workspace ? GDN2_ERR_ARG : GDN2_ERR_NOMEM;
    const int64_t tasks = n_tasks(d, o, 0);
    const int saved = gdn2_blas_threads_begin();
#pragma omp parallel num_threads(nt)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        gdn2_chunk_ws w;
        gdn2_chunk_ws_init(&w, ws + (size_t)tid * per, a.K, a.V);
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < tasks; i++) fwd_task(&a, d, o, t, &w, i / a.HV, i % a.HV);
    }
    gdn2_blas_threads_end(saved);
    free(owned);
    return GDN2_OK;
}

int gdn2_chunk_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t) {
    return chunk_fwd("gdn2_chunk_fwd", d, o, t, NULL);
}

int gdn2_chunk_fwd_beta(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const float *beta) {
    if (!beta) return gdn2_error(GDN2_ERR_ARG, "gdn2_chunk_fwd_beta: beta [B,T,H] is NULL");
    return chunk_fwd("gdn2_chunk_fwd_beta", d, o, t, beta);
}
