/* gdn2 status codes and the error message of the last failure (src/util/error.c). Every gdn2
 * function that can fail returns an int status (GDN2_OK = 0) and leaves a human-readable message,
 * per thread, in gdn2_last_error(). */
#ifndef GDN2_ERROR_H
#define GDN2_ERROR_H

#include "gdn2_export.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------ */
/* status and errors                                                                          */
/* ------------------------------------------------------------------------------------------ */
enum {
    GDN2_OK = 0,
    GDN2_ERR_ARG = 1,         /* bad shape, option or value                     */
    GDN2_ERR_IO = 2,          /* file could not be opened / read / written      */
    GDN2_ERR_FORMAT = 3,      /* malformed file                                 */
    GDN2_ERR_NOMEM = 4,       /* allocation failed                              */
    GDN2_ERR_UNSUPPORTED = 5, /* feature not built in (e.g. CUDA) or no device  */
    GDN2_ERR_DEVICE = 6,      /* CUDA / cuBLAS runtime failure                  */
};

/* Message of the last failure in this thread ("" if none). */
GDN2_API const char *gdn2_last_error(void);
/* Record a failure message (printf-style) and return `status`. Used by every module. */
GDN2_API int gdn2_error(int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
GDN2_API void gdn2_clear_error(void);
/* Format a shape as "[2,200,2,64]" into buf (a negative entry, a wildcard, prints as '*'); for messages. */
GDN2_API const char *gdn2_shape_str(int ndim, const int64_t *shape, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* GDN2_ERROR_H */
