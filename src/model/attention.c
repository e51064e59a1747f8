/* Causal softmax attention with RoPE, full or sliding-window, as the official lit_gpt SWA layer
 * (docs/MODEL.md): one fused qkv Linear whose output is laid out per query group as
 * [q x (n_head/n_groups), k, v] (head_size each), rotate-half RoPE (base 10000) over the whole head,
 * softmax scale hs^-1/2, causal with window (W-1, 0): query t sees keys max(0, t-W+1) .. t; proj d->d.
 *
 * The layer is written over the backend (qkv and proj products, rope_split, attn_fwd/bwd), and so
 * is its decode step (the products and the backend's attn_step over fp32 caches in backend memory;
 * the caches filled after a prefill by casts from the forward's saved keys and values). Memory: nothing O(T^2) on either backend
 * (flash-attention style: the row's log-sum-exp is saved, the backward recomputes the probabilities). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

gdn2_attn_cfg gdn2_attn_cfg_of(const gdn2_model_cfg *c, int kind) {
    gdn2_attn_cfg a;
    a.d = c->n_embd;
    a.n_head = c->n_head;
    a.n_groups = c->n_query_groups;
    a.hs = c->head_size;
    a.window = kind == GDN2_LAYER_SWA ? c->local_window : 0;
    a.rope_base = c->rope_base;
    a.pos0 = 0;
    return a;
}

typedef struct {
    size_t q, k, v, o, lse, total;
} attn_layout;

static size_t up(const gdn2_backend *be, size_t o) {
    const size_t al = be->on_device ? 256 : 1;
    return (o + al - 1) / al * al;
}

static attn_layout attn_offsets(const gdn2_backend *be, const gdn2_attn_cfg *a, int64_t B, int64_t T) {
    const size_t BT = (size_t)B * T, nq = BT * a->n_head * a->hs, nk = BT * a->n_groups * a->hs;
    attn_layout L;
    L.q = 0;
    L.k = up(be, L.q + gdn2_be_bytes(be, nq, GDN2_DT_ACT));
    L.v = up(be, L.k + gdn2_be_bytes(be, nk, GDN2_DT_ACT));
    L.o = up(be, L.v + gdn2_be_bytes(be, nk, GDN2_DT_ACT));
    L.lse = up(be, L.o + gdn2_be_bytes(be, nq, GDN2_DT_ACT));
    L.total = up(be, L.lse + gdn2_be_bytes(be, BT * a->n_head, GDN2_DT_F32));
    return L;
}

size_t gdn2_attn_act_bytes(const gdn2_backend *be, const gdn2_attn_cfg *a, int64_t B, int64_t T) {
    return attn_offsets(be, a, B, T).total;
}

/* forward: qkv [BT, nqkv].  backward: dO [BT, C] | dq [BT, C] | dk, dv [BT, ng hs] | dqkv [BT, nqkv] */
size_t gdn2_attn_scratch_bytes(const gdn2_backend *be, const gdn2_attn_cfg *a, int64_t B, int64_t T, int backward) {
    const size_t BT = (size_t)B * T, nqkv = BT * (a->n_head + 2 * a->n_groups) * a->hs;
    const size_t nq = BT * a->n_head * a->hs, nk = BT * a->n_groups * a->hs;
    if (!backward) return up(be, gdn2_be_bytes(be, nqkv, GDN2_DT_ACT));
    return 4 * up(be, 1) + up(be, gdn2_be_bytes(be, 2 * nq + 2 * nk + nqkv, GDN2_DT_ACT)) + 5 * 256;
}

#define AT(p, off) ((void *)((char *)(p) + (off)))

static int check_cfg(const gdn2_attn_cfg *a) {
    if (a->n_head <= 0 || a->n_groups <= 0 || a->n_head % a->n_groups || a->hs <= 0 || a->hs % 2)
        return gdn2_error(GDN2_ERR_ARG,
                          "attention: n_head %lld must be a positive multiple of n_query_groups %lld and head_size "
                          "%lld positive and even",
                          (long long)a->n_head, (long long)a->n_groups, (long long)a->hs);
    if (a->window < 0) return gdn2_error(GDN2_ERR_ARG, "attention: local_window %lld < 0", (long long)a->window);
    return GDN2_OK;
}

