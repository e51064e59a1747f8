/* placeholder: chunkwise forward (being written) */
#include "../util/internal.h"
size_t gdn2_chunk_workspace_size(const gdn2_dims *d, const gdn2_opts *o, int backward) { return 0; }
int gdn2_chunk_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t) { return gdn2_error(GDN2_ERR_UNSUPPORTED, "gdn2_chunk_fwd: not implemented yet"); }
