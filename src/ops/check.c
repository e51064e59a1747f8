/* Validation of dims and options, shared by every implementation (CPU, CUDA, reference). */
#include <math.h>

#include "../util/internal.h"

int64_t gdn2_num_states(const gdn2_dims *d, const gdn2_opts *o) {
    return (o && o->cu_seqlens) ? o->n_seqs : d->B;
}

float gdn2_scale(const gdn2_dims *d, const gdn2_opts *o) {
    return (o && o->scale != 0.0f) ? o->scale : (float)(1.0 / sqrt((double)d->K));
}

int gdn2_check(const gdn2_dims *d, const gdn2_opts *o) {
    if (!d || !o) return gdn2_error(GDN2_ERR_ARG, "gdn2_check: dims and opts must not be NULL");
    if (d->B < 1 || d->T < 0 || d->H < 1 || d->HV < 1 || d->K < 1 || d->V < 1)
        return gdn2_error(GDN2_ERR_ARG,
                          "invalid dims B=%lld T=%lld H=%lld HV=%lld K=%lld V=%lld (all >= 1, T >= 0)",
                          (long long)d->B, (long long)d->T, (long long)d->H, (long long)d->HV,
                          (long long)d->K, (long long)d->V);
    if (d->HV % d->H != 0)
        return gdn2_error(GDN2_ERR_ARG, "HV=%lld value heads is not a multiple of H=%lld key heads",
                          (long long)d->HV, (long long)d->H);
    if (!isfinite(o->scale) || o->scale < 0.0f)
        return gdn2_error(GDN2_ERR_ARG, "scale=%g must be finite and >= 0 (0 = K^-1/2)", (double)o->scale);
    if (o->lower_bound != 0.0f) {
        if (!o->gate_in_kernel)
            return gdn2_error(GDN2_ERR_ARG, "lower_bound=%g needs gate_in_kernel", (double)o->lower_bound);
        if (!(o->lower_bound >= -5.0f && o->lower_bound < 0.0f))
            return gdn2_error(GDN2_ERR_ARG, "lower_bound=%g must lie in [-5, 0)", (double)o->lower_bound);
    }
    if (o->cu_seqlens) {
        if (d->B != 1)
            return gdn2_error(GDN2_ERR_ARG, "cu_seqlens requires B=1 (got B=%lld)", (long long)d->B);
        if (o->n_seqs < 1)
            return gdn2_error(GDN2_ERR_ARG, "cu_seqlens needs n_seqs >= 1 (got %lld)", (long long)o->n_seqs);
        if (o->cu_seqlens[0] != 0)
            return gdn2_error(GDN2_ERR_ARG, "cu_seqlens[0]=%lld, expected 0", (long long)o->cu_seqlens[0]);
        for (int64_t i = 0; i < o->n_seqs; i++)
            if (o->cu_seqlens[i + 1] < o->cu_seqlens[i])
                return gdn2_error(GDN2_ERR_ARG, "cu_seqlens is not non-decreasing: cu_seqlens[%lld]=%lld < cu_seqlens[%lld]=%lld",
                                  (long long)(i + 1), (long long)o->cu_seqlens[i + 1], (long long)i,
                                  (long long)o->cu_seqlens[i]);
        if (o->cu_seqlens[o->n_seqs] != d->T)
            return gdn2_error(GDN2_ERR_ARG, "cu_seqlens[%lld]=%lld must equal T=%lld", (long long)o->n_seqs,
                              (long long)o->cu_seqlens[o->n_seqs], (long long)d->T);
    }
    return GDN2_OK;
}
