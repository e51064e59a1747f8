/* gdn2 symbol export and library version. Every public header includes this file.
 *
 * The library is compiled with -fvisibility=hidden: only the functions marked GDN2_API are
 * exported by libgdn2.so (the public API: the functions declared in the include/ headers). Every function
 * declared in a public header must carry GDN2_API; tests/test_symbols.c compares the exported
 * symbols of libgdn2.so with the declarations in the include/ headers and fails on a missing or an extra
 * one. Internal headers (src/AREA/NAME.h) never use it. */
#ifndef GDN2_EXPORT_H
#define GDN2_EXPORT_H

#ifndef GDN2_API /* (the Makefile defines it to a marker to list the exports: see libgdn2.map) */
#if defined(_WIN32) && defined(GDN2_BUILDING_DLL)
#define GDN2_API __declspec(dllexport)
#elif defined(__GNUC__) || defined(__clang__)
#define GDN2_API __attribute__((visibility("default")))
#else
#define GDN2_API
#endif
#endif

/* Library version (semantic versioning; the shared library's soname is libgdn2.so.MAJOR). The
 * Makefile reads GDN2_VERSION_STRING from here for the file names and gdn2.pc. */
#define GDN2_VERSION_MAJOR 0
#define GDN2_VERSION_MINOR 1
#define GDN2_VERSION_PATCH 0
#define GDN2_VERSION_STRING "0.1.0"
/* MAJOR * 10000 + MINOR * 100 + PATCH */
#define GDN2_VERSION_NUMBER (GDN2_VERSION_MAJOR * 10000 + GDN2_VERSION_MINOR * 100 + GDN2_VERSION_PATCH)

#ifdef __cplusplus
extern "C" {
#endif
/* The version of the library actually linked or loaded (may differ from the header's
 * GDN2_VERSION_STRING when a program runs against another libgdn2.so): "0.1.0" and 100. */
GDN2_API const char *gdn2_version(void);
GDN2_API int gdn2_version_number(void);
#ifdef __cplusplus
}
#endif

#endif /* GDN2_EXPORT_H */