int gdn2_attn_forward(gdn2_backend *be, const gdn2_attn_cfg *a, const void *w_qkv, const void *w_proj, const void *x,
                      int64_t B, int64_t T, void *y, void *acts, void *scratch) {
    int st = check_cfg(a);
    if (st) return st;
    const int64_t nh = a->n_head, ng = a->n_groups, hs = a->hs, d = a->d;
    const int64_t nqkv = (nh + 2 * ng) * hs, BT = B * T;
    const attn_layout L = attn_offsets(be, a, B, T);
    void *q = AT(acts, L.q), *k = AT(acts, L.k), *v = AT(acts, L.v), *o = AT(acts, L.o);
    float *lse = AT(acts, L.lse);
    void *qkv = scratch;
    /* qkv[BT, (nh+2ng)hs] = x W_qkv^T;  split per group, RoPE q and k;  o = attention;  y = o W_proj^T */
    if ((st = be->linear_fwd(be, BT, d, nqkv, x, w_qkv, NULL, qkv, GDN2_DT_ACT, 0)) ||
        (st = be->rope_split(be, a, B, T, qkv, q, k, v)) || (st = be->attn_fwd(be, a, B, T, q, k, v, o, lse)))
        return st;
    return be->linear_fwd(be, BT, nh * hs, d, o, w_proj, NULL, y, GDN2_DT_ACT, 0);
}

int gdn2_attn_backward(gdn2_backend *be, const gdn2_attn_cfg *a, const void *w_qkv, const void *w_proj,
                       const void *x, int64_t B, int64_t T, const void *acts, const void *dy, void *dx, float *dw_qkv,
                       float *dw_proj, int dw_acc, void *scratch) {
    int st = check_cfg(a);
    if (st) return st;
    const int64_t nh = a->n_head, ng = a->n_groups, hs = a->hs, d = a->d;
    const int64_t nqkv = (nh + 2 * ng) * hs, BT = B * T, C = nh * hs;
    const attn_layout L = attn_offsets(be, a, B, T);
    const void *q = AT(acts, L.q), *k = AT(acts, L.k), *v = AT(acts, L.v), *o = AT(acts, L.o);
    const float *lse = AT(acts, L.lse);
    const size_t nq = (size_t)BT * C, nk = (size_t)BT * ng * hs;
    size_t off = 0;
    void *dO = AT(scratch, off);
    off = up(be, off + gdn2_be_bytes(be, nq, GDN2_DT_ACT));
    void *dq = AT(scratch, off);
    off = up(be, off + gdn2_be_bytes(be, nq, GDN2_DT_ACT));
    void *dk = AT(scratch, off);
    off = up(be, off + gdn2_be_bytes(be, nk, GDN2_DT_ACT));
    void *dv = AT(scratch, off);
    off = up(be, off + gdn2_be_bytes(be, nk, GDN2_DT_ACT));
    void *dqkv = AT(scratch, off);
    /* y = o W^T: dW_proj += dy^T o, dO = dy W;  attention VJP;  back through RoPE into the fused
     * qkv layout;  qkv = x W_qkv^T: dW_qkv += dqkv^T x, dx = dqkv W_qkv */
    if ((st = be->linear_bwd(be, BT, C, d, o, w_proj, dy, dO, 0, dw_proj, dw_acc, NULL)) ||
        (st = be->attn_bwd(be, a, B, T, q, k, v, o, lse, dO, dq, dk, dv)) ||
        (st = be->rope_split_bwd(be, a, B, T, dq, dk, dv, dqkv)))
        return st;
    return be->linear_bwd(be, BT, d, nqkv, x, w_qkv, dqkv, dx, 0, dw_qkv, dw_acc, NULL);
}

/* ---- decoding ----------------------------------------------------------------------------- */
int64_t gdn2_attn_cache_cap(const gdn2_attn_cfg *a, int64_t max_len) { return a->window > 0 ? a->window : max_len; }

size_t gdn2_attn_state_size(const gdn2_attn_cfg *a, int64_t max_len) {
    return (size_t)2 * a->n_groups * gdn2_attn_cache_cap(a, max_len) * a->hs;
}

