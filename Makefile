# gdn2 build. `make` builds build/libgdn2.a, build/gdn2 (CLI), tests and benchmarks.
#   make test          run the test suite (ends with "N passed, N failed")
#   make NATIVE=1      opt in to -O3 -march=native (the default build runs on any x86-64)
#   make CUDA=0        build without CUDA even if nvcc exists
#   make CUDA_ARCH=sm_90a   GPU target (default sm_90a: H100/H200)
# Detected automatically: OpenBLAS (cblas sgemm), OpenMP, CUDA (nvcc). libcjson is required.

CC      ?= gcc
NVCC    ?= nvcc
BUILD   ?= build
CSTD    := -std=c11 -D_POSIX_C_SOURCE=200809L
WARN    := -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare
OPT     := -O2
ifeq ($(NATIVE),1)
OPT     := -O3 -march=native
endif
CFLAGS  += $(CSTD) $(OPT) $(WARN) -g -fPIC -Iinclude -Isrc $(CPPFLAGS)
LDLIBS  += -lm

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

CUDA ?= $(if $(shell command -v $(NVCC) 2>/dev/null),1,0)
CUDA_ARCH ?= sm_90a
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(shell command -v $(NVCC) 2>/dev/null))

# library sources: every src/<concern>/*.c except the CLI. src/cuda/*.c are host-side stubs used
# only when CUDA is off; src/cuda/*.cu are the GPU kernels.
LIB_C   := $(filter-out src/cli/% src/cuda/%,$(wildcard src/*/*.c))
CUDA_CU := $(wildcard src/cuda/*.cu)
ifeq ($(CUDA),1)
CFLAGS  += -DGDN2_HAVE_CUDA
NVFLAGS := -O3 -std=c++17 -arch=$(CUDA_ARCH) -lineinfo -Xcompiler -fPIC -Iinclude -Isrc -DGDN2_HAVE_CUDA
NVFLAGS += $(NVFLAGS_EXTRA)
LDLIBS  += -L$(CUDA_HOME)/lib64 -L$(CUDA_HOME)/targets/x86_64-linux/lib -lcublas -lcudart -lstdc++ -ldl -lpthread -lrt
LIB_OBJ := $(LIB_C:%.c=$(BUILD)/%.o) $(CUDA_CU:%.cu=$(BUILD)/%.cu.o)
else
LIB_OBJ := $(LIB_C:%.c=$(BUILD)/%.o) $(patsubst %.c,$(BUILD)/%.o,$(wildcard src/cuda/*.c))
endif

CLI_OBJ   := $(patsubst %.c,$(BUILD)/%.o,$(wildcard src/cli/*.c))
TEST_BIN  := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))
BENCH_BIN := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/*.c))
LIB       := $(BUILD)/libgdn2.a

.PHONY: all lib test clean info
all: $(LIB) $(BUILD)/gdn2 $(TEST_BIN) $(BENCH_BIN)
lib: $(LIB)

info:
	@echo "openmp=$(HAVE_OPENMP) openblas=$(HAVE_BLAS) cuda=$(CUDA) arch=$(CUDA_ARCH) native=$(NATIVE)"

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

test: all
	@sh tests/run.sh $(BUILD)

clean:
	rm -rf $(BUILD)
