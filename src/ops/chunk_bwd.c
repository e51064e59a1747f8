/* placeholder: chunkwise backward (being written) */
#include "../util/internal.h"
int gdn2_chunk_bwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const gdn2_bwd_tensors *g) { return gdn2_error(GDN2_ERR_UNSUPPORTED, "gdn2_chunk_bwd: not implemented yet"); }
