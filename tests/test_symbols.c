/* The shared library's interface: libgdn2.so (env GDN2_LIB, default build/libgdn2.so) exports
 * exactly the functions declared in the public headers include/ *.h, all prefixed gdn2_ and marked
 * GDN2_API (include/gdn2_export.h); nothing internal (src/ AREA/ *.h, static helpers) leaks. Also
 * the soname, the symlinks and the version functions, through dlopen.
 *
 * The declarations are read from the preprocessed headers (the compiler's -E output, keeping only
 * the lines that come from include/): a top-level `TYPE NAME(ARGS);` that is not a typedef and not
 * static is a public function. A new public function without GDN2_API is reported as declared but
 * not exported, naming its header. */
#include <ctype.h>
#include <dirent.h>
#include <dlfcn.h>

#include "check.h"
#include "cli_run.h"
#include "gdn2_export.h"

#define MAX_SYMS 4096

typedef struct {
    char name[128];
    char file[128];
} sym;

static sym g_decl[MAX_SYMS], g_exp[MAX_SYMS];
static int n_decl, n_exp;

static const char *lib_path(void) {
    const char *e = getenv("GDN2_LIB");
    return e && *e ? e : "build/libgdn2.so";
}

static int find(const sym *s, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(s[i].name, name)) return i;
    return -1;
}

static void add(sym *s, int *n, const char *name, const char *file) {
    if (*n >= MAX_SYMS || find(s, *n, name) >= 0) return;
    snprintf(s[*n].name, sizeof s[*n].name, "%s", name);
    snprintf(s[*n].file, sizeof s[*n].file, "%s", file);
    (*n)++;
}

/* The function declarations of the preprocessed text pp that come from files under include/. */
static void parse_decls(const char *pp) {
    char file[128] = "", cand[128] = "", cand_file[128] = "";
    int brace = 0, paren = 0, skip = 0, in_pub = 0;
    const char *p = pp;
    while (*p) {
        if (*p == '#' && (p == pp || p[-1] == '\n')) { /* line marker: # 12 "include/gdn2_ops.h" 1 */
            const char *q = strchr(p, '"'), *e = strchr(p, '\n');
            if (q && (!e || q < e)) {
                const char *r = strchr(q + 1, '"');
                if (r) snprintf(file, sizeof file, "%.*s", (int)(r - q - 1), q + 1);
            }
            in_pub = !strncmp(file, "include/", 8) && strstr(file, ".h") != NULL;
            p = e ? e + 1 : p + strlen(p);
            continue;
        }
        if (*p == '"' || *p == '\'') { /* string / char literal */
            char c = *p++;
            while (*p && *p != c) p += (*p == '\\' && p[1]) ? 2 : 1;
            if (*p) p++;
            continue;
        }
        if (isalpha((unsigned char)*p) || *p == '_') {
            const char *s = p;
            while (isalnum((unsigned char)*p) || *p == '_') p++;
            char id[128];
            snprintf(id, sizeof id, "%.*s", (int)(p - s), s);
            if (brace == 0 && paren == 0) {
                if (!strcmp(id, "typedef") || !strcmp(id, "static")) skip = 1;
                const char *q = p;
                while (*q == ' ' || *q == '\t' || *q == '\n') q++;
                if (*q == '(' && !cand[0] && strncmp(id, "__", 2)) {
                    snprintf(cand, sizeof cand, "%s", id);
                    snprintf(cand_file, sizeof cand_file, "%s", file);
                }
            }
            continue;
        }
        if (*p == '(') paren++;
        else if (*p == ')') paren--;
        else if (*p == '{') {
            if (brace == 0 && paren == 0 && cand[0]) skip = 1; /* a function definition (inline) */
            brace++;
        } else if (*p == '}') brace--;
        if ((*p == ';' && brace == 0 && paren == 0) || (*p == '}' && brace == 0)) {
            if (*p == ';') {
                if (cand[0] && !skip && in_pub) add(g_decl, &n_decl, cand, cand_file);
                cand[0] = 0;
                skip = 0;
            }
        }
        if (*p == '{' && brace == 1 && !cand[0]) skip = 0; /* struct / enum body: the name after it decides */
        p++;
    }
}

