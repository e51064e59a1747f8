/* Causal softmax attention with RoPE, full or sliding-window, as the official lit_gpt SWA layer
 * (docs/MODEL.md): one fused qkv Linear whose output is laid out per query group as
 * [q x (n_head/n_groups), k, v] (head_size each), rotate-half RoPE (base 10000) over the whole head,
 * softmax scale hs^-1/2, causal with window (W-1, 0): query t sees keys max(0, t-W+1) .. t; proj d->d.
 *
 * Memory: nothing O(T^2). The forward streams each query row over its visible keys (one row of
 * scores per thread, O(W)), saving only the row's log-sum-exp; the backward recomputes the
 * probabilities from it (flash-attention style), so SWA costs O(T*W) time and O(T) extra memory. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "util/internal.h"

gdn2_attn_cfg gdn2_attn_cfg_of(const gdn2_model_cfg *c, int kind) {
    gdn2_attn_cfg a;
    a.d = c->n_embd;
    a.n_head = c->n_head;
    a.n_groups = c->n_query_groups;
    a.hs = c->head_size;
    a.window = kind == GDN2_LAYER_SWA ? c->local_window : 0;
    a.rope_base = c->rope_base;
    return a;
}

size_t gdn2_attn_act_size(const gdn2_attn_cfg *a, int64_t B, int64_t T) {
    size_t BT = (size_t)B * T;
    return BT * a->n_head * a->hs * 2 + BT * a->n_groups * a->hs * 2 + BT * a->n_head;
}

/* RoPE angle as lit_gpt builds its cache in fp32: theta_i = 1 / base^(2i/hs), angle = pos * theta_i */
static void rope_cs(int64_t pos, int64_t hs, float base, float *c, float *s) {
    for (int64_t i = 0; i < hs / 2; i++) {
        float th = 1.0f / powf(base, (float)(2 * i) / (float)hs);
        float ang = (float)pos * th;
        c[i] = cosf(ang);
        s[i] = sinf(ang);
    }
}

/* rotate-half: y1 = x1 c - x2 s, y2 = x2 c + x1 s (x1 = first half, x2 = second half) */
static void rope_apply(const float *x, float *y, int64_t hs, const float *c, const float *s) {
    int64_t h2 = hs / 2;
    for (int64_t i = 0; i < h2; i++) {
        float x1 = x[i], x2 = x[i + h2];
        y[i] = x1 * c[i] - x2 * s[i];
        y[i + h2] = x2 * c[i] + x1 * s[i];
    }
}
/* transpose of the rotation (its VJP): dx1 = dy1 c + dy2 s, dx2 = dy2 c - dy1 s */
static void rope_apply_t(const float *dy, float *dx, int64_t hs, const float *c, const float *s) {
    int64_t h2 = hs / 2;
    for (int64_t i = 0; i < h2; i++) {
        float d1 = dy[i], d2 = dy[i + h2];
        dx[i] = d1 * c[i] + d2 * s[i];
        dx[i + h2] = d2 * c[i] - d1 * s[i];
    }
}

/* dot product with 8 independent partial sums, so that the compiler vectorises it without
 * -ffast-math (head sizes are multiples of 8 in every config; the tail is handled) */
