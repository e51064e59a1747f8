/* `make install` and the pkg-config file: installs the current build (PREFIX in a temporary
 * directory, same CUDA setting as build/libgdn2.so was built with), builds a small C program
 * against the installed tree with `pkg-config --cflags --libs gdn2` (shared) and with
 * `pkg-config --static` (libgdn2.a), runs both (gdn2_chunk_fwd against gdn2_ref_fwd on a small
 * problem, printed and checked), then a DESTDIR staging install and `make uninstall`. */
#include "check.h"
#include "cli_run.h"

static const char *prog =
    "#include <gdn2.h>\n"
    "#include <math.h>\n"
    "#include <stdio.h>\n"
    "#include <stdlib.h>\n"
    "#include <string.h>\n"
    "int main(void) {\n"
    "    gdn2_dims d = {1, 70, 2, 4, 16, 8};\n"
    "    gdn2_opts o; memset(&o, 0, sizeof o); o.qk_l2norm = 1; o.gate_in_kernel = 1;\n"
    "    size_t nk = 70 * 2 * 16, nv = 70 * 4 * 8, ns = 4 * 16 * 8;\n"
    "    float *f[6]; double *x[6]; size_t n[6] = {nk, nk, nv, nk, nk, nv};\n"
    "    unsigned s = 12345;\n"
    "    for (int i = 0; i < 6; i++) {\n"
    "        f[i] = malloc(n[i] * 4); x[i] = malloc(n[i] * 8);\n"
    "        for (size_t j = 0; j < n[i]; j++) {\n"
    "            s = s * 1664525u + 1013904223u;\n"
    "            double u = (s >> 8) / 16777216.0;\n"
    "            f[i][j] = (float)(i >= 4 ? u : 2 * u - 1); x[i][j] = f[i][j];\n"
    "        }\n"
    "    }\n"
    "    float *of = malloc(nv * 4), *hf = malloc(ns * 4); double *od = malloc(nv * 8), *hd = malloc(ns * 8);\n"
    "    gdn2_fwd_tensors t = {f[0], f[1], f[2], f[3], f[4], f[5], NULL, NULL, NULL, of, hf};\n"
    "    gdn2_fwd_tensors_f64 td = {x[0], x[1], x[2], x[3], x[4], x[5], NULL, NULL, NULL, od, hd};\n"
    "    if (gdn2_chunk_fwd(&d, &o, &t) || gdn2_ref_fwd(&d, &o, &td)) { printf(\"error: %s\\n\", gdn2_last_error()); return 1; }\n"
    "    double num = 0, den = 0;\n"
    "    for (size_t j = 0; j < nv; j++) { num += (of[j] - od[j]) * (of[j] - od[j]); den += od[j] * od[j]; }\n"
    "    double rel = sqrt(num / den);\n"
    "    printf(\"gdn2 %s chunk_fwd vs ref_fwd rel_rmse %.3e\\n\", gdn2_version(), rel);\n"
    "    return rel < 1e-5 && strcmp(gdn2_version(), GDN2_VERSION_STRING) == 0 ? 0 : 1;\n"
    "}\n";

