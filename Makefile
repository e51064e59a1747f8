# gdn2 build. `make` builds build/libgdn2.a, build/gdn2 (CLI), tests and benchmarks.
#   make test          run the test suite (ends with "N passed, N failed, N skipped")
#   make NATIVE=1      opt in to -O3 -march=native (the default build runs on any x86-64)
#   make CUDA=0        build without CUDA even if nvcc exists
#   make CUDA_ARCH=sm_90a   GPU target (default sm_90a: H100/H200)
#   make asan-test     library, CLI and tests with ASan+UBSan (+LSan) in build-asan/, then the suite
#                      against them (make asan: build only)
#   make fuzz          libFuzzer targets (clang) in build-fuzz/fuzz/; see tests/fuzz/README.md
#   make MPI=0         build without MPI even if it is found
# Detected automatically: OpenBLAS (cblas sgemm), OpenMP, CUDA (nvcc), libmicrohttpd (`gdn2 serve`
# is built only with it), MPI (mpicc -showme or pkg-config ompi-c / mpi: `mpirun -np N gdn2 train`,
# docs/DIST.md; without it src/dist/comm_mpi.c is a stub that says so). libcjson is required.

CC      ?= gcc
NVCC    ?= nvcc
BUILD   ?= build
CSTD    := -std=c11 -D_POSIX_C_SOURCE=200809L
WARN    := -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare
OPT     := -O2
ifeq ($(NATIVE),1)
OPT     := -O3 -march=native
endif
CFLAGS  += $(CSTD) $(OPT) $(WARN) -g -fPIC -Iinclude -Isrc $(CPPFLAGS) $(SANFLAGS)
LDLIBS  += -lm
# only the functions marked GDN2_API (include/gdn2_export.h) are exported by libgdn2.so
CFLAGS  += -fvisibility=hidden

# try-compile: extra include/library dirs can come through CPPFLAGS / LDFLAGS (e.g. unpacked .debs)
try = $(shell printf '$(1)\nint main(void){return 0;}\n' | $(CC) $(CPPFLAGS) -x c - $(LDFLAGS) $(2) -o /dev/null >/dev/null 2>&1 && echo 1)