int main(void) {
    const char *so = lib_path();
    printf("shared library: %s\n", so);

    /* ---- declarations of every include/ *.h (each header on its own, so that one left out of the
     * umbrella gdn2.h counts as well) ---- */
    if (make_tmp_dir("symbols")) return test_summary();
    char src[512];
    snprintf(src, sizeof src, "%s/all.c", g_dir);
    FILE *f = fopen(src, "w");
    DIR *dir = opendir("include");
    int n_headers = 0;
    if (f && dir) {
        struct dirent *e;
        while ((e = readdir(dir))) {
            size_t L = strlen(e->d_name);
            if (L > 2 && !strcmp(e->d_name + L - 2, ".h")) {
                fprintf(f, "#include \"%s\"\n", e->d_name);
                n_headers++;
            }
        }
    }
    if (dir) closedir(dir);
    if (f) fclose(f);
    CHECK(n_headers >= 10, "found %d public headers in include/", n_headers);
    const char *cc = getenv("CC") && *getenv("CC") ? getenv("CC") : "cc";
    char pp_path[512];
    snprintf(pp_path, sizeof pp_path, "%s/all.i", g_dir);
    int rc = run("%s -E -Iinclude '%s' -o '%s'", cc, src, pp_path);
    CHECK(rc == 0, "preprocess the public headers (%s -E): exit %d %s", cc, rc, rc ? first_line() : "");
    static char pp[8 << 20];
    FILE *in = rc == 0 ? fopen(pp_path, "r") : NULL;
    size_t npp = in ? fread(pp, 1, sizeof pp - 1, in) : 0;
    if (in) fclose(in);
    pp[npp] = 0;
    parse_decls(pp);
    CHECK(n_decl >= 100, "public function declarations found in include/: %d", n_decl);
    CHECK(find(g_decl, n_decl, "gdn2_chunk_fwd") >= 0 && find(g_decl, n_decl, "gdn2_version") >= 0 &&
              find(g_decl, n_decl, "gdn2_last_error") >= 0,
          "the parser finds gdn2_chunk_fwd, gdn2_version and gdn2_last_error");
    CHECK(find(g_decl, n_decl, "gdn2_softplus_f32") < 0 && find(g_decl, n_decl, "gdn2_malloc") < 0,
          "internal helpers are not among the public declarations");

    /* ---- exported symbols ---- */
    rc = run("nm -D --defined-only '%s'", so);
    CHECK(rc == 0, "nm -D --defined-only %s: exit %d %s", so, rc,
          rc ? "(build it first: make lib-shared; nm is in binutils)" : "");
    if (rc == 0) {
        char *save = NULL;
        for (char *line = strtok_r(g_out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            char a[64], t[8], name[256];
            if (sscanf(line, "%63s %7s %255s", a, t, name) == 3) add(g_exp, &n_exp, name, "");
        }
    }
    printf("%d exported, %d declared\n", n_exp, n_decl);
    int bad_prefix = 0, not_declared = 0, not_exported = 0;
    for (int i = 0; i < n_exp; i++) {
        if (strncmp(g_exp[i].name, "gdn2_", 5)) {
            bad_prefix++;
            printf("  exported symbol without the gdn2_ prefix: %s\n", g_exp[i].name);
        } else if (find(g_decl, n_decl, g_exp[i].name) < 0) {
            not_declared++;
            printf("  exported but not declared in include/ (internal: drop GDN2_API or make it static): %s\n",
                   g_exp[i].name);
        }
    }
    for (int i = 0; i < n_decl; i++)
        if (find(g_exp, n_exp, g_decl[i].name) < 0) {
            not_exported++;
            printf("  declared in %s but not exported by %s: %s (mark its declaration GDN2_API, "
                   "include/gdn2_export.h, and make sure the library defines it)\n",
                   g_decl[i].file, so, g_decl[i].name);
        }
    CHECK(n_exp > 0 && bad_prefix == 0, "every exported symbol is prefixed gdn2_ (%d are not)", bad_prefix);
    CHECK(n_exp > 0 && not_declared == 0, "every exported symbol is declared in include/ (%d are not)", not_declared);
    CHECK(n_exp > 0 && not_exported == 0, "every function declared in include/ is exported (%d are not)",
          not_exported);

    /* ---- soname, symlinks, version, hidden internals through dlopen ---- */
    rc = run("readelf -d '%s' | grep SONAME", so);
    CHECK(rc == 0 && contains(g_out, "[libgdn2.so." "0" "]") == (GDN2_VERSION_MAJOR == 0),
          "soname libgdn2.so.%d: %s", GDN2_VERSION_MAJOR, first_line());
    rc = run("readlink '%s' && readlink \"$(dirname '%s')/$(readlink '%s')\"", so, so, so);
    char want[256];
    snprintf(want, sizeof want, "libgdn2.so.%d\nlibgdn2.so.%s", GDN2_VERSION_MAJOR, GDN2_VERSION_STRING);
    CHECK(rc == 0 && !strcmp(g_out, want), "libgdn2.so -> libgdn2.so.%d -> libgdn2.so.%s (got: %s)",
          GDN2_VERSION_MAJOR, GDN2_VERSION_STRING, rc == 0 ? g_out : "no links");
    char abs[512];
    void *h = dlopen(absolute(so, abs), RTLD_NOW | RTLD_LOCAL);
    CHECK(h != NULL, "dlopen %s: %s", so, h ? "ok" : dlerror());
    if (h) {
        const char *(*ver)(void) = (const char *(*)(void))dlsym(h, "gdn2_version");
        int (*vnum)(void) = (int (*)(void))dlsym(h, "gdn2_version_number");
        CHECK(ver && !strcmp(ver(), GDN2_VERSION_STRING), "gdn2_version() = \"%s\" (header %s)",
              ver ? ver() : "(missing)", GDN2_VERSION_STRING);
        CHECK(vnum && vnum() == GDN2_VERSION_NUMBER, "gdn2_version_number() = %d (header %d)", vnum ? vnum() : -1,
              GDN2_VERSION_NUMBER);
        CHECK(dlsym(h, "gdn2_malloc") == NULL && dlsym(h, "gdn2_chunk_setup") == NULL,
              "internal functions (gdn2_malloc, gdn2_chunk_setup) are hidden");
        dlclose(h);
    }
    CHECK(!strcmp(gdn2_version(), "0.1.0") || GDN2_VERSION_NUMBER != 100, "static library: gdn2_version() = %s",
          gdn2_version());
    run("rm -rf '%s'", g_dir);
    return test_summary();
}