static inline float dotf(const float *a, const float *b, int64_t n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += a[i + k] * b[i + k];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

typedef struct {
    float *q, *k, *v, *o, *lse;
} attn_acts;

static attn_acts acts_of(const gdn2_attn_cfg *a, const float *acts, int64_t B, int64_t T) {
    attn_acts r;
    size_t BT = (size_t)B * T;
    r.q = (float *)acts;
    r.k = r.q + BT * a->n_head * a->hs;
    r.v = r.k + BT * a->n_groups * a->hs;
    r.o = r.v + BT * a->n_groups * a->hs;
    r.lse = r.o + BT * a->n_head * a->hs;
    return r;
}

static int check_cfg(const gdn2_attn_cfg *a) {
    if (a->n_head <= 0 || a->n_groups <= 0 || a->n_head % a->n_groups || a->hs <= 0 || a->hs % 2)
        return gdn2_error(GDN2_ERR_ARG,
                          "attention: n_head %lld must be a positive multiple of n_query_groups %lld and head_size "
                          "%lld positive and even",
                          (long long)a->n_head, (long long)a->n_groups, (long long)a->hs);
    if (a->window < 0) return gdn2_error(GDN2_ERR_ARG, "attention: local_window %lld < 0", (long long)a->window);
    return GDN2_OK;
}

int gdn2_attn_forward(const gdn2_attn_cfg *a, const float *w_qkv, const float *w_proj, const float *x, int64_t B,
                      int64_t T, float *y, float *acts, int n_threads) {
    int st = check_cfg(a);
    if (st) return st;
    const int64_t nh = a->n_head, ng = a->n_groups, hs = a->hs, qpk = nh / ng, d = a->d, h2 = hs / 2;
    const int64_t nqkv = (nh + 2 * ng) * hs, BT = B * T;
    const float scale = 1.0f / sqrtf((float)hs);
    const int nt = gdn2_threads(n_threads);
    attn_acts A = acts_of(a, acts, B, T);
    float *qkv = gdn2_malloc((size_t)BT * nqkv * sizeof(float), "attention qkv");
    float *cs = gdn2_malloc((size_t)T * hs * sizeof(float), "attention rope table");
    float *sc = gdn2_malloc((size_t)nt * T * sizeof(float), "attention scores");
    if (!qkv || !cs || !sc) {
        free(qkv), free(cs), free(sc);
        return GDN2_ERR_NOMEM;
    }
    for (int64_t t = 0; t < T; t++) rope_cs(t, hs, a->rope_base, cs + t * hs, cs + t * hs + h2);
    /* qkv[BT, (nh+2ng)hs] = x W_qkv^T */
    gdn2_sgemm(0, 1, (int)BT, (int)nqkv, (int)d, 1.0f, x, (int)d, w_qkv, (int)d, 0.0f, qkv, (int)nqkv);
    /* split per group [q.. , k, v], RoPE q and k, store head-major */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t bt = 0; bt < BT; bt++) {
        int64_t b = bt / T, t = bt % T;
        const float *row = qkv + bt * nqkv, *c = cs + t * hs, *s = c + h2;
        for (int64_t g = 0; g < ng; g++) {
            const float *grp = row + g * (qpk + 2) * hs;
            for (int64_t j = 0; j < qpk; j++)
                rope_apply(grp + j * hs, A.q + (((b * nh + g * qpk + j) * T) + t) * hs, hs, c, s);
            rope_apply(grp + qpk * hs, A.k + ((b * ng + g) * T + t) * hs, hs, c, s);
            memcpy(A.v + ((b * ng + g) * T + t) * hs, grp + (qpk + 1) * hs, hs * sizeof(float));
        }
    }
    /* per query row: s_j = scale q_t.k_j over visible j; p = softmax(s); o_t = sum_j p_j v_j;
     * lse_t = log sum_j exp(s_j) saved for the backward */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < B * nh * T; r++) {
        int64_t b = r / (nh * T), h = (r / T) % nh, t = r % T, g = h / qpk;
#ifdef _OPENMP
        float *srow = sc + (size_t)omp_get_thread_num() * T;
#else
        float *srow = sc;
#endif
        const float *qt = A.q + r * hs;
        const float *kb = A.k + (b * ng + g) * T * hs, *vb = A.v + (b * ng + g) * T * hs;
        int64_t j0 = a->window > 0 && t - a->window + 1 > 0 ? t - a->window + 1 : 0;
        float mx = -INFINITY;
        for (int64_t j = j0; j <= t; j++) {
            float sj = scale * dotf(qt, kb + j * hs, hs);
            srow[j] = sj;
            if (sj > mx) mx = sj;
        }
        float l = 0.0f;
        for (int64_t j = j0; j <= t; j++) {
            srow[j] = expf(srow[j] - mx);
            l += srow[j];
        }
        float *ot = A.o + (b * T + t) * nh * hs + h * hs;
        memset(ot, 0, hs * sizeof(float));
        float il = 1.0f / l;
        for (int64_t j = j0; j <= t; j++) {
            float p = srow[j] * il;
            const float *vj = vb + j * hs;
            for (int64_t i = 0; i < hs; i++) ot[i] += p * vj[i];
        }
        A.lse[r] = mx + logf(l);
    }
    /* y = o W_proj^T */
    gdn2_sgemm(0, 1, (int)BT, (int)d, (int)(nh * hs), 1.0f, A.o, (int)(nh * hs), w_proj, (int)(nh * hs), 0.0f, y,
               (int)d);
    free(qkv), free(cs), free(sc);
    return GDN2_OK;
}

