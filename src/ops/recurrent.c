/* placeholder: fp32 recurrent forward and decode step (being written) */
#include "../util/internal.h"
int gdn2_recurrent_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t) { return gdn2_error(GDN2_ERR_UNSUPPORTED, "gdn2_recurrent_fwd: not implemented yet"); }
int gdn2_decode_step(const gdn2_dims *d, const gdn2_opts *o, const gdn2_decode_tensors *t) { return gdn2_error(GDN2_ERR_UNSUPPORTED, "gdn2_decode_step: not implemented yet"); }
