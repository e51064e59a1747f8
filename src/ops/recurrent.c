/* fp32 token-serial GDN-2: the whole-sequence recurrent forward and the batched single-token
 * decode step over a pool of state slots (continuous batching). Same math as the float64
 * reference (reference.c), one token at a time:
 *   S̄ = Diag(exp g) S,  u = w⊙v − S̄ᵀ(b⊙k),  S ← S̄ + k uᵀ,  o = Sᵀ(scale·q).
 * A token needs two sweeps of the K x V state (decay+read, then write+output read); over a sequence
 * the write sweep of token t is fused with the read sweep of token t+1 (rec_pass2). The inner loops
 * run along V with restrict pointers and omp simd so they vectorise. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../util/internal.h"
#include "check.h"
#include "gate.h"

typedef struct {
    int64_t K, V;
    float scale, lb;
    int l2norm, gate;
    const float *A_log, *dt_bias;
} rec_cfg;

/* Per-token vectors of one (sequence, value head): q̂, k̂, α = exp(g), p = b⊙k̂ (K each) and u (V),
 * which starts as w⊙v and becomes u = w⊙v − S̄ᵀp after the read. */
typedef struct {
    float *qn, *kn, *al, *p, *u;
} rec_tok;
#define REC_TOK_FLOATS(K, V) (4 * (K) + (V))

static rec_tok rec_tok_at(float *mem, int64_t K) {
    rec_tok r = {mem, mem + K, mem + 2 * K, mem + 3 * K, mem + 4 * K};
    return r;
}

/* q,k,g,b: the key head's K-vectors at this token; v,w: the value head's V-vectors; h: key head
 * (for the in-kernel gate's A_log / dt_bias). */
static void rec_prep(const rec_cfg *c, int64_t h, const float *q, const float *k, const float *g, const float *b,
                     const float *v, const float *w, const rec_tok *r) {
    const int64_t K = c->K, V = c->V;
    if (c->l2norm) {
        gdn2_l2norm_f32(K, q, r->qn);
        gdn2_l2norm_f32(K, k, r->kn);
    } else {
        memcpy(r->qn, q, K * sizeof(float));
        memcpy(r->kn, k, K * sizeof(float));
    }
    if (c->gate)
        for (int64_t i = 0; i < K; i++) r->al[i] = expf(gdn2_gate_f32(g[i], c->A_log ? c->A_log[h] : 0.0f,
                                                                  c->dt_bias ? c->dt_bias[h * K + i] : 0.0f, c->lb));
    else
        for (int64_t i = 0; i < K; i++) r->al[i] = expf(g[i]);
    for (int64_t i = 0; i < K; i++) r->p[i] = b[i] * r->kn[i];
    for (int64_t j = 0; j < V; j++) r->u[j] = w[j] * v[j];
}

/* pass 1: S̄ = Diag(α) S and u −= S̄ᵀ p */
static void rec_pass1(int64_t K, int64_t V, float *restrict S, const rec_tok *r) {
    float *restrict u = r->u;
    for (int64_t i = 0; i < K; i++) {
        const float a = r->al[i], p = r->p[i];
        float *restrict Sr = S + i * V;
        GDN2_SIMD
        for (int64_t j = 0; j < V; j++) {
            const float s = Sr[j] * a;
            Sr[j] = s;
            u[j] -= p * s;
        }
    }
}

/* pass 2: S = S̄ + k̂ uᵀ and o = Sᵀ(scale q̂). With `nx` (the next token of the same sequence) the
 * next token's pass 1 is fused in row by row — each row is final for this token as soon as it is
 * written — so a sequence streams the state through the cache once per token instead of twice. */
