/* The Python package (python/gdn2) in the C suite: runs python/tests/test_gdn2.py with python3
 * (env GDN2_PYTHON overrides; /usr/bin/python3 when the first python3 on PATH has no numpy) against build/libgdn2.so (env GDN2_LIB, as tests/test_symbols.c),
 * echoes its lines and counts its PASS / FAIL lines as this program's checks. A missing python3 or
 * numpy is a FAIL (CI installs python3-numpy: .ci/run). torch is optional: without it the script
 * says so on a "note:" line and runs the numpy checks only (no SKIP is counted: tests/run.sh fails
 * CI on any skip but the no-GPU one). */
#include "check.h"
#include "gdn2_cuda.h"
#include "gdn2_ops.h"
#include "cli_run.h"

int main(void) {
    const char *py = getenv("GDN2_PYTHON") && *getenv("GDN2_PYTHON") ? getenv("GDN2_PYTHON") : "python3";
    const char *so = getenv("GDN2_LIB") && *getenv("GDN2_LIB") ? getenv("GDN2_LIB") : "build/libgdn2.so";
    char abs[512];
    int rc = run("%s -c 'import numpy, sys; print(sys.version.split()[0], numpy.__version__)'", py);
    /* a python3 first on PATH without numpy (a pyenv, a venv): the system's, where python3-numpy goes */
    if (rc && !getenv("GDN2_PYTHON") && access("/usr/bin/python3", X_OK) == 0 &&
        run("/usr/bin/python3 -c 'import numpy, sys; print(sys.version.split()[0], numpy.__version__)'") == 0) {
        py = "/usr/bin/python3";
        rc = 0;
    }
    CHECK(rc == 0, "%s with numpy: %s%s", py, first_line(),
          rc ? " (install them: apt-get install python3 python3-numpy)" : "");
    if (rc) return test_summary();
    /* the C sizes of the structs the package mirrors in ctypes (python/gdn2/_lib.py) */
    char sizes[512];
    snprintf(sizes, sizeof sizes,
             "gdn2_dims=%zu,gdn2_opts=%zu,gdn2_fwd_tensors=%zu,gdn2_bwd_tensors=%zu,gdn2_decode_tensors=%zu,"
             "gdn2_cuda_fwd_args=%zu,gdn2_cuda_bwd_args=%zu,gdn2_cuda_recurrent_args=%zu",
             sizeof(gdn2_dims), sizeof(gdn2_opts), sizeof(gdn2_fwd_tensors), sizeof(gdn2_bwd_tensors),
             sizeof(gdn2_decode_tensors), sizeof(gdn2_cuda_fwd_args), sizeof(gdn2_cuda_bwd_args),
             sizeof(gdn2_cuda_recurrent_args));
    rc = run("GDN2_C_SIZES='%s' GDN2_LIBRARY='%s' %s python/tests/test_gdn2.py", sizes, absolute(so, abs), py);
    int seen_summary = 0, p0 = g_pass, f0 = g_fail;
    char *save = NULL;
    for (char *line = strtok_r(g_out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(line, "PASS ", 5)) g_pass++;
        else if (!strncmp(line, "FAIL ", 5)) g_fail++;
        else if (strstr(line, " passed, ") && strstr(line, " skipped")) {
            seen_summary = 1;
            printf("python: %s\n", line);
            continue;
        }
        printf("%s\n", line);
    }
    CHECK(seen_summary && (rc == 0) == (g_fail == f0) && g_pass > p0,
          "python/tests/test_gdn2.py ran to its summary (exit %d, %d checks)", rc, g_pass - p0 + g_fail - f0);
    return test_summary();
}
