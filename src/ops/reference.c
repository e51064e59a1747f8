/* placeholder: float64 reference (being written) */
#include "../util/internal.h"
int gdn2_ref_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors_f64 *t) { return gdn2_error(GDN2_ERR_UNSUPPORTED, "gdn2_ref_fwd: not implemented yet"); }
int gdn2_ref_bwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors_f64 *t, const gdn2_bwd_tensors_f64 *g) { return gdn2_error(GDN2_ERR_UNSUPPORTED, "gdn2_ref_bwd: not implemented yet"); }