static void rec_pass2(int64_t K, int64_t V, float scale, float *restrict S, const rec_tok *r,
                      float *restrict out, const rec_tok *nx) {
    const float *restrict u = r->u;
    for (int64_t j = 0; j < V; j++) out[j] = 0.0f;
    if (!nx) {
        for (int64_t i = 0; i < K; i++) {
            const float kc = r->kn[i], qc = scale * r->qn[i];
            float *restrict Sr = S + i * V;
            GDN2_SIMD
            for (int64_t j = 0; j < V; j++) {
                const float s = Sr[j] + kc * u[j];
                Sr[j] = s;
                out[j] += qc * s;
            }
        }
        return;
    }
    float *restrict un = nx->u;
    for (int64_t i = 0; i < K; i++) {
        const float kc = r->kn[i], qc = scale * r->qn[i], a = nx->al[i], p = nx->p[i];
        float *restrict Sr = S + i * V;
        GDN2_SIMD
        for (int64_t j = 0; j < V; j++) {
            const float s = Sr[j] + kc * u[j];
            out[j] += qc * s;
            const float sn = s * a;
            Sr[j] = sn;
            un[j] -= p * sn;
        }
    }
}

static int check_inputs(const char *fn, const gdn2_opts *o, const float *q, const float *k, const float *v,
                        const float *g, const float *b, const float *w, const float *A_log,
                        const float *dt_bias, const float *out) {
    const char *miss = !q ? "q" : !k ? "k" : !v ? "v" : !g ? "g" : !b ? "b" : !w ? "w" : !out ? "o" : NULL;
    if (miss) return gdn2_error(GDN2_ERR_ARG, "%s: tensor '%s' is NULL", fn, miss);
    return GDN2_OK;
}

int gdn2_recurrent_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t) {
    int rc = gdn2_check(d, o);
    if (rc) return rc;
    if (!t) return gdn2_error(GDN2_ERR_ARG, "gdn2_recurrent_fwd: tensors must not be NULL");
    if ((rc = check_inputs("gdn2_recurrent_fwd", o, t->q, t->k, t->v, t->g, t->b, t->w, t->A_log, t->dt_bias, t->o)))
        return rc;
    if ((rc = gdn2_check_values("gdn2_recurrent_fwd", d, o, t, NULL))) return rc;
    const int64_t H = d->H, HV = d->HV, K = d->K, V = d->V, G = HV / H, N = gdn2_num_states(d, o);
    const rec_cfg c = {K, V, gdn2_scale(d, o), o->gate_in_kernel ? o->lower_bound : 0.0f, o->qk_l2norm,
                       o->gate_in_kernel, t->A_log, t->dt_bias};
    int failed = 0;

#pragma omp parallel for schedule(dynamic) num_threads(gdn2_threads_for(o->n_threads, N * HV))
    for (int64_t nh = 0; nh < N * HV; nh++) {
        const int64_t n = nh / HV, hv = nh % HV, h = hv / G;
        const int64_t bos = o->cu_seqlens ? o->cu_seqlens[n] : n * d->T;
        const int64_t eos = o->cu_seqlens ? o->cu_seqlens[n + 1] : bos + d->T;
        /* the state lives in ht when the caller wants it, else in a private buffer */
        float *buf = malloc((size_t)((t->ht ? 0 : K * V) + 2 * REC_TOK_FLOATS(K, V)) * sizeof(float));
        if (!buf) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        float *S = t->ht ? t->ht + nh * K * V : buf, *scratch = t->ht ? buf : buf + K * V;
        if (t->h0) memmove(S, t->h0 + nh * K * V, (size_t)(K * V) * sizeof(float)); /* ht may alias h0 */
        else memset(S, 0, (size_t)(K * V) * sizeof(float));
        rec_tok cur = rec_tok_at(scratch, K), nxt = rec_tok_at(scratch + REC_TOK_FLOATS(K, V), K);
        if (bos < eos) {
            const int64_t ik = (bos * H + h) * K, iv = (bos * HV + hv) * V;
            rec_prep(&c, h, t->q + ik, t->k + ik, t->g + ik, t->b + ik, t->v + iv, t->w + iv, &cur);
            rec_pass1(K, V, S, &cur);
        }
        for (int64_t tt = bos; tt < eos; tt++) {
            const int has_next = tt + 1 < eos;
            if (has_next) {
                const int64_t ik = ((tt + 1) * H + h) * K, iv = ((tt + 1) * HV + hv) * V;
                rec_prep(&c, h, t->q + ik, t->k + ik, t->g + ik, t->b + ik, t->v + iv, t->w + iv, &nxt);
            }
            rec_pass2(K, V, c.scale, S, &cur, t->o + (tt * HV + hv) * V, has_next ? &nxt : NULL);
            const rec_tok sw = cur;
            cur = nxt;
            nxt = sw;
        }
        free(buf);
    }
    if (failed)
        return gdn2_error(GDN2_ERR_NOMEM, "gdn2_recurrent_fwd: out of memory for the state (K=%lld V=%lld)",
                          (long long)K, (long long)V);
    return GDN2_OK;
}

