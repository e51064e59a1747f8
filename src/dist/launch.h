/* Single-node launcher (launch.c): one forked process per rank, supervised. Not public API. */
#ifndef GDN2_DIST_LAUNCH_H
#define GDN2_DIST_LAUNCH_H

#include "comm.h"

/* what a rank runs; returns a gdn2 status (the process exits 0, 2 for bad input, 1 otherwise) */
typedef int (*gdn2_rank_body)(int rank, int world, void *arg);
/* Fork `world` processes, each running body(rank, world, arg), and wait for them. The first rank to
 * fail (non-zero exit or a signal) makes the parent send SIGTERM to the others and SIGKILL to those
 * still running grace_s later; the error names that rank and how it ended. arena (may be NULL):
 * the local communicators' arena, told each rank's pid. */
int gdn2_launch(int world, gdn2_rank_body body, void *arg, gdn2_local_arena *arena, double grace_s);

#endif
