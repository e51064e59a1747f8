/* placeholder: KDA / GDN entry points (being written) */
#include "../util/internal.h"
#define NI(fn) return gdn2_error(GDN2_ERR_UNSUPPORTED, #fn ": not implemented yet")
int gdn2_kda_recurrent_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const float *beta) { NI(gdn2_kda_recurrent_fwd); }
int gdn2_kda_chunk_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const float *beta) { NI(gdn2_kda_chunk_fwd); }
int gdn2_kda_chunk_bwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const float *beta, const gdn2_bwd_tensors *g, float *dbeta) { NI(gdn2_kda_chunk_bwd); }
int gdn2_gdn_recurrent_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const float *beta) { NI(gdn2_gdn_recurrent_fwd); }
int gdn2_gdn_chunk_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const float *beta) { NI(gdn2_gdn_chunk_fwd); }
int gdn2_gdn_chunk_bwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const float *beta, const gdn2_bwd_tensors *g, float *dbeta) { NI(gdn2_gdn_chunk_bwd); }