/* The values of the rows that run (slots[i] >= 0; a skipped row's inputs are never read), q,k,g,b
 * [n,T,H,K] and v,w [n,T,HV,V], and the gate parameters; the state pool is the op's own and is not
 * scanned. d->T is the tokens per row (1 for the decode step, whose messages keep the 3-d shapes). */
static int decode_check_values(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_decode_tensors *t) {
    const int64_t n = d->B, T = d->T, H = d->H, HV = d->HV, K = d->K, V = d->V;
    const int64_t sk3[3] = {n, H, K}, sv3[3] = {n, HV, V}, sk4[4] = {n, T, H, K}, sv4[4] = {n, T, HV, V};
    const int64_t sa[1] = {H}, sd[1] = {H * K};
    const int nd = T == 1 ? 3 : 4;
    const int64_t *sk = T == 1 ? sk3 : sk4, *sv = T == 1 ? sv3 : sv4;
    const int nonpos = !o->gate_in_kernel;
    int rc = GDN2_OK;
    if (o->trust_values) return GDN2_OK;
    for (int64_t i = 0; !rc && i < n; i++) {
        if (t->slots[i] < 0) continue;
        const size_t nk = (size_t)(T * H * K), nv = (size_t)(T * HV * V), ik = (size_t)i * nk, iv = (size_t)i * nv;
        if ((rc = gdn2_check_tensor_values(fn, "q", t->q, nd, sk, ik, nk, 0, 1)) ||
            (rc = gdn2_check_tensor_values(fn, "k", t->k, nd, sk, ik, nk, 0, 1)) ||
            (rc = gdn2_check_tensor_values(fn, "v", t->v, nd, sv, iv, nv, 0, 1)) ||
            (rc = gdn2_check_tensor_values(fn, "g", t->g, nd, sk, ik, nk, nonpos, 1)) ||
            (rc = gdn2_check_tensor_values(fn, "b", t->b, nd, sk, ik, nk, 0, 1)) ||
            (rc = gdn2_check_tensor_values(fn, "w", t->w, nd, sv, iv, nv, 0, 1)))
            break;
    }
    if (!rc && o->gate_in_kernel && !(rc = gdn2_check_tensor_values(fn, "A_log", t->A_log, 1, sa, 0, (size_t)H, 0, 1)))
        rc = gdn2_check_tensor_values(fn, "dt_bias", t->dt_bias, 1, sd, 0, (size_t)(H * K), 0, 1);
    return rc;
}

/* Slot arrays of one call: every slots[i] in [0, n_slots) or negative (skip), and for the rows that
 * run every snap_slots[i*T+j] in [0, n_slots); no slot twice among all of them. */
