/* LLaMA SwiGLU MLP as lit_gpt's LLaMAMLP (docs/MODEL.md), no bias, over the backend:
 *   h1 = x W1^T,  h2 = x W2^T,  a = silu(h1) * h2,  y = a W3^T      (W1, W2 [I,d], W3 [d,I]) */
#include "model_internal.h"

/* bytes of k [N,I] ACT tensors, each starting on a 256-byte boundary on a device */
static size_t span(const gdn2_backend *be, int64_t N, int64_t I, int k) {
    const size_t one = gdn2_be_bytes(be, (size_t)(N * I), GDN2_DT_ACT), al = be->on_device ? 256 : 1;
    return (size_t)k * ((one + al - 1) / al * al);
}
size_t gdn2_mlp_act_bytes(const gdn2_backend *be, int64_t N, int64_t I) { return span(be, N, I, 3); }
size_t gdn2_mlp_scratch_bytes(const gdn2_backend *be, int64_t N, int64_t I) { return span(be, N, I, 2); }

/* the k-th [N,I] tensor of a block */
#define AT(p, k) ((void *)((char *)(p) + span(be, N, I, (k))))

int gdn2_mlp_forward(gdn2_backend *be, int64_t N, int64_t d, int64_t I, const void *w1, const void *w2,
                     const void *w3, const void *x, void *y, void *acts, int batch) {
    void *h1 = acts, *h2 = AT(acts, 1), *a = AT(acts, 2);
    const ptrdiff_t ws = (const char *)w2 - (const char *)w1, hs = (const char *)h2 - (const char *)h1;
    int rc;
    /* the decode step (batch): the two products and the SwiGLU in one call, a in h1's place (h1, h2 are
     * not kept: no backward) */
    if (batch && be->linear_fwd_batch && ws > 0 && ws % (ptrdiff_t)be->act_bytes == 0 && hs % (ptrdiff_t)be->act_bytes == 0) {
        rc = be->linear_fwd_batch(be, N, d, I, x, w1, (size_t)ws / be->act_bytes, h1, (size_t)hs / be->act_bytes, 2,
                                  GDN2_BE_SWIGLU);
        return rc ? rc : be->linear_fwd(be, N, I, d, h1, w3, NULL, y, GDN2_DT_ACT, 0);
    }
    if (!(rc = be->linear_fwd(be, N, d, I, x, w1, NULL, h1, GDN2_DT_ACT, 0)))
        rc = be->linear_fwd(be, N, d, I, x, w2, NULL, h2, GDN2_DT_ACT, 0);
    if (rc || (rc = be->swiglu_fwd(be, (size_t)(N * I), h1, h2, a))) return rc;
    return be->linear_fwd(be, N, I, d, a, w3, NULL, y, GDN2_DT_ACT, 0);
}

int gdn2_mlp_backward(gdn2_backend *be, int64_t N, int64_t d, int64_t I, const void *w1, const void *w2,
                      const void *w3, const void *x, const void *acts, const void *dy, void *dx, float *dw1,
                      float *dw2, float *dw3, int dw_acc, void *scratch) {
    const void *h1 = acts, *h2 = AT(acts, 1), *a = AT(acts, 2);
    void *dh1 = scratch, *dh2 = AT(scratch, 1);
    int rc;
    /* dW3 += dy^T a;  da = dy W3 (into dh1);  dh1, dh2 from da;  then the two input projections */
    if ((rc = be->linear_bwd(be, N, I, d, a, w3, dy, dh1, 0, dw3, dw_acc, NULL)) ||
        (rc = be->swiglu_bwd(be, (size_t)(N * I), h1, h2, dh1, dh2)) ||
        (rc = be->linear_bwd(be, N, d, I, x, w1, dh1, dx, 0, dw1, dw_acc, NULL)))
        return rc;
    return be->linear_bwd(be, N, d, I, x, w2, dh2, dx, 1, dw2, dw_acc, NULL);
}