int gdn2_attn_backward(const gdn2_attn_cfg *a, const float *w_qkv, const float *w_proj, const float *x, int64_t B,
                       int64_t T, const float *acts, const float *dy, float *dx, float *dw_qkv, float *dw_proj,
                       int n_threads) {
    int st = check_cfg(a);
    if (st) return st;
    const int64_t nh = a->n_head, ng = a->n_groups, hs = a->hs, qpk = nh / ng, d = a->d, h2 = hs / 2;
    const int64_t nqkv = (nh + 2 * ng) * hs, BT = B * T, C = nh * hs;
    const float scale = 1.0f / sqrtf((float)hs);
    const int nt = gdn2_threads(n_threads);
    attn_acts A = acts_of(a, acts, B, T);
    size_t nq = (size_t)BT * C, nk = (size_t)BT * ng * hs;
    float *dO = gdn2_malloc((size_t)BT * C * sizeof(float), "attention dO");
    float *dq = gdn2_calloc(nq + 2 * nk, sizeof(float), "attention dq/dk/dv");
    float *Dt = gdn2_malloc((size_t)B * nh * T * sizeof(float), "attention D");
    float *dqkv = gdn2_malloc((size_t)BT * nqkv * sizeof(float), "attention dqkv");
    float *cs = gdn2_malloc((size_t)T * hs * sizeof(float), "attention rope table");
    float *sc = gdn2_malloc((size_t)nt * T * 2 * sizeof(float), "attention scores");
    if (!dO || !dq || !Dt || !dqkv || !cs || !sc) {
        free(dO), free(dq), free(Dt), free(dqkv), free(cs), free(sc);
        return GDN2_ERR_NOMEM;
    }
    float *dk = dq + nq, *dv = dk + nk;
    for (int64_t t = 0; t < T; t++) rope_cs(t, hs, a->rope_base, cs + t * hs, cs + t * hs + h2);
    /* y = o W^T:  dW_proj += dy^T o,  dO = dy W */
    gdn2_sgemm(1, 0, (int)d, (int)C, (int)BT, 1.0f, dy, (int)d, A.o, (int)C, 1.0f, dw_proj, (int)C);
    gdn2_sgemm(0, 0, (int)BT, (int)C, (int)d, 1.0f, dy, (int)d, w_proj, (int)C, 0.0f, dO, (int)C);
    /* D_t = dO_t . o_t per (b, h, t) */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < B * nh * T; r++) {
        int64_t b = r / (nh * T), h = (r / T) % nh, t = r % T;
        size_t off = (size_t)(b * T + t) * C + h * hs;
        Dt[r] = dotf(dO + off, A.o + off, hs);
    }
    /* per (b, group): p_j = exp(s_j - lse_t), dp_j = dO_t.v_j, ds_j = p_j (dp_j - D_t);
     * dq_t = scale sum_j ds_j k_j;  dk_j += scale ds_j q_t;  dv_j += p_j dO_t.
     * Parallel over (b, g) so that dk/dv of a group are owned by one thread (deterministic). */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t bg = 0; bg < B * ng; bg++) {
        int64_t b = bg / ng, g = bg % ng;
#ifdef _OPENMP
        float *pr = sc + (size_t)omp_get_thread_num() * T * 2;
#else
        float *pr = sc;
#endif
        float *dsr = pr + T;
        const float *kb = A.k + bg * T * hs, *vb = A.v + bg * T * hs;
        float *dkb = dk + bg * T * hs, *dvb = dv + bg * T * hs;
        for (int64_t j = 0; j < qpk; j++) {
            int64_t h = g * qpk + j;
            for (int64_t t = 0; t < T; t++) {
                size_t r = (size_t)(b * nh + h) * T + t;
                const float *qt = A.q + r * hs, *dot = dO + (size_t)(b * T + t) * C + h * hs;
                float *dqt = dq + r * hs;
                int64_t j0 = a->window > 0 && t - a->window + 1 > 0 ? t - a->window + 1 : 0;
                float lse = A.lse[r], D = Dt[r];
                for (int64_t s = j0; s <= t; s++) {
                    float p = expf(scale * dotf(qt, kb + s * hs, hs) - lse);
                    float dp = dotf(dot, vb + s * hs, hs);
                    pr[s] = p;
                    dsr[s] = p * (dp - D);
                }
                for (int64_t s = j0; s <= t; s++) {
                    float ds = scale * dsr[s], p = pr[s];
                    const float *ks = kb + s * hs;
                    float *dks = dkb + s * hs, *dvs = dvb + s * hs;
                    for (int64_t i = 0; i < hs; i++) {
                        dqt[i] += ds * ks[i];
                        dks[i] += ds * qt[i];
                        dvs[i] += p * dot[i];
                    }
                }
            }
        }
    }
    /* back through RoPE (transpose rotation) into the fused qkv layout */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t bt = 0; bt < BT; bt++) {
        int64_t b = bt / T, t = bt % T;
        float *row = dqkv + bt * nqkv;
        const float *c = cs + t * hs, *s = c + h2;
        for (int64_t g = 0; g < ng; g++) {
            float *grp = row + g * (qpk + 2) * hs;
            for (int64_t j = 0; j < qpk; j++)
                rope_apply_t(dq + (((b * nh + g * qpk + j) * T) + t) * hs, grp + j * hs, hs, c, s);
            rope_apply_t(dk + ((b * ng + g) * T + t) * hs, grp + qpk * hs, hs, c, s);
            memcpy(grp + (qpk + 1) * hs, dv + ((b * ng + g) * T + t) * hs, hs * sizeof(float));
        }
    }
    /* qkv = x W_qkv^T:  dW_qkv += dqkv^T x,  dx = dqkv W_qkv */
    gdn2_sgemm(1, 0, (int)nqkv, (int)d, (int)BT, 1.0f, dqkv, (int)nqkv, x, (int)d, 1.0f, dw_qkv, (int)d);
    gdn2_sgemm(0, 0, (int)BT, (int)d, (int)nqkv, 1.0f, dqkv, (int)nqkv, w_qkv, (int)d, 0.0f, dx, (int)d);
    free(dO), free(dq), free(Dt), free(dqkv), free(cs), free(sc);
    return GDN2_OK;
}