int gdn2_attn_fill_cache(gdn2_backend *be, const gdn2_attn_cfg *a, const void *acts, int64_t B, int64_t T,
                         int64_t p0, int64_t max_len, float *states, size_t state_stride) {
    const int64_t ng = a->n_groups, hs = a->hs, cap = gdn2_attn_cache_cap(a, max_len);
    if (a->window == 0 && p0 + T > max_len)
        return gdn2_error(GDN2_ERR_ARG, "attention cache: %lld + %lld tokens exceed max_len %lld", (long long)p0,
                          (long long)T, (long long)max_len);
    const attn_layout L = attn_offsets(be, a, B, T);
    const char *src[2] = {(const char *)acts + L.k, (const char *)acts + L.v};
    /* the last min(T, cap) of the positions p0 .. p0+T-1; position p in row p % cap (SWA ring) or p:
     * at most two runs of consecutive rows per (sequence, group), each one cast from the activation
     * type to fp32 */
    const int64_t j0 = T > cap ? T - cap : 0;
    for (int64_t b = 0; b < B; b++)
        for (int kv = 0; kv < 2; kv++) {
            float *cache = states + b * state_stride + (size_t)kv * ng * cap * hs;
            for (int64_t g = 0; g < ng; g++)
                for (int64_t j = j0; j < T;) {
                    const int64_t row = a->window > 0 ? (p0 + j) % cap : p0 + j;
                    const int64_t len = T - j < cap - row ? T - j : cap - row;
                    const void *from = src[kv] + gdn2_be_bytes(be, (size_t)(((b * ng + g) * T + j) * hs), GDN2_DT_ACT);
                    int st = be->cast(be, (size_t)(len * hs), from, GDN2_DT_ACT, cache + (g * cap + row) * hs,
                                      GDN2_DT_F32);
                    if (st) return st;
                    j += len;
                }
        }
    return GDN2_OK;
}

/* A prefill that continues one sequence (B = 1) at position p0 > 0: the T new queries attend to the
 * cached keys and values of the positions before them (the last P = min(p0, window - 1) for SWA, all
 * P = p0 for full attention: fp32 in `state`, already rotated at their positions) and to their own.
 * The new q and k are rotated at p0 .. p0+T-1 (rope_split with pos0 = p0); the P cached rows are cast
 * in front of the new keys and values, the new queries after P zero rows, and attn_fwd runs over
 * P + T positions with the layer's window (query P+t sees keys P+t-window+1 .. P+t: exactly the
 * positions p0+t-window+1 .. p0+t); the last T rows of its output are the new tokens'. The cache then
 * takes the new keys and values. The P + T rows of q, k, v, o and lse are allocated for the call and
 * released (a prefill's piece, not a hot path). */
