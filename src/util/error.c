/* Thread-local error message: every failing call records why, callers print gdn2_last_error(). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"

static _Thread_local char g_err[1024];

const char *gdn2_last_error(void) { return g_err; }

void gdn2_clear_error(void) { g_err[0] = 0; }

int gdn2_error(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    return status;
}

void *gdn2_malloc(size_t bytes, const char *what) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) gdn2_error(GDN2_ERR_NOMEM, "out of memory allocating %zu bytes for %s", bytes, what);
    return p;
}

void *gdn2_calloc(size_t n, size_t size, const char *what) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) gdn2_error(GDN2_ERR_NOMEM, "out of memory allocating %zu x %zu bytes for %s", n, size, what);
    return p;
}

double gdn2_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* "[2,200,2,64]"; a negative entry (a wildcard in an expected shape) prints as '*'. */
const char *gdn2_shape_str(int ndim, const int64_t *shape, char *buf, size_t len) {
    size_t n = 0;
    if (!buf || len == 0) return "";
    buf[0] = 0;
#define APPEND(...)                                                                                \
    do {                                                                                           \
        if (n < len) {                                                                             \
            int w_ = snprintf(buf + n, len - n, __VA_ARGS__);                                      \
            if (w_ > 0) n += (size_t)w_;                                                           \
        }                                                                                          \
    } while (0)
    APPEND("[");
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) APPEND("%s*", i ? "," : "");
        else APPEND("%s%lld", i ? "," : "", (long long)shape[i]);
    }
    APPEND("]");
#undef APPEND
    return buf;
}