int main(void) {
    if (make_tmp_dir("install")) return test_summary();
    int rc = run("command -v pkg-config");
    CHECK(rc == 0, "pkg-config is installed%s", rc ? " (apt-get install pkg-config)" : "");
    if (rc) return test_summary();
    /* build/libgdn2.so tells how the build was configured: linked to cudart = CUDA=1 */
    const char *so = getenv("GDN2_LIB") && *getenv("GDN2_LIB") ? getenv("GDN2_LIB") : "build/libgdn2.so";
    int cuda = run("readelf -d '%s' | grep -q cudart", so) == 0;
    /* the build folder to install from (make test sets GDN2_BUILD to its BUILD) */
    const char *bd = getenv("GDN2_BUILD") && *getenv("GDN2_BUILD") ? getenv("GDN2_BUILD") : "build";
    char prefix[512];
    snprintf(prefix, sizeof prefix, "%s/usr", g_dir);
    rc = run("env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s install BUILD='%s' PREFIX='%s' CUDA=%d 2>&1", bd, prefix, cuda);
    CHECK(rc == 0, "make install PREFIX=%s CUDA=%d: exit %d %s", prefix, cuda, rc, rc ? g_out : "");
    if (rc) return test_summary();
    rc = run("cd '%s' && ls bin/gdn2 include/gdn2/gdn2.h include/gdn2/gdn2_ops.h include/gdn2/gdn2_export.h "
             "lib/libgdn2.a lib/libgdn2.so lib/libgdn2.so.0 lib/libgdn2.so.0.1.0 lib/pkgconfig/gdn2.pc && "
             "test -L lib/libgdn2.so && test -L lib/libgdn2.so.0 && ! ls include/gdn2/*.orig 2>/dev/null", prefix);
    CHECK(rc == 0, "installed: bin/gdn2, include/gdn2/*.h, lib/libgdn2.{a,so,so.0,so.0.1.0}, lib/pkgconfig/gdn2.pc%s%s",
          rc ? ": " : "", rc ? g_out : "");
    char env[1024];
    snprintf(env, sizeof env, "PKG_CONFIG_PATH='%s/lib/pkgconfig'", prefix);
    rc = run("%s pkg-config --modversion gdn2 && %s pkg-config --cflags --libs gdn2", env, env);
    CHECK(rc == 0 && !strncmp(g_out, "0.1.0\n", 6) && contains(g_out, "/include/gdn2") && contains(g_out, "-lgdn2"),
          "pkg-config gdn2: %s", g_out);
    rc = run("%s pkg-config --libs --static gdn2", env);
    CHECK(rc == 0 && contains(g_out, "-lcjson"), "pkg-config --static lists the private dependencies: %s", g_out);

    char src[512];
    snprintf(src, sizeof src, "%s/prog.c", g_dir);
    FILE *f = fopen(src, "w");
    if (f) fputs(prog, f), fclose(f);
    const char *cc = getenv("CC") && *getenv("CC") ? getenv("CC") : "cc";
    rc = run("cd '%s' && %s %s prog.c -o prog_shared $(%s pkg-config --cflags --libs gdn2) -lm", g_dir, env, cc, env);
    CHECK(rc == 0, "build against the installed tree (shared): exit %d %s", rc, rc ? g_out : "");
    if (rc == 0) {
        rc = run("cd '%s' && LD_LIBRARY_PATH='%s/lib' ./prog_shared && LD_LIBRARY_PATH='%s/lib' ldd ./prog_shared | grep libgdn2",
                 g_dir, prefix, prefix);
        CHECK(rc == 0 && contains(g_out, "rel_rmse") && contains(g_out, prefix),
              "shared program runs with the installed libgdn2.so.0: %s", g_out);
    }
    rc = run("cd '%s' && %s prog.c -o prog_static $(%s pkg-config --cflags gdn2) "
             "$(%s pkg-config --libs --static gdn2 | sed 's/-lgdn2/-l:libgdn2.a/') -lm", g_dir, cc, env, env);
    CHECK(rc == 0, "build against the installed tree (static, libgdn2.a): exit %d %s", rc, rc ? g_out : "");
    if (rc == 0) {
        rc = run("cd '%s' && ./prog_static && ! ldd ./prog_static | grep -q libgdn2", g_dir);
        CHECK(rc == 0 && contains(g_out, "rel_rmse"), "static program runs (no libgdn2.so needed): %s", g_out);
    }
    rc = run("'%s/bin/gdn2' --help >/dev/null 2>&1", prefix);
    CHECK(rc == 0, "installed CLI runs: gdn2 --help exit %d", rc);

    /* DESTDIR staging: files under DESTDIR, gdn2.pc naming the final PREFIX */
    rc = run("env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s install BUILD='%s' DESTDIR='%s/stage' PREFIX=/opt/gdn2 CUDA=%d 2>&1 && "
             "grep -x 'prefix=/opt/gdn2' '%s/stage/opt/gdn2/lib/pkgconfig/gdn2.pc' && "
             "test -f '%s/stage/opt/gdn2/lib/libgdn2.so.0.1.0'", bd, g_dir, cuda, g_dir, g_dir);
    CHECK(rc == 0, "make install DESTDIR=... PREFIX=/opt/gdn2: staged, gdn2.pc says prefix=/opt/gdn2%s%s",
          rc ? ": " : "", rc ? g_out : "");
    rc = run("env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s uninstall BUILD='%s' PREFIX='%s' 2>&1 && cd '%s' && find . -name '*gdn2*' | sort | tr '\\n' ' '", bd, prefix, prefix);
    CHECK(rc == 0 && g_out[0] == 0, "make uninstall removes every installed file (left: %s)", g_out[0] ? g_out : "none");
    run("rm -rf '%s'", g_dir);
    return test_summary();
}
