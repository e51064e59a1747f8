/* The single-node launcher: fork one process per rank, supervise them, stop the rest when one
 * fails. The parent does no training; it waits. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../util/internal.h"
#include "launch.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int gdn2_launch(int world, gdn2_rank_body body, void *arg, gdn2_local_arena *arena, double grace_s) {
    if (world < 1 || world > 64) return gdn2_error(GDN2_ERR_ARG, "launch: %d ranks, expected 1..64", world);
    if (grace_s <= 0) grace_s = 10.0;
    pid_t pid[64];
    fflush(NULL); /* nothing buffered is written twice by the children */
    for (int r = 0; r < world; r++) {
        pid[r] = fork();
        if (pid[r] < 0) {
            int e = errno;
            for (int k = 0; k < r; k++) kill(pid[k], SIGKILL);
            for (int k = 0; k < r; k++) waitpid(pid[k], NULL, 0);
            return gdn2_error(GDN2_ERR_IO, "launch: fork of rank %d failed: %s", r, strerror(e));
        }
        if (pid[r] == 0) {
            int rc = body(r, world, arg);
            fflush(NULL);
            _exit(rc == GDN2_OK ? 0 : rc == GDN2_ERR_ARG || rc == GDN2_ERR_FORMAT ? 2 : 1);
        }
        if (arena) gdn2_comm_local_set_pid(arena, r, (long)pid[r]);
    }
    int alive = world, first_bad = -1, bad_status = 0;
    int done[64] = {0};
    double stop_at = -1; /* when the others were told to stop */
    while (alive > 0) {
        int status = 0;
        pid_t p = waitpid(-1, &status, stop_at < 0 ? 0 : WNOHANG);
        if (p < 0 && errno == EINTR) continue;
        if (p < 0) break;
        if (p == 0) { /* stopping: give them grace_s, then SIGKILL */
            if (now_s() - stop_at > grace_s)
                for (int r = 0; r < world; r++)
                    if (!done[r]) kill(pid[r], SIGKILL);
            struct timespec ts = {0, 20000000};
            nanosleep(&ts, NULL);
            continue;
        }
        int r = 0;
        while (r < world && pid[r] != p) r++;
        if (r == world) continue;
        done[r] = 1, alive--;
        const int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (!ok && first_bad < 0) {
            first_bad = r, bad_status = status;
            stop_at = now_s();
            for (int k = 0; k < world; k++)
                if (!done[k]) kill(pid[k], SIGTERM);
        }
    }
    if (first_bad < 0) return GDN2_OK;
    char how[64];
    if (WIFEXITED(bad_status)) snprintf(how, sizeof how, "exited with status %d", WEXITSTATUS(bad_status));
    else if (WIFSIGNALED(bad_status)) snprintf(how, sizeof how, "was killed by signal %d", WTERMSIG(bad_status));
    else snprintf(how, sizeof how, "stopped (status %d)", bad_status);
    return gdn2_error(WIFEXITED(bad_status) && WEXITSTATUS(bad_status) == 2 ? GDN2_ERR_ARG : GDN2_ERR_DEVICE,
                      "rank %d of %d %s; the other ranks were stopped", first_bad, world, how);
}
