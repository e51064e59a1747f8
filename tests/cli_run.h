/* Running commands from the test programs, and their temporary directory. Header-only, like
 * check.h (the one home for these: no test keeps its own copy).
 *   run(fmt, ...)           a shell command, formatted like printf (quote paths yourself)
 *   run_gdn2(args, &sig)    the CLI under test (cli_path()) with args, without a shell: for
 *                           arguments the shell would split or read (spaces, quotes, *, $)
 * Both leave the command's stdout and stderr, interleaved as written, in g_out (the first 64 KiB;
 * trailing newlines dropped) and return its exit status: 128 + the signal when it was killed (as
 * the shell reports it), -1 when it could not be started.
 *   first_line()            the first line of g_out, for a check's message
 *   absolute(p, buf)        p made absolute, for a command run from another working directory
 *   make_tmp_dir(name)      the test's own directory /tmp/gdn2_<name>XXXXXX in g_dir (a FAIL if
 *                           it cannot be made); path_in(file) a path in it; remove_tmp_dir() */
#ifndef GDN2_TEST_CLI_RUN_H
#define GDN2_TEST_CLI_RUN_H

#include <errno.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static char g_out[1 << 16]; /* stdout + stderr of the last run / run_gdn2 */
static char g_dir[256];     /* the test's temporary directory (make_tmp_dir) */

/* a wait status as the exit status the shell would report */
static inline int run_status_(int st) {
    if (st == -1) return -1;
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* fd's bytes into g_out until EOF; what does not fit is read and dropped, so that the command
 * never blocks on (or dies of) a full pipe */
static inline void run_capture_(int fd) {
    size_t n = 0;
    char sink[4096];
    for (;;) {
        size_t room = sizeof g_out - 1 - n;
        ssize_t k = room ? read(fd, g_out + n, room) : read(fd, sink, sizeof sink);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        if (room) n += (size_t)k;
    }
    while (n && g_out[n - 1] == '\n') n--;
    g_out[n] = 0;
}

/* run the shell command fmt (printf-style) with stdout and stderr captured in g_out; the command
 * runs in a group, { ...; } 2>&1, so that every part of a compound one (a && b; c) is captured */
__attribute__((format(printf, 1, 2))) static inline int run(const char *fmt, ...) {
    char body[16384], cmd[16384 + 16];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    g_out[0] = 0;
    if (len < 0 || (size_t)len >= sizeof body) {
        snprintf(g_out, sizeof g_out, "run: command longer than %zu bytes, not run", sizeof body - 1);
        return -1;
    }
    snprintf(cmd, sizeof cmd, "{ %s\n} 2>&1", body);
    fflush(stdout);
    FILE *f = popen(cmd, "r");
    if (!f) {
        snprintf(g_out, sizeof g_out, "run: popen: %s", strerror(errno));
        return -1;
    }
    run_capture_(fileno(f));
    return run_status_(pclose(f));
}

/* run the CLI under test with args (NULL-terminated, without argv[0]) through fork + execv, stdout
 * and stderr captured in g_out; *signaled (when not NULL) is 1 when it was killed by a signal */
static inline int run_gdn2(const char *const *args, int *signaled) {
    const char *argv[64];
    int n = 0;
    if (signaled) *signaled = 0;
    g_out[0] = 0;
    argv[n++] = cli_path();
    while (*args && n < 63) argv[n++] = *args++;
    argv[n] = NULL;
    if (*args) {
        snprintf(g_out, sizeof g_out, "run_gdn2: more than 62 arguments, not run");
        return -1;
    }
    int fds[2];
    if (pipe(fds)) {
        snprintf(g_out, sizeof g_out, "run_gdn2: pipe: %s", strerror(errno));
        return -1;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(g_out, sizeof g_out, "run_gdn2: fork: %s", strerror(errno));
        close(fds[0]), close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]), close(fds[1]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    run_capture_(fds[0]);
    close(fds[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    if (signaled) *signaled = WIFSIGNALED(st);
    return run_status_(st);
}

/* the first line of the last run's output (at most 1023 bytes of it), for a check's message */
static inline const char *first_line(void) {
    static char b[1024];
    size_t n = strcspn(g_out, "\n");
    snprintf(b, sizeof b, "%.*s", (int)(n < sizeof b ? n : sizeof b - 1), g_out);
    return b;
}

/* p made absolute in buf[512] (relative to the working directory) */
static inline const char *absolute(const char *p, char *buf) {
    char cwd[256];
    if (p[0] == '/' || !getcwd(cwd, sizeof cwd)) snprintf(buf, 512, "%s", p);
    else snprintf(buf, 512, "%s/%s", cwd, p);
    return buf;
}

/* make /tmp/gdn2_<name>XXXXXX into g_dir: 0, or a FAIL and -1 */
static inline int make_tmp_dir(const char *name) {
    snprintf(g_dir, sizeof g_dir, "/tmp/gdn2_%.200sXXXXXX", name);
    if (mkdtemp(g_dir)) return 0;
    CHECK(0, "cannot create a temporary directory %s: %s", g_dir, strerror(errno));
    g_dir[0] = 0;
    return -1;
}

/* g_dir/name; eight buffers in turn, so that a few such paths can be live at once */
static inline const char *path_in(const char *name) {
    static char buf[8][512];
    static int k;
    char *p = buf[k++ & 7];
    if ((size_t)snprintf(p, sizeof buf[0], "%s/%s", g_dir, name) >= sizeof buf[0])
        CHECK(0, "path_in: %s/%s is longer than %zu bytes", g_dir, name, sizeof buf[0] - 1);
    return p;
}

/* remove g_dir and everything in it (a note when that fails) */
static inline void remove_tmp_dir(void) {
    if (!g_dir[0]) return;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd)) printf("note: could not remove %s\n", g_dir);
}

#endif