static int decode_check_slots(const char *fn, int64_t n, int64_t T, const gdn2_decode_tensors *t, const int32_t *snap) {
    /* owner[s]: 0 free, 1 + i for slots[i], 1 + n + i*T + j for snap_slots[i*T+j] */
    int64_t *owner = calloc((size_t)t->n_slots, sizeof(int64_t));
    if (!owner) return gdn2_error(GDN2_ERR_NOMEM, "%s: out of memory (slot table of %lld)", fn, (long long)t->n_slots);
    int rc = GDN2_OK;
    for (int64_t i = 0; i < n && !rc; i++) {
        const int32_t s = t->slots[i];
        if (s < 0) continue;
        if (s >= t->n_slots)
            rc = gdn2_error(GDN2_ERR_ARG, "%s: slots[%lld]=%d is out of range (n_slots=%lld)", fn, (long long)i, (int)s,
                            (long long)t->n_slots);
        else if (owner[s])
            rc = gdn2_error(GDN2_ERR_ARG, "%s: slot %d is used by two rows in one call (second at slots[%lld])", fn, (int)s,
                            (long long)i);
        else owner[s] = 1 + i;
    }
    for (int64_t i = 0; snap && i < n && !rc; i++) {
        if (t->slots[i] < 0) continue; /* a skipped row's snapshot slots are not read */
        for (int64_t j = 0; j < T && !rc; j++) {
            const int32_t s = snap[i * T + j];
            if (s < 0 || s >= t->n_slots) {
                rc = gdn2_error(GDN2_ERR_ARG, "%s: snap_slots[%lld,%lld]=%d is out of range (n_slots=%lld, shape [%lld,%lld])",
                                fn, (long long)i, (long long)j, (int)s, (long long)t->n_slots, (long long)n, (long long)T);
            } else if (owner[s]) {
                const int64_t w = owner[s] - 1;
                if (w < n)
                    rc = gdn2_error(GDN2_ERR_ARG, "%s: snap_slots[%lld,%lld]=%d is also slots[%lld]: a snapshot slot must not be "
                                    "a source slot of the call", fn, (long long)i, (long long)j, (int)s, (long long)w);
                else
                    rc = gdn2_error(GDN2_ERR_ARG, "%s: snap_slots[%lld,%lld]=%d is also snap_slots[%lld,%lld]: snapshot slots must "
                                    "be distinct", fn, (long long)i, (long long)j, (int)s, (long long)((w - n) / T),
                                    (long long)((w - n) % T));
            } else owner[s] = 1 + n + i * T + j;
        }
    }
    free(owner);
    return rc;
}

/* gdn2_decode_step (T = 1, snap NULL) and gdn2_decode_verify: d->T tokens per row. The state of one
 * (row, value head) is worked on in place in an fp32 pool when nothing else is asked, else in an
 * fp32 scratch copy (a bf16 pool, or snapshots: the source slot is then only read). In place, the
 * write sweep of token j is fused with the read sweep of token j+1 (rec_pass2, as the recurrent
 * forward); with snapshots each token ends with its state stored to its snapshot slot, so the two
 * sweeps stay apart (the same functions as the single step). */
