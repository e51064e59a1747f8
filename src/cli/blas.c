/* BLAS threads, a process-wide setting the library leaves to its caller: the commands that train
 * or evaluate a model set it here. */
#include <stdlib.h>

#include "commands.h"

#ifdef GDN2_HAVE_BLAS
#include <cblas.h>
#endif

/* The model's GEMMs are small (rows = B*T tokens, d <= a few hundred); OpenBLAS's own pthreads then
 * spin against the OpenMP threads and, on a shared machine, ran 5-8x slower than one BLAS thread.
 * Parallelism comes from OpenMP instead; OPENBLAS_NUM_THREADS still overrides. */
void cli_blas_one_thread(void) {
#ifdef GDN2_HAVE_BLAS
    if (!getenv("OPENBLAS_NUM_THREADS")) openblas_set_num_threads(1);
#endif
}
