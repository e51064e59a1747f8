#!/bin/bash
# One device call that validates the dev/cuda kernel variants against the default build.
# usage (on the device, from the repo root): dev/cuda/device_run_v2.sh [variants]   (default "v2 v3")
# Needs carried: .debs (libcjson) and peers/shared (the official fixtures). See dev/cuda/NEXT_RUN.md.
# Builds: build/ (default, bit-for-bit the GPU-tested kernels) and build/<v>/ with -DGDN2_CUDA_<V>.
# Writes to $OUT (at most 8 files come back): env.txt, build.log, test_<v>.log, bench.log,
# cuda_ops_<best>.json (full benchmark of the fastest variant that passed every test).
VARIANTS=${1:-"v2 v3"}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
D=/tmp/debs; mkdir -p $D; for f in .debs/*.deb; do dpkg -x "$f" $D; done
L=$D/usr/lib/x86_64-linux-gnu
{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv; nvcc --version | tail -1;
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null) (+ working tree changes)"; date -u; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# 1. builds, in parallel (chunk.cu dominates: ~1.5-2 min each)
t0=$(date +%s)
bld() { # $1 = build dir, $2 = extra nvcc flags
  make -j8 CUDA=1 BUILD=$1 NVFLAGS_EXTRA="$2" CPPFLAGS="-I$D/usr/include" LDFLAGS="-L$L -Wl,-rpath,$L" \
    $1/tests/test_cuda $1/bench/cuda_ops > "$OUT/build_$(basename $1).tmp" 2>&1 || echo "BUILD FAILED: $1" >> "$OUT/build_$(basename $1).tmp"
}
bld build "" &
for v in $VARIANTS; do bld build/$v "-DGDN2_CUDA_${v^^}" & done
wait
cat "$OUT"/build_*.tmp > "$OUT/build.log"; rm -f "$OUT"/build_*.tmp
echo "builds: $(( $(date +%s) - t0 )) s"; grep -E "BUILD FAILED|warning|error" "$OUT/build.log" | head -20

# 2. GPU tests of each variant (the default build passed 253/0 in call 3 and its kernels are unchanged)
PASSED=""
for v in $VARIANTS; do
  [ -x build/$v/tests/test_cuda ] || continue
  t0=$(date +%s)
  GDN2_SHARED=peers/shared timeout 150 ./build/$v/tests/test_cuda > "$OUT/test_$v.log" 2>&1; rc=$?
  echo "test $v rc=$rc $(( $(date +%s) - t0 )) s"; grep -E "FAIL|passed|GDN2_CUDA" "$OUT/test_$v.log" | head -40
  [ $rc = 0 ] && PASSED="$PASSED $v"
done

# 3. quick benchmark + per-kernel split at (8,4096,16,128,128) bf16 for the default and each variant
for v in "" $VARIANTS; do
  b=build${v:+/$v}; [ -x $b/bench/cuda_ops ] || continue
  { echo "== ${v:-default}"; timeout 60 ./$b/bench/cuda_ops /dev/null --quick 2>&1 | grep -E "GDN2_CUDA|^fwd";
    GDN2_CUDA_PROFILE=1 timeout 60 ./$b/bench/cuda_ops /dev/null --quick 2>&1 | grep -m2 profile; } >> "$OUT/bench.log"
done
cat "$OUT/bench.log"

# 4. full benchmark (4 shapes, decode) of the last variant in the list that passed its tests
best=$(echo $PASSED | awk '{print $NF}')
if [ -n "$best" ]; then
  echo "== full benchmark: $best"
  timeout 200 ./build/$best/bench/cuda_ops "$OUT/cuda_ops_$best.json" 2>&1 | tee -a "$OUT/bench.log" | grep -E "^fwd|GDN2"
fi
