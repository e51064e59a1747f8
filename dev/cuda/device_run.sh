#!/bin/bash
# One device call: build the CUDA parts, run the GPU tests, our benchmark, the peers.
# usage (on the device, from the repo root): dev/cuda/device_run.sh "build test bench ncu peers_official peers_fla" [quick]
# Needs carried: .debs (libcjson), peers (checkouts + fixtures under peers/shared), optionally .triton.
PHASES="$1"; QUICK="$2"
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
D=/tmp/debs; mkdir -p $D; for f in .debs/*.deb; do dpkg -x "$f" $D; done
L=$D/usr/lib/x86_64-linux-gnu
{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv; nvcc --version | tail -1;
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null) (+ working tree changes)"; date -u; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if [[ " $PHASES " == *" build "* ]]; then
  t0=$(date +%s)
  make -j16 CUDA=1 CPPFLAGS="-I$D/usr/include" LDFLAGS="-L$L -Wl,-rpath,$L" build/tests/test_cuda build/bench/cuda_ops > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
  echo "build: $(( $(date +%s) - t0 )) s"
fi
if [[ " $PHASES " == *" test "* ]]; then
  t0=$(date +%s)
  GDN2_SHARED=peers/shared timeout 240 ./build/tests/test_cuda > "$OUT/test_cuda.log" 2>&1; echo "test rc=$? $(( $(date +%s) - t0 )) s"
  grep -E "FAIL|passed" "$OUT/test_cuda.log" | head -60
fi
if [[ " $PHASES " == *" bench "* ]]; then
  timeout 200 ./build/bench/cuda_ops "$OUT/cuda_ops.json" $QUICK 2>&1 | tee "$OUT/cuda_ops.log"
  # per-kernel split (events around each kernel) at the first shapes
  GDN2_CUDA_PROFILE=1 timeout 60 ./build/bench/cuda_ops /dev/null --quick > "$OUT/profile.log" 2>&1; grep -m2 "profile. fwd" "$OUT/profile.log"; grep -m2 "profile. bwd" "$OUT/profile.log"
fi
if [[ " $PHASES " == *" ncu "* ]]; then
  # Nsight Compute: throughput, occupancy, stall reasons of each kernel once (fwd, then fwd+bwd), bf16 (8,4096,16)
  NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null); echo "ncu: ${NCU:-none}"
  [ -n "$NCU" ] && timeout 240 $NCU --section SpeedOfLight --section Occupancy --section LaunchStats \
    --section WarpStateStats --section MemoryWorkloadAnalysis -k regex:"${NCU_K:-^k_}" --launch-count ${NCU_COUNT:-12} \
    ./build/bench/cuda_ops /dev/null --quick > "$OUT/ncu.txt" 2>&1; echo "ncu rc=$?"
  grep -E "^  k_|Duration|Memory Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Registers Per|Block Limit" "$OUT/ncu.txt" | head -120
fi
for impl in official fla; do
  if [[ " $PHASES " == *" peers_$impl "* ]]; then
    # per-peer Triton cache, carried between calls as .triton/<impl>.tgz (compiles once, ~200 s)
    export TRITON_CACHE_DIR=/tmp/triton_$impl; mkdir -p $TRITON_CACHE_DIR
    [ -f .triton/$impl.tgz ] && tar xzf .triton/$impl.tgz -C $TRITON_CACHE_DIR
    t0=$(date +%s)
    PYTHONUNBUFFERED=1 timeout ${PEER_TIMEOUT:-280} python3 bench/peers/bench_peers.py --impl $impl --root peers \
      --out "$OUT/peers_$impl.json" $QUICK $( [ $impl = official ] && echo --decode ) > "$OUT/peers_$impl.log" 2>&1
    echo "peers $impl rc=$? $(( $(date +%s) - t0 )) s"; tail -12 "$OUT/peers_$impl.log"
    [ -f .triton/$impl.tgz ] || { tar czf "$OUT/triton_$impl.tgz" -C $TRITON_CACHE_DIR .; ls -la "$OUT/triton_$impl.tgz"; }
  fi
done
