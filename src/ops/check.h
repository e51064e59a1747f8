/* Value checks of the CPU entry points (src/ops only; definitions in check.c). The public
 * gdn2_check_inputs / gdn2_check_inputs_f64 (include/gdn2.h) are these without a function name.
 *
 * Every message starts with `fn: ` (when fn is not NULL) and names the tensor, the element's index
 * in the tensor's shape and its value, e.g. "gdn2_chunk_fwd: q[0,17,1,3] = nan (shape [2,64,2,16]):
 * inputs must be finite". NULL tensors are skipped (the callers check which ones are required). */
#ifndef GDN2_OPS_CHECK_H
#define GDN2_OPS_CHECK_H

#include "../util/internal.h"

/* Elements [first, first + count) of x, a tensor of shape shape[0..ndim) named `name`: all
 * finite, and when nonpos also <= 0 (a log-decay g outside the kernel's gate). GDN2_ERR_ARG on the
 * first that is not. Large tensors are scanned with n_threads threads (0 = OpenMP default). */
int gdn2_check_tensor_values(const char *fn, const char *name, const float *x, int ndim, const int64_t *shape,
                             size_t first, size_t count, int nonpos, int n_threads);
int gdn2_check_tensor_values_f64(const char *fn, const char *name, const double *x, int ndim,
                                 const int64_t *shape, size_t first, size_t count, int nonpos, int n_threads);

/* Every input of one call (t, and g when not NULL: do, dht) with the shapes of include/gdn2.h;
 * d and o must have passed gdn2_check. g must be <= 0 unless o->gate_in_kernel. These three return
 * GDN2_OK at once when o->trust_values (gdn2_check_inputs always scans). */
int gdn2_check_values(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                      const gdn2_bwd_tensors *g);
/* The split scan of the chunk kernels, which check the rows of q, k, v, g, b, w themselves as their
 * load reads them (GDN2_BAD_BITS, chunk_common.h): this scans only the rest (h0, A_log, dt_bias, and do, dht
 * when g is not NULL). When it finds a bad element, or later when `kernel_bad` (the kernel saw a bad
 * row), gdn2_check_values gives the error, so that the message names the first bad tensor in the
 * documented order exactly as before. GDN2_OK at once when o->trust_values. */
int gdn2_check_values_rest(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                           const gdn2_bwd_tensors *g);
/* The KDA / GDN collapse calls: as gdn2_check_values for t without b and w (ignored), and beta
 * [B,T,H] finite; scalar_g (GDN): g is [B,T,H] too. */
int gdn2_check_beta_values(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                           const float *beta, int scalar_g);
int gdn2_check_values_f64(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors_f64 *t,
                          const gdn2_bwd_tensors_f64 *g);

#endif