/* ---- decoding ----------------------------------------------------------------------------- */
static int64_t cache_cap(const gdn2_attn_cfg *a, int64_t max_len) { return a->window > 0 ? a->window : max_len; }

size_t gdn2_attn_state_size(const gdn2_attn_cfg *a, int64_t max_len) {
    return (size_t)2 * a->n_groups * cache_cap(a, max_len) * a->hs;
}

/* slot of position p: a ring for SWA (the last W keys), the position itself for full attention */
static int64_t cache_slot(const gdn2_attn_cfg *a, int64_t p, int64_t cap) { return a->window > 0 ? p % cap : p; }

int gdn2_attn_fill_cache(const gdn2_attn_cfg *a, const float *acts, int64_t B, int64_t T, int64_t max_len,
                         float *states, size_t state_stride) {
    const int64_t ng = a->n_groups, hs = a->hs, cap = cache_cap(a, max_len);
    if (a->window == 0 && T > max_len)
        return gdn2_error(GDN2_ERR_ARG, "attention cache: prompt of %lld tokens exceeds max_len %lld",
                          (long long)T, (long long)max_len);
    attn_acts A = acts_of(a, acts, B, T);
    int64_t j0 = T > cap ? T - cap : 0;
    for (int64_t b = 0; b < B; b++) {
        float *kc = states + b * state_stride, *vc = kc + ng * cap * hs;
        for (int64_t g = 0; g < ng; g++)
            for (int64_t j = j0; j < T; j++) {
                int64_t sl = cache_slot(a, j, cap);
                memcpy(kc + (g * cap + sl) * hs, A.k + ((b * ng + g) * T + j) * hs, hs * sizeof(float));
                memcpy(vc + (g * cap + sl) * hs, A.v + ((b * ng + g) * T + j) * hs, hs * sizeof(float));
            }
    }
    return GDN2_OK;
}

