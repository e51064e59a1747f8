#!/bin/sh
# Build ggml's CPU library from the checkout in third_party/ggml (git-ignored, never committed),
# build our harness bench/peers/ggml_gdn.c against it and against a CPU-only libgdn2, and run it.
# Usage (from the project root): sh bench/peers/run_ggml.sh [harness options, e.g. --reps 5]
set -e
G=third_party/ggml
[ -f $G/CMakeLists.txt ] || { echo "no ggml checkout in $G (see bench/peers/README.md)"; exit 1; }
cmake -S $G -B $G/build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON \
    -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DBUILD_SHARED_LIBS=OFF -DGGML_BUILD_TESTS=OFF \
    -DGGML_BUILD_EXAMPLES=OFF >/dev/null
cmake --build $G/build -j2 --target ggml >/dev/null
make -j2 CUDA=0 BUILD=build/cpu build/cpu/libgdn2.a >/dev/null
mkdir -p build/bench
cc -std=c11 -D_POSIX_C_SOURCE=200809L -DGDN2_HAVE_BLAS -O2 -fopenmp -Iinclude -Isrc -I$G/include bench/peers/ggml_gdn.c \
    build/cpu/libgdn2.a $G/build/src/libggml.a $G/build/src/libggml-cpu.a $G/build/src/libggml-base.a \
    -lopenblas -lcjson -lstdc++ -lm -lpthread -o build/bench/ggml_gdn
build/bench/ggml_gdn "$@"