int gdn2_attn_forward_cont(gdn2_backend *be, const gdn2_attn_cfg *a, const void *w_qkv, const void *w_proj,
                           const void *x, int64_t T, int64_t p0, int64_t max_len, float *state, void *y, void *acts,
                           void *scratch) {
    int st = check_cfg(a);
    if (st) return st;
    const int64_t nh = a->n_head, ng = a->n_groups, hs = a->hs, d = a->d, nqkv = (nh + 2 * ng) * hs;
    const int64_t cap = gdn2_attn_cache_cap(a, max_len);
    if (p0 < 1 || T < 1 || (a->window == 0 && p0 + T > max_len))
        return gdn2_error(GDN2_ERR_ARG, "attention prefill: %lld tokens after position %lld (max_len %lld)",
                          (long long)T, (long long)p0, (long long)max_len);
    const int64_t P = a->window > 0 ? (p0 < a->window - 1 ? p0 : a->window - 1) : p0, TT = P + T;
    gdn2_attn_cfg ar = *a;
    ar.pos0 = p0;
    const attn_layout L = attn_offsets(be, a, 1, T);
    void *q = AT(acts, L.q), *k = AT(acts, L.k), *v = AT(acts, L.v), *qkv = scratch;
    if ((st = be->linear_fwd(be, T, d, nqkv, x, w_qkv, NULL, qkv, GDN2_DT_ACT, 0)) ||
        (st = be->rope_split(be, &ar, 1, T, qkv, q, k, v)))
        return st;
    const size_t qb = gdn2_be_bytes(be, (size_t)(nh * TT * hs), GDN2_DT_ACT);
    const size_t kb = gdn2_be_bytes(be, (size_t)(ng * TT * hs), GDN2_DT_ACT);
    void *qf = be->alloc(be, qb, "attention prefill queries");
    void *kf = qf ? be->alloc(be, kb, "attention prefill keys") : NULL;
    void *vf = kf ? be->alloc(be, kb, "attention prefill values") : NULL;
    void *of = vf ? be->alloc(be, qb, "attention prefill output") : NULL;
    float *lse = of ? be->alloc(be, (size_t)(nh * TT) * sizeof(float), "attention prefill lse") : NULL;
    if (!lse) st = GDN2_ERR_NOMEM;
    const size_t rowb = gdn2_be_bytes(be, (size_t)hs, GDN2_DT_ACT);
    /* queries: P zero rows (the allocation is zero-filled), then the new ones, per head */
    for (int64_t h = 0; h < nh && !st; h++)
        st = be->copy(be, (char *)qf + (size_t)(h * TT + P) * rowb, (const char *)q + (size_t)(h * T) * rowb,
                      (size_t)T * rowb);
    /* keys and values: the cached rows of positions p0-P .. p0-1 (at most two runs in a ring), then
     * the new ones, per group */
    for (int kv = 0; kv < 2 && !st; kv++) {
        const float *cache = state + (size_t)kv * ng * cap * hs;
        char *dst = kv ? vf : kf;
        const char *fresh = kv ? v : k;
        for (int64_t g = 0; g < ng && !st; g++) {
            for (int64_t j = 0; j < P && !st;) {
                const int64_t pos = p0 - P + j, row = a->window > 0 ? pos % cap : pos;
                const int64_t len = P - j < cap - row ? P - j : cap - row;
                st = be->cast(be, (size_t)(len * hs), cache + (g * cap + row) * hs, GDN2_DT_F32,
                              dst + (size_t)(g * TT + j) * rowb, GDN2_DT_ACT);
                j += len;
            }
            if (!st)
                st = be->copy(be, dst + (size_t)(g * TT + P) * rowb, fresh + (size_t)(g * T) * rowb, (size_t)T * rowb);
        }
    }
    if (!st) st = be->attn_fwd(be, a, 1, TT, qf, kf, vf, of, lse);
    if (!st) st = be->linear_fwd(be, T, nh * hs, d, (const char *)of + (size_t)P * nh * rowb, w_proj, NULL, y,
                                 GDN2_DT_ACT, 0);
    if (!st) st = gdn2_attn_fill_cache(be, a, acts, 1, T, p0, max_len, state, 0);
    if (lse) be->release(be, lse);
    if (of) be->release(be, of);
    if (vf) be->release(be, vf);
    if (kf) be->release(be, kf);
    if (qf) be->release(be, qf);
    return st;
}

size_t gdn2_attn_step_bytes(const gdn2_backend *be, const gdn2_attn_cfg *a, int64_t n) {
    const size_t nqkv = (size_t)n * (a->n_head + 2 * a->n_groups) * a->hs, no = (size_t)n * a->n_head * a->hs;
    return up(be, gdn2_be_bytes(be, nqkv, GDN2_DT_ACT)) + up(be, gdn2_be_bytes(be, no, GDN2_DT_ACT));
}

int gdn2_attn_step_be(gdn2_backend *be, const gdn2_attn_cfg *a, const void *w_qkv, const void *w_proj, const void *x,
                      int64_t n, const int64_t *pos, const int32_t *slots, int64_t cap, float *states,
                      size_t state_stride, void *y, void *scratch) {
    int st = check_cfg(a);
    if (st) return st;
    const int64_t nh = a->n_head, ng = a->n_groups, hs = a->hs, d = a->d, nqkv = (nh + 2 * ng) * hs, C = nh * hs;
    void *qkv = scratch, *o = AT(scratch, up(be, gdn2_be_bytes(be, (size_t)(n * nqkv), GDN2_DT_ACT)));
    /* qkv = x W_qkv^T;  RoPE, the new key and value into the cache, attention over it;  y = o W_proj^T */
    if ((st = be->linear_fwd(be, n, d, nqkv, x, w_qkv, NULL, qkv, GDN2_DT_ACT, 0)) ||
        (st = be->attn_step(be, a, n, qkv, pos, slots, cap, states, state_stride, o)))
        return st;
    return be->linear_fwd(be, n, C, d, o, w_proj, NULL, y, GDN2_DT_ACT, 0);
}
