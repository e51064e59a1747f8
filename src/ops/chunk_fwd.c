/* fp32 chunkwise (WY, chunk 64) forward of GDN-2 on the CPU (docs/ALGORITHM.md §2).
 *
 * Per (sequence, value head), chunk by chunk with the state S (K x V) carried in fp32:
 *   scores Aqk, T (F2) -> A = (I+T)^-1 (F3) -> [Y|U] = A[Ē|Z] (F4) -> R = U − Y S (F5)
 *   O = scale·(q̂⊙γ) S + Aqk R (F6) -> S <- Diag(γ_last) S + kgᵀ R (F7)
 * The block products go through gdn2_chunk_sgemm (shaped for OpenBLAS's small-matrix kernels);
 * OpenMP runs over (sequence, value head). */
#include <stdlib.h>
#include <string.h>

#include "chunk_common.h"
#include "gate.h"

/* One (sequence n, value head hv): the chunk loop of F2..F7, on the thread's workspace. With `saved`
 * (gdn2_chunk_fwd_save) the records are filled by copies after each chunk's products: its start
 * state into record ci and, when cache_ok, A, [Y | R] and Aqk into the record's slot. (Computed
 * straight into the records, fresh memory each chunk, the products gained nothing from
 * gdn2_chunk_sgemm's split; with the copies fwd_save is ~15 % faster at K = V = 128:
 * dev/cpu/NOTES.md §10.) */
static void fwd_task(const gdn2_chunk_args *a, const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                     gdn2_chunk_ws *w, int64_t n, int64_t hv, float *saved, const int64_t *cb) {
    const int64_t K = a->K, V = a->V, HV = a->HV, h = hv / a->G, C = GDN2_C;
    int64_t bos, len;
    gdn2_seq_range(d, o, n, &bos, &len);
    const int64_t nch = (len + GDN2_C - 1) / GDN2_C;
    const size_t rs = gdn2_chunk_saved_rec_floats(K, V), kv = (size_t)(K + V);
    const int slots = gdn2_chunk_bwd_cache_ok(K, V);
    float *const rec = saved && nch > 0 ? saved + ((size_t)cb[n] * (size_t)HV + (size_t)(hv * nch)) * rs : NULL;
    float *const S = w->S;
    const size_t sbytes = (size_t)(K * V) * sizeof(float);
    if (t->h0) memcpy(S, t->h0 + (n * HV + hv) * K * V, sbytes);
    else memset(S, 0, sbytes);
    for (int64_t ci = 0; ci < nch; ci++) {
        const int64_t c0 = ci * GDN2_C;
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
        gdn2_chunk_sgemm(w, 0, 0, cn, (int)V, (int)K, a->scale, w->qg, (int)K, S, (int)V, 0.0f, out, (int)(HV * V));
        gdn2_chunk_sgemm_lower(w, cn, (int)V, 1.0f, w->Aqk, GDN2_C, w->R, (int)(K + V), 1.0f, out, (int)(HV * V));
        if (rec) { /* record ci: [S0 | [Y | R], A, Aqk] */
            float *r = rec + (size_t)ci * rs;
            memcpy(r, S, sbytes);
            if (slots) {
                memcpy(r + K * V, w->YU, (size_t)cn * kv * sizeof(float));
                memcpy(r + K * V + C * kv, w->A, (size_t)(cn * C) * sizeof(float));
                memcpy(r + K * V + C * kv + C * C, w->Aqk, (size_t)(cn * C) * sizeof(float));
            }
        }
        gdn2_chunk_state_update(w, K, V, cn, S);
    }
    if (t->ht) memcpy(t->ht + (n * HV + hv) * K * V, S, sbytes);
}

static int chunk_fwd(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                     const float *beta, void *saved, size_t saved_size, int save) {
    gdn2_chunk_args a;
    memset(&a, 0, sizeof a);
    a.beta = beta;
    int st = gdn2_chunk_setup(fn, d, o, t, &a);
    if (st) return st;
    if (!t->o) return gdn2_error(GDN2_ERR_ARG, "%s: output tensor 'o' is NULL", fn);
    int64_t *cb = NULL;
    if (save) {
        const size_t need = gdn2_chunk_saved_size(d, o);
        if (!saved || saved_size < need)
            return gdn2_error(GDN2_ERR_ARG, "%s: saved buffer %s of %zu bytes, %zu needed (gdn2_chunk_saved_size)", fn,
                              saved ? "is" : "NULL,", saved ? saved_size : (size_t)0, need);
        if (!(cb = gdn2_chunk_saved_offsets(d, o))) return GDN2_ERR_NOMEM;
    }
    /* the value scan: here only h0 (and A_log, dt_bias); the rows of q, k, v, g, b, w are tested by
     * the load as it reads them (w.check), and a bad one turns into the full scan's error after the
     * kernel (the outputs o, ht then hold unspecified values). beta mode: checked by the caller. */
    const int check = !beta && !o->trust_values ? GDN2_CHECK_ALL : 0;
    if (check && (st = gdn2_check_values_rest(fn, d, o, t, NULL))) {
        free(cb);
        return st;
    }
    const int nt = gdn2_chunk_threads(d, o, 0);
    const size_t per = gdn2_chunk_per_thread_floats(d, o, 0);
    float *owned, *ws = gdn2_chunk_workspace(fn, o, (size_t)nt * per * sizeof(float), &owned);
    if (!ws) {
        free(cb);
        return o->workspace ? GDN2_ERR_ARG : GDN2_ERR_NOMEM;
    }
    const int64_t tasks = gdn2_num_states(d, o) * d->HV;
    const int saved_threads = gdn2_blas_threads_begin();
    int bad = 0;
#pragma omp parallel num_threads(nt) reduction(| : bad)
    {
        gdn2_chunk_ws w;
        gdn2_chunk_thread_ws(&w, ws, per, a.K, a.V);
        w.check = check;
        w.tri = 1;
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < tasks; i++) fwd_task(&a, d, o, t, &w, i / a.HV, i % a.HV, saved, cb);
        bad |= w.bad;
    }
    gdn2_blas_threads_end(saved_threads);
    free(owned);
    free(cb);
    return bad ? gdn2_check_values(fn, d, o, t, NULL) : GDN2_OK;
}

int gdn2_chunk_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t) {
    return chunk_fwd("gdn2_chunk_fwd", d, o, t, NULL, NULL, 0, 0);
}

int gdn2_chunk_fwd_beta(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const float *beta) {
    if (!beta) return gdn2_error(GDN2_ERR_ARG, "gdn2_chunk_fwd_beta: beta [B,T,H] is NULL");
    return chunk_fwd("gdn2_chunk_fwd_beta", d, o, t, beta, NULL, 0, 0);
}

int gdn2_chunk_fwd_save(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, void *saved,
                        size_t saved_size) {
    return chunk_fwd("gdn2_chunk_fwd_save", d, o, t, NULL, saved, saved_size, 1);
}
