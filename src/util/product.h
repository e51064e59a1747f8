/* One product of a multi-product call: the matrix products that read one input X [N,in] (the decode
 * step's projections of x), shared by the backend table (src/backend/backend.h linear_fwd_multi) and the
 * CUDA one-launch form (src/cuda/nn.h gdn2_cuda_linear_fwd_multi).
 *
 * Y_p [N,out] = X W_p^T for p < count, W_p = W + p*wstride [out,in], Y_p = Y + p*ystride (strides in
 * elements of the activation dtype), then act:
 *   GDN2_PRODUCT_STORE    nothing more (linear_fwd_batch without act);
 *   GDN2_PRODUCT_SIGMOID  Y_p = sigmoid(Y_p) (linear_fwd_batch's sigmoid act);
 *   GDN2_PRODUCT_CONV     y_p = the short conv step over Y_p with the conv fields (linear_conv_step's
 *                         arguments: ksize, hist + p*hs, hist_stride, slots, cw + p*cws, y + p*ys); Y is
 *                         where the products go when a backend makes two calls, else not written.
 * Each product gives the same bits as its own call. */
#ifndef GDN2_UTIL_PRODUCT_H
#define GDN2_UTIL_PRODUCT_H

#include <stddef.h>
#include <stdint.h>

#define GDN2_PRODUCT_MAX 4 /* products in one call */
enum { GDN2_PRODUCT_STORE = 0, GDN2_PRODUCT_SIGMOID = 1, GDN2_PRODUCT_CONV = 2 };

typedef struct {
    int64_t out;
    const void *W;
    size_t wstride;
    int count;
    void *Y;
    size_t ystride;
    int act;
    /* GDN2_PRODUCT_CONV */
    int64_t ksize;
    float *hist;
    size_t hs, hist_stride;
    const int32_t *slots; /* device / backend memory; NULL: row i's slot is i */
    const float *cw;
    size_t cws;
    void *y;
    size_t ys;
} gdn2_product;

#endif