int gdn2_attn_step(const gdn2_attn_cfg *a, const float *w_qkv, const float *w_proj, const float *x, int64_t n,
                   int64_t pos, int64_t max_len, float *states, size_t state_stride, float *y, int n_threads) {
    int st = check_cfg(a);
    if (st) return st;
    const int64_t nh = a->n_head, ng = a->n_groups, hs = a->hs, qpk = nh / ng, d = a->d, h2 = hs / 2;
    const int64_t nqkv = (nh + 2 * ng) * hs, C = nh * hs, cap = cache_cap(a, max_len);
    const float scale = 1.0f / sqrtf((float)hs);
    if (a->window == 0 && pos >= max_len)
        return gdn2_error(GDN2_ERR_ARG, "attention cache full: position %lld, max_len %lld (full attention grows)",
                          (long long)pos, (long long)max_len);
    float *qkv = gdn2_malloc((size_t)n * nqkv * sizeof(float), "attention step qkv");
    float *o = gdn2_malloc((size_t)n * C * sizeof(float), "attention step o");
    float *cs = gdn2_malloc((size_t)(hs + 2 * cap + hs) * sizeof(float), "attention step scratch");
    if (!qkv || !o || !cs) {
        free(qkv), free(o), free(cs);
        return GDN2_ERR_NOMEM;
    }
    rope_cs(pos, hs, a->rope_base, cs, cs + h2);
    float *sc = cs + hs, *qr = sc + cap;
    gdn2_sgemm(0, 1, (int)n, (int)nqkv, (int)d, 1.0f, x, (int)d, w_qkv, (int)d, 0.0f, qkv, (int)nqkv);
    int64_t j0 = a->window > 0 && pos - a->window + 1 > 0 ? pos - a->window + 1 : 0;
    int64_t slot = cache_slot(a, pos, cap);
    for (int64_t b = 0; b < n; b++) {
        float *kc = states + b * state_stride, *vc = kc + ng * cap * hs;
        const float *row = qkv + b * nqkv;
        for (int64_t g = 0; g < ng; g++) {
            const float *grp = row + g * (qpk + 2) * hs;
            rope_apply(grp + qpk * hs, kc + (g * cap + slot) * hs, hs, cs, cs + h2);
            memcpy(vc + (g * cap + slot) * hs, grp + (qpk + 1) * hs, hs * sizeof(float));
        }
        for (int64_t h = 0; h < nh; h++) {
            int64_t g = h / qpk;
            rope_apply(row + g * (qpk + 2) * hs + (h % qpk) * hs, qr, hs, cs, cs + h2);
            float mx = -INFINITY, l = 0.0f;
            for (int64_t j = j0; j <= pos; j++) {
                float s = scale * dotf(qr, kc + (g * cap + cache_slot(a, j, cap)) * hs, hs);
                sc[j - j0] = s;
                if (s > mx) mx = s;
            }
            for (int64_t j = j0; j <= pos; j++) l += (sc[j - j0] = expf(sc[j - j0] - mx));
            float *ot = o + b * C + h * hs;
            memset(ot, 0, hs * sizeof(float));
            for (int64_t j = j0; j <= pos; j++) {
                float p = sc[j - j0] / l;
                const float *vj = vc + (g * cap + cache_slot(a, j, cap)) * hs;
                for (int64_t i = 0; i < hs; i++) ot[i] += p * vj[i];
            }
        }
    }
    gdn2_sgemm(0, 1, (int)n, (int)d, (int)C, 1.0f, o, (int)C, w_proj, (int)C, 0.0f, y, (int)d);
    free(qkv), free(o), free(cs);
    (void)n_threads;
    return GDN2_OK;
}