static int decode_run(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_decode_tensors *t,
                      const int32_t *snap) {
    if (!d || !o || !t) return gdn2_error(GDN2_ERR_ARG, "%s: dims, opts and tensors must not be NULL", fn);
    if (o->cu_seqlens)
        return gdn2_error(GDN2_ERR_ARG, "%s: cu_seqlens is not used by the decode step (rows of d->T tokens); pass NULL", fn);
    int rc = gdn2_check(d, o);
    if (rc) return rc;
    if ((rc = check_inputs(fn, o, t->q, t->k, t->v, t->g, t->b, t->w, t->A_log, t->dt_bias, t->o))) return rc;
    if (!t->state_pool || !t->slots)
        return gdn2_error(GDN2_ERR_ARG, "%s: %s is NULL", fn, !t->state_pool ? "state_pool" : "slots");
    if (t->n_slots < 1) return gdn2_error(GDN2_ERR_ARG, "%s: n_slots=%lld, expected >= 1", fn, (long long)t->n_slots);
    const int64_t n = d->B, T = d->T, H = d->H, HV = d->HV, K = d->K, V = d->V, G = HV / H;
    if ((rc = decode_check_slots(fn, n, T, t, snap))) return rc;
    if ((rc = decode_check_values(fn, d, o, t))) return rc;
    if (t->state_dtype != GDN2_STATE_F32 && t->state_dtype != GDN2_STATE_BF16)
        return gdn2_error(GDN2_ERR_ARG, "%s: state_dtype=%d, expected GDN2_STATE_F32 (0) or GDN2_STATE_BF16 (1)", fn,
                          t->state_dtype);
    if (T == 0 || n == 0) return GDN2_OK;
    const int bf16 = t->state_dtype == GDN2_STATE_BF16, copy = bf16 || snap != NULL;
    const rec_cfg c = {K, V, gdn2_scale(d, o), o->gate_in_kernel ? o->lower_bound : 0.0f, o->qk_l2norm,
                       o->gate_in_kernel, t->A_log, t->dt_bias};
    int failed = 0;
#pragma omp parallel num_threads(gdn2_threads_for(o->n_threads, n * HV))
    {
        /* two tokens' scratch, then (bf16 pool or snapshots) the fp32 working copy of one state */
        float *scratch = malloc((size_t)(2 * REC_TOK_FLOATS(K, V) + (copy ? K * V : 0)) * sizeof(float));
        if (!scratch) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t ih = 0; ih < n * HV; ih++) {
            const int64_t i = ih / HV, hv = ih % HV, h = hv / G;
            const int32_t s = t->slots[i];
            if (s < 0 || !scratch) {
                for (int64_t j = 0; j < T; j++) memset(t->o + ((i * T + j) * HV + hv) * V, 0, (size_t)V * sizeof(float));
                continue;
            }
            const int64_t so = ((int64_t)s * HV + hv) * K * V;
            float *S = copy ? scratch + 2 * REC_TOK_FLOATS(K, V) : (float *)t->state_pool + so;
            if (bf16) {
                const uint16_t *Sb = (const uint16_t *)t->state_pool + so;
                for (int64_t e = 0; e < K * V; e++) S[e] = gdn2_bf16_to_f32(Sb[e]);
            } else if (copy) {
                memcpy(S, (const float *)t->state_pool + so, (size_t)(K * V) * sizeof(float));
            }
            rec_tok cur = rec_tok_at(scratch, K), nxt = rec_tok_at(scratch + REC_TOK_FLOATS(K, V), K);
            {
                const int64_t ik = (i * T * H + h) * K, iv = (i * T * HV + hv) * V;
                rec_prep(&c, h, t->q + ik, t->k + ik, t->g + ik, t->b + ik, t->v + iv, t->w + iv, &cur);
                rec_pass1(K, V, S, &cur);
            }
            for (int64_t j = 0; j < T; j++) {
                const int has_next = j + 1 < T;
                if (has_next) {
                    const int64_t ik = ((i * T + j + 1) * H + h) * K, iv = ((i * T + j + 1) * HV + hv) * V;
                    rec_prep(&c, h, t->q + ik, t->k + ik, t->g + ik, t->b + ik, t->v + iv, t->w + iv, &nxt);
                }
                float *out = t->o + ((i * T + j) * HV + hv) * V;
                if (!snap) {
                    rec_pass2(K, V, c.scale, S, &cur, out, has_next ? &nxt : NULL);
                } else { /* the state after token j to its snapshot slot, then token j+1's read sweep */
                    rec_pass2(K, V, c.scale, S, &cur, out, NULL);
                    const int64_t sn = ((int64_t)snap[i * T + j] * HV + hv) * K * V;
                    if (bf16) {
                        uint16_t *D = (uint16_t *)t->state_pool + sn;
                        for (int64_t e = 0; e < K * V; e++) D[e] = gdn2_f32_to_bf16(S[e]);
                    } else {
                        memcpy((float *)t->state_pool + sn, S, (size_t)(K * V) * sizeof(float));
                    }
                    if (has_next) rec_pass1(K, V, S, &nxt);
                }
                const rec_tok sw = cur;
                cur = nxt;
                nxt = sw;
            }
            if (bf16 && !snap) {
                uint16_t *Sb = (uint16_t *)t->state_pool + so;
                for (int64_t e = 0; e < K * V; e++) Sb[e] = gdn2_f32_to_bf16(S[e]);
            }
        }
        free(scratch);
    }
    if (failed) return gdn2_error(GDN2_ERR_NOMEM, "%s: out of memory for scratch (K=%lld V=%lld)", fn, (long long)K, (long long)V);
    return GDN2_OK;
}

int gdn2_decode_step(const gdn2_dims *d, const gdn2_opts *o, const gdn2_decode_tensors *t) {
    if (!d) return gdn2_error(GDN2_ERR_ARG, "gdn2_decode_step: dims, opts and tensors must not be NULL");
    gdn2_dims d1 = *d;
    d1.T = 1; /* T is ignored: one token per row */
    return decode_run("gdn2_decode_step", &d1, o, t, NULL);
}

int gdn2_decode_verify(const gdn2_dims *d, const gdn2_opts *o, const gdn2_decode_tensors *t, const int32_t *snap_slots) {
    return decode_run("gdn2_decode_verify", d, o, t, snap_slots);
}