HAVE_OPENMP := $(call try,#include <omp.h>,-fopenmp)
ifeq ($(HAVE_OPENMP),1)
CFLAGS  += -fopenmp
LDLIBS  += -fopenmp
endif

HAVE_BLAS := $(call try,#include <cblas.h>,-lopenblas)
ifeq ($(HAVE_BLAS),1)
CFLAGS  += -DGDN2_HAVE_BLAS
LDLIBS  += -lopenblas
endif

HAVE_CJSON := $(call try,#include <cjson/cJSON.h>,-lcjson)
ifneq ($(HAVE_CJSON),1)
$(error libcjson not found: apt-get install libcjson-dev)
endif
LDLIBS  += -lcjson

# libmicrohttpd: the HTTP server of `gdn2 serve` (without it the command says how to get it)
HAVE_MHD := $(call try,#include <microhttpd.h>,-lmicrohttpd)
ifeq ($(HAVE_MHD),1)
CFLAGS  += -DGDN2_HAVE_MHD
LDLIBS  += -lmicrohttpd -lpthread
else
$(info libmicrohttpd not found: building gdn2 without `gdn2 serve` (apt-get install libmicrohttpd-dev))
endif

# MPI: the flags of the MPI C compiler wrapper (OpenMPI's -showme, MPICH's -compile_info is not
# parsed), else pkg-config; used only if a program including <mpi.h> links with them
MPICC ?= mpicc
ifneq ($(MPI),0)
MPI_CFLAGS := $(shell $(MPICC) -showme:compile 2>/dev/null || pkg-config --cflags ompi-c 2>/dev/null || pkg-config --cflags mpi 2>/dev/null)
MPI_LIBS   := $(shell $(MPICC) -showme:link 2>/dev/null || pkg-config --libs ompi-c 2>/dev/null || pkg-config --libs mpi 2>/dev/null)
HAVE_MPI   := $(call try,#include <mpi.h>,$(MPI_CFLAGS) $(MPI_LIBS))
endif
ifeq ($(HAVE_MPI),1)
CFLAGS  += -DGDN2_HAVE_MPI $(MPI_CFLAGS)
LDLIBS  += $(MPI_LIBS)
else
ifneq ($(MPI),0)
$(info MPI not found: building gdn2 without `mpirun -np N gdn2 train` (apt-get install libopenmpi-dev openmpi-bin))
endif
HAVE_MPI := 0
endif

CUDA ?= $(if $(shell command -v $(NVCC) 2>/dev/null),1,0)
CUDA_ARCH ?= sm_90a
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(shell command -v $(NVCC) 2>/dev/null))
# cuBLAS(Lt): the toolkit's by default. Another copy (e.g. CUDA 12.x's libcublas beside a CUDA 13 nvcc) through
#   make CUDA=1 CUBLAS_INC=-I/path/include CUBLAS_LIBS="-L/path/lib -Wl,-rpath,/path/lib -l:libcublasLt.so.12 -l:libcublas.so.12"
CUBLAS_INC  ?=
CUBLAS_LIBS ?= -lcublasLt -lcublas

# library sources: every src/<concern>/*.c except the CLI. src/cuda/*.c are host-side stubs used
# only when CUDA is off; src/cuda/*.cu are the GPU kernels.
LIB_C   := $(filter-out src/cli/% src/cuda/%,$(wildcard src/*/*.c))
CUDA_CU := $(wildcard src/cuda/*.cu)
ifeq ($(CUDA),1)
CFLAGS  += -DGDN2_HAVE_CUDA
NVFLAGS := -O3 -std=c++17 -arch=$(CUDA_ARCH) -lineinfo -Xcompiler -fPIC -Iinclude -Isrc -DGDN2_HAVE_CUDA
NVFLAGS += $(NVFLAGS_EXTRA)
NVFLAGS += $(CUBLAS_INC)
LDLIBS  += -L$(CUDA_HOME)/lib64 -L$(CUDA_HOME)/targets/x86_64-linux/lib $(CUBLAS_LIBS) -lnccl -lcudart -lstdc++ -ldl -lpthread -lrt
LIB_OBJ := $(LIB_C:%.c=$(BUILD)/%.o) $(CUDA_CU:%.cu=$(BUILD)/%.cu.o)
else
LIB_OBJ := $(LIB_C:%.c=$(BUILD)/%.o) $(patsubst %.c,$(BUILD)/%.o,$(wildcard src/cuda/*.c))
endif
NVFLAGS += -Xcompiler -fvisibility=hidden

CLI_OBJ   := $(patsubst %.c,$(BUILD)/%.o,$(wildcard src/cli/*.c))
TEST_BIN  := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))
BENCH_BIN := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/*.c))
LIB       := $(BUILD)/libgdn2.a

.PHONY: all lib test clean info
all: $(LIB) $(BUILD)/gdn2 $(TEST_BIN) $(BENCH_BIN)
lib: $(LIB)

info:
	@echo "openmp=$(HAVE_OPENMP) openblas=$(HAVE_BLAS) microhttpd=$(HAVE_MHD) mpi=$(HAVE_MPI) cuda=$(CUDA) arch=$(CUDA_ARCH) native=$(NATIVE)"

$(BUILD)/%.o: %.c $(wildcard include/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/%.cu.o: %.cu $(wildcard include/*.h src/*/*.h src/cuda/*.cuh)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/gdn2: $(CLI_OBJ) $(LIB)
	$(CC) $(CFLAGS) $(CLI_OBJ) $(LIB) $(LDFLAGS) $(LDLIBS) -o $@

$(BUILD)/tests/%: tests/%.c $(wildcard tests/*.h) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(LIB) $(LDFLAGS) $(LDLIBS) -o $@

$(BUILD)/bench/%: bench/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(LIB) $(LDFLAGS) $(LDLIBS) -o $@

# the suite tests this build: its CLI, its shared library and `make install` of it (each test reads
# GDN2_CLI, GDN2_LIB, GDN2_BUILD; set one to test something else)
test: all
	@GDN2_CLI=$${GDN2_CLI:-$(BUILD)/gdn2} GDN2_LIB=$${GDN2_LIB:-$(BUILD)/libgdn2.so} GDN2_BUILD=$${GDN2_BUILD:-$(BUILD)} \
	    sh tests/run.sh $(BUILD)

# ---- shared library, install, pkg-config ---------------------------------------------------------
# `make lib-shared` builds $(BUILD)/libgdn2.so.$(VERSION) (soname libgdn2.so.MAJOR) with the
# symlinks libgdn2.so.MAJOR and libgdn2.so, from the same objects as the static library (-fPIC,
# -fvisibility=hidden: only GDN2_API functions are exported). `make install PREFIX=/usr/local`
# (DESTDIR-aware; LIBDIR, INCLUDEDIR, BINDIR, PKGCONFIGDIR may be set) installs the headers into
# INCLUDEDIR/gdn2/, both libraries, the CLI and gdn2.pc (`pkg-config --cflags --libs gdn2`; add
# --static for libgdn2.a, whose dependencies are in Libs.private). `make uninstall` removes them.
VERSION      := $(shell sed -n 's/^\#define GDN2_VERSION_STRING "\(.*\)"/\1/p' include/gdn2_export.h)
SOMAJOR      := $(firstword $(subst ., ,$(VERSION)))
SONAME       := libgdn2.so.$(SOMAJOR)
LIB_SO       := $(BUILD)/libgdn2.so.$(VERSION)
PREFIX       ?= /usr/local
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
BINDIR       ?= $(PREFIX)/bin
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
PUB_H        := $(wildcard include/*.h)
.PHONY: lib-shared install uninstall
all: $(BUILD)/libgdn2.so
lib-shared: $(BUILD)/libgdn2.so

$(LIB_SO): $(LIB_OBJ) $(BUILD)/libgdn2.map
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--no-undefined -Wl,--version-script=$(BUILD)/libgdn2.map $(CFLAGS) \
	    $(LIB_OBJ) $(LDFLAGS) $(LDLIBS) -o $@
# The linker's export list: the GDN2_API declarations of the public headers (GDN2_API defined to a
# marker). -fvisibility=hidden alone is not enough: GCC 12 exports the ifunc symbols of the
# target_clones functions (src/ops/chunk_common.h) whatever their visibility.
$(BUILD)/libgdn2.map: $(PUB_H)
	@mkdir -p $(dir $@)
	{ echo '{ global:'; for h in $(notdir $(PUB_H)); do echo "#include \"$$h\""; done | \
	    $(CC) -E -P -Iinclude -DGDN2_API=__gdn2_api__ -x c - | tr '\n' ' ' | grep -o '__gdn2_api__[^;(]*(' | \
	    sed -E 's/.*[^A-Za-z0-9_]([A-Za-z_][A-Za-z0-9_]*) *\($$/  \1;/'; echo 'local: *; };'; } > $@
$(BUILD)/$(SONAME): $(LIB_SO)
	ln -sf $(notdir $<) $@
$(BUILD)/libgdn2.so: $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $@

install: $(LIB) $(BUILD)/libgdn2.so $(BUILD)/gdn2
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR)/gdn2 $(DESTDIR)$(PKGCONFIGDIR)
	install -m 644 $(PUB_H) $(DESTDIR)$(INCLUDEDIR)/gdn2/
	install -m 644 $(LIB) $(DESTDIR)$(LIBDIR)/libgdn2.a
	install -m 755 $(LIB_SO) $(DESTDIR)$(LIBDIR)/
	ln -sf libgdn2.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libgdn2.so
	install -m 755 $(BUILD)/gdn2 $(DESTDIR)$(BINDIR)/gdn2
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCLUDEDIR)' '' \
	    'Name: gdn2' 'Description: Gated DeltaNet-2 kernels, layer and models (C11 + CUDA C)' \
	    'Version: $(VERSION)' 'Cflags: -I$${includedir}/gdn2' 'Libs: -L$${libdir} -lgdn2' \
	    'Libs.private: $(strip $(LDFLAGS) $(LDLIBS))' > $(DESTDIR)$(PKGCONFIGDIR)/gdn2.pc

uninstall:
	rm -f $(PUB_H:include/%=$(DESTDIR)$(INCLUDEDIR)/gdn2/%) $(DESTDIR)$(LIBDIR)/libgdn2.a \
	    $(DESTDIR)$(LIBDIR)/libgdn2.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libgdn2.so \
	    $(DESTDIR)$(BINDIR)/gdn2 $(DESTDIR)$(PKGCONFIGDIR)/gdn2.pc
	-rmdir $(DESTDIR)$(INCLUDEDIR)/gdn2 2>/dev/null

clean:
	rm -rf $(BUILD)

# ---- sanitizers and fuzzing ----------------------------------------------------------------------
# `make asan` rebuilds everything but the benchmarks into build-asan/ (a make of its own, CUDA off)
# with AddressSanitizer + UndefinedBehaviorSanitizer; any UB report aborts (-fno-sanitize-recover).
# `make asan-test` runs the suite against it, with the sanitized CLI (the tests read GDN2_CLI) and
# LeakSanitizer on. OpenBLAS and libcjson are not instrumented (their own memory is not checked).
ASAN_BUILD := build-asan
ASAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
ASAN_ENV   := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 \
              UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 LSAN_OPTIONS=report_objects=1
.PHONY: asan asan-test fuzz fuzz-run
# ASAN_TESTS: the test programs to build and run (default all but ASAN_SKIP, e.g.
# ASAN_SKIP="test_chunk test_collapse"). They run from $(ASAN_BUILD)/run/tests (links), so a subset
# runs alone even after a full build.
ASAN_SKIP  ?=
# not run under ASan: they test the regular build's packaging (install tree, exported symbols of
# build/libgdn2.so, the Python package on it), not the library's memory use
ASAN_NOT   := test_install test_symbols test_python
ASAN_TESTS ?= $(filter-out $(ASAN_SKIP) $(ASAN_NOT),$(notdir $(TEST_BIN)))
asan:
	$(MAKE) BUILD=$(ASAN_BUILD) CUDA=0 OPT=-O1 SANFLAGS="$(ASAN_FLAGS)" \
	    $(ASAN_BUILD)/libgdn2.a $(ASAN_BUILD)/gdn2 $(ASAN_TESTS:%=$(ASAN_BUILD)/tests/%)

asan-test: asan
	@rm -rf $(ASAN_BUILD)/run && mkdir -p $(ASAN_BUILD)/run/tests
	@for t in $(ASAN_TESTS); do ln -s ../../tests/$$t $(ASAN_BUILD)/run/tests/$$t; done
	@$(ASAN_ENV) GDN2_CLI=$(ASAN_BUILD)/gdn2 sh tests/run.sh $(ASAN_BUILD)/run

# `make fuzz` builds the library with clang and -fsanitize=fuzzer-no-link,address,undefined into
# build-fuzz/, and one libFuzzer program per tests/fuzz/fuzz_*.c into build-fuzz/fuzz/.
# `make fuzz-run FUZZ_RUNS=N` replays the regression inputs and runs each target N executions
# (default 100000) on its seed corpus (copied to build-fuzz/corpus/, tests/fuzz/corpus stays as is).
FUZZ_CC    ?= clang
FUZZ_BUILD := build-fuzz
FUZZ_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN   := $(FUZZ_SRC:tests/fuzz/%.c=$(FUZZ_BUILD)/fuzz/%)
FUZZ_RUNS  ?= 100000
ifeq ($(BUILD),$(FUZZ_BUILD))
$(FUZZ_BUILD)/fuzz/%: tests/fuzz/%.c tests/fuzz/fuzz_common.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer $< $(LIB) $(LDFLAGS) $(LDLIBS) -o $@
$(FUZZ_BUILD)/fuzz/gen_seeds: tests/fuzz/gen_seeds.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(LIB) $(LDFLAGS) $(LDLIBS) -o $@
endif
fuzz:
	@command -v $(FUZZ_CC) >/dev/null || { echo "make fuzz needs clang with libFuzzer: apt-get install clang" >&2; exit 2; }
	$(MAKE) BUILD=$(FUZZ_BUILD) CUDA=0 CC=$(FUZZ_CC) OPT="-O1" \
	    SANFLAGS="-fsanitize=fuzzer-no-link $(FUZZ_FLAGS)" $(FUZZ_BIN) $(FUZZ_BUILD)/fuzz/gen_seeds

fuzz-run: fuzz
	@set -e; for f in $(FUZZ_BIN); do n=$$(basename $$f); log=$(FUZZ_BUILD)/$$n.log; \
	    echo "== $$n: the regression inputs, then $(FUZZ_RUNS) runs (log: $$log)"; \
	    $$f -runs=0 tests/fuzz/regressions/$$n/* > $$log 2>&1 || { tail -n 40 $$log; exit 1; }; \
	    mkdir -p $(FUZZ_BUILD)/corpus/$$n; cp -n tests/fuzz/corpus/$$n/* $(FUZZ_BUILD)/corpus/$$n/; \
	    $$f -runs=$(FUZZ_RUNS) -dict=tests/fuzz/json.dict -max_len=65536 -artifact_prefix=$(FUZZ_BUILD)/ \
	        -print_final_stats=1 $(FUZZ_BUILD)/corpus/$$n >> $$log 2>&1 || { tail -n 40 $$log; exit 1; }; \
	    grep -E '(DONE|exec_per_sec)' $$log | tail -n 2; done
