#!/bin/bash
# One device call: build the CUDA parts, run the GPU tests, our benchmark, the peers.
# usage (on the device, from the tree's root): dev/cuda/device_run.sh "build test bench peers_official peers_fla" [--quick]
#   model phases (issue 16, the GPU model path): "model_build model_test demo demo_sweep train_bench official_train"
#   inference and the rest: "decode decode_prof pdl_ab ab_old gemm_dev gemm_train conv_dev norm_dev decode_peer serve_load verify python swap nccl1" (after model_build;
#   decode_peer needs peers/fla_head, no build)
#   (official_train needs peers/p4/{official/lit_gpt,fla,shim/flash_attn} and peers/official_train_bench.py)
# Needs beside it: .debs (libcjson1 + libcjson-dev .deb files: `apt-get download libcjson1 libcjson-dev`),
# peers/{official,fla_old,fla_head} (git archives of the peer commits, bench/peers/bench_peers.py),
# optionally .triton/<impl>.tgz (a Triton cache from an earlier call). GDN2_FIXTURES: the fixture folder
# (default tests/fixtures/official). COMMIT: the commit the tree is (the device copy has no history).
# OPS_MODES (issue 15), e.g. OPS_MODES=gdn2,kda,gdn: the chunk rows the "bench" phase (bench/cuda_ops
# --modes) and the "peers_fla" phase (bench_peers.py --modes) time; kda / gdn are fla's chunk_kda /
# chunk_gated_delta_rule against our GDN-2 kernels on collapsed inputs (merge.py pairs them by mode).
# Unset: cuda_ops times gdn2 only, bench_peers.py --impl fla its default (all three). peers_official
# always times gdn2 only. kda,gdn add validation and timing: raise BENCH_TIMEOUT / PEER_TIMEOUT.
PHASES="$1"; QUICK="$2"
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
D=/tmp/debs; mkdir -p $D; for f in .debs/*.deb; do dpkg -x "$f" $D; done
L=$D/usr/lib/x86_64-linux-gnu
{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv; nvcc --version | tail -1;
  echo "commit: ${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null)}"; date -u; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if [[ " $PHASES " == *" build "* ]]; then
  t0=$(date +%s)
  make -j16 CUDA=1 CPPFLAGS="-I$D/usr/include" LDFLAGS="-L$L -Wl,-rpath,$L" build/tests/test_cuda build/bench/cuda_ops > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
  echo "build: $(( $(date +%s) - t0 )) s"
fi
if [[ " $PHASES " == *" test "* ]]; then
  t0=$(date +%s)
  timeout ${TEST_TIMEOUT:-240} ./build/tests/test_cuda > "$OUT/test_cuda.log" 2>&1; echo "test rc=$? $(( $(date +%s) - t0 )) s"
  grep -E "FAIL|passed|tile" "$OUT/test_cuda.log" | head -60
fi
if [[ " $PHASES " == *" bench "* ]]; then
  t0=$(date +%s)
  timeout ${BENCH_TIMEOUT:-300} ./build/bench/cuda_ops "$OUT/cuda_ops.json" $QUICK ${OPS_MODES:+--modes $OPS_MODES} > "$OUT/cuda_ops.log" 2>&1; echo "bench rc=$? $(( $(date +%s) - t0 )) s"
  tail -32 "$OUT/cuda_ops.log"
fi
for impl in official fla; do
  if [[ " $PHASES " == *" peers_$impl "* ]]; then
    # per-peer Triton cache, carried between calls as .triton/<impl>.tgz (compiles once, ~200 s)
    export TRITON_CACHE_DIR=/tmp/triton_$impl; mkdir -p $TRITON_CACHE_DIR
    [ -f .triton/$impl.tgz ] && tar xzf .triton/$impl.tgz -C $TRITON_CACHE_DIR
    t0=$(date +%s)
    PYTHONUNBUFFERED=1 timeout ${PEER_TIMEOUT:-280} python3 bench/peers/bench_peers.py --impl $impl --root peers \
      --out "$OUT/peers_$impl.json" $QUICK $( [ $impl = official ] && echo --decode ) \
      $( [ $impl = fla ] && [ -n "$OPS_MODES" ] && echo --modes $OPS_MODES ) > "$OUT/peers_$impl.log" 2>&1
    echo "peers $impl rc=$? $(( $(date +%s) - t0 )) s"; tail -16 "$OUT/peers_$impl.log"
    [ -f .triton/$impl.tgz ] || { tar czf "$OUT/triton_$impl.tgz" -C $TRITON_CACHE_DIR .; ls -la "$OUT/triton_$impl.tgz"; }
  fi
done

# The Triton cache of the official trainer / swap phases, carried in the tree's root as triton_train.tgz or in
# parts triton_train.tgz.part-* (what PACK=1 brings back: a file may be at most 16 MiB).
triton_restore() {
  export TRITON_CACHE_DIR=/tmp/triton_train; mkdir -p $TRITON_CACHE_DIR
  if [ -f triton_train.tgz ]; then tar xzf triton_train.tgz -C $TRITON_CACHE_DIR
  elif ls triton_train.tgz.part-* >/dev/null 2>&1; then cat triton_train.tgz.part-* | tar xz -C $TRITON_CACHE_DIR; fi
}
have_triton() { [ -f triton_train.tgz ] || ls triton_train.tgz.part-* >/dev/null 2>&1; }
# the Python phases find the carried peers here (their default, .gpu/peers/p4, is the session's path)
[ -d peers/p4 ] && export GDN2_P4=${GDN2_P4:-$PWD/peers/p4}

# ---- the model on the GPU (the CUDA backend of src/backend) ----------------------------------------
MK="make -j16 CUDA=1 CPPFLAGS=-I$D/usr/include LDFLAGS=-L$L\ -Wl,-rpath,$L"
if [[ " $PHASES " == *" model_build "* ]]; then
  t0=$(date +%s)
  make -j16 CUDA=1 CPPFLAGS="-I$D/usr/include" LDFLAGS="-L$L -Wl,-rpath,$L" all > "$OUT/model_build.log" 2>&1 || { tail -30 "$OUT/model_build.log"; exit 1; }
  echo "model build: $(( $(date +%s) - t0 )) s"
fi
if [[ " $PHASES " == *" model_test "* ]]; then
  for t in ${MODEL_TESTS:-test_backend test_cuda_attn test_model_cuda test_decode_graph test_cuda}; do
    t0=$(date +%s)
    timeout ${TEST_TIMEOUT:-240} ./build/tests/$t > "$OUT/$t.log" 2>&1; echo "$t rc=$? $(( $(date +%s) - t0 )) s: $(tail -1 $OUT/$t.log)"
    grep -E "^FAIL" "$OUT/$t.log" | head -20
  done
fi
if [[ " $PHASES " == *" demo "* ]]; then
  # Tiny Shakespeare: the device has no network; carry it as data/tinyshakespeare.txt (an ignored path)
  t0=$(date +%s)
  timeout ${DEMO_TIMEOUT:-300} ./build/gdn2 demo --device cuda > "$OUT/demo_cuda.log" 2>&1; echo "demo rc=$? $(( $(date +%s) - t0 )) s"
  grep -E "step|validation|goal" "$OUT/demo_cuda.log" | tail -12
fi
if [[ " $PHASES " == *" train_bench "* ]]; then
  for cb in ${TRAIN_CONFIGS:-gdn2_1.3B:4 swa_gdn2_1.3B:4 gdn2_12h_100M:16 swa_gdn2_100M:16}; do
    c=${cb%%:*}; b=${cb##*:}
    # TRAIN_ARGS: more train_step options (e.g. --keep-chunk, --recompute), TRAIN_TAG: a suffix for the file names
    timeout 200 ./build/bench/train_step --config $c --batch $b --seq-len 4096 --warmup 2 --steps 6 $TRAIN_ARGS \
      --json "$OUT/train_$c$TRAIN_TAG.json" > "$OUT/train_$c$TRAIN_TAG.log" 2>&1
    echo "train_step $c B=$b $TRAIN_ARGS rc=$?"; tail -2 "$OUT/train_$c$TRAIN_TAG.log"
  done
fi
if [[ " $PHASES " == *" official_train "* ]]; then
  # one Triton cache for the official trainer and the swap phase (triton_restore above)
  triton_restore
  t0=$(date +%s)
  # OFFICIAL_P4: another peer layout, e.g. peers/p4_jf with the Jellyfish fork's lit_gpt for the 100M configs
  GDN2_P4=${OFFICIAL_P4:-peers/p4} PYTHONUNBUFFERED=1 timeout ${PEER_TIMEOUT:-560} python3 peers/official_train_bench.py "$OUT/official_train.json" \
    --configs ${OFFICIAL_CONFIGS:-gdn2_1.3B,swa_gdn2_1.3B} --batches ${OFFICIAL_BATCHES:-4} --warmup 2 --steps 6 \
    --deadline-s ${PEER_DEADLINE:-540} > "$OUT/official_train.log" 2>&1
  echo "official train rc=$? $(( $(date +%s) - t0 )) s"; tail -8 "$OUT/official_train.log"
  have_triton || tar czf "$OUT/triton_train.tgz" -C $TRITON_CACHE_DIR .
fi

# ---- inference on the GPU (issue 13), the Python CUDA path (issue 12), NCCL at world size 1 (issue 14) ----
if [[ " $PHASES " == *" decode "* ]]; then
  t0=$(date +%s)
  # the JSON is named after the card the bench finds (h100-decode.json, h200-decode.json), in $OUT
  timeout ${DECODE_TIMEOUT:-480} ./build/bench/decode_model --out-dir "$OUT" > "$OUT/decode_model.log" 2>&1
  echo "decode_model rc=$? $(( $(date +%s) - t0 )) s"; tail -12 "$OUT/decode_model.log"
  ./build/gdn2 train --model tiny --task mqar --steps 20 --batch 8 --seq-len 64 --quiet --out /tmp/t.safetensors > "$OUT/cli_gpu.log" 2>&1
  { ./build/gdn2 generate /tmp/t.safetensors --device cuda -n 32 --temperature 0 --prompt hello --samples 2; echo "generate rc=$?";
    ./build/gdn2 generate /tmp/t.safetensors --device cuda --cuda-graph off -n 32 --temperature 0 --prompt hello --samples 2;
    echo "generate --cuda-graph off rc=$? (the same text as above: greedy, one batch shape)";
    ./build/gdn2 eval --model /tmp/t.safetensors --task mqar --lengths 64 --samples 20 --device cuda --out /tmp/ev; echo "eval rc=$?";
    ./build/gdn2 eval --model /tmp/t.safetensors --task mqar --lengths 64 --samples 20 --out /tmp/ev_cpu; echo "eval cpu rc=$?"; } >> "$OUT/cli_gpu.log" 2>&1
  tail -8 "$OUT/cli_gpu.log"
fi
if [[ " $PHASES " == *" decode_prof "* ]]; then
  # issue 13: where a batch-1 step goes. The op-by-op profile (bench/op_profile.h) of one eager step of
  # each config at batch 1 and 16 (no prefill, one context), then ncu's per-kernel duration and DRAM
  # bytes of one eager step of gdn2_1.3B at batch 1 (no nsys on the device: KINDS.md)
  t0=$(date +%s)
  timeout ${DECODE_TIMEOUT:-240} ./build/bench/decode_model --configs gdn2_1.3B,swa_gdn2_1.3B --batches 1,16 --contexts 1024 \
    --prefill none --steps 30 --json "$OUT/decode_prof.json" > "$OUT/decode_prof.log" 2>&1
  echo "decode_prof rc=$? $(( $(date +%s) - t0 )) s"; grep -E "profiled step|^ *gdn2|^ *swa" "$OUT/decode_prof.log" | cut -c1-400 | head -12
  if [ "${NCU:-1}" = 1 ] && { command -v ncu >/dev/null || [ -x /usr/local/cuda/bin/ncu ]; }; then
    t0=$(date +%s)
    CUDA_VISIBLE_DEVICES=0 timeout ${NCU_TIMEOUT:-200} ncu --clock-control none --csv --metrics gpu__time_duration.sum,dram__bytes_read.sum \
      --graph-profiling node --launch-skip ${NCU_SKIP:-0} --launch-count ${NCU_COUNT:-3000} \
      ./build/bench/decode_model --configs gdn2_1.3B --batches 1 --contexts 1024 --prefill none --steps 1 --warmup 0 \
      --no-validate --no-profile --json /tmp/ncu_decode.json > "$OUT/ncu_decode.csv" 2> "$OUT/ncu_decode.err"
    echo "ncu rc=$? $(( $(date +%s) - t0 )) s, $(grep -c gpu__time_duration "$OUT/ncu_decode.csv") kernels"
  fi
fi
if [[ " $PHASES " == *" pdl_ab "* ]]; then
  # issue 13: the one-row products as programmatic dependents (src/cuda/pdl.cuh) against ordinary launches
  # (GDN2_CUDA_PDL=0), alternating on/off twice in one call, gdn2_1.3B and swa_gdn2_1.3B at batch 1, 1K context
  for rep in 1 2; do for pdl in 1 0; do
    GDN2_CUDA_PDL=$pdl timeout ${PDL_TIMEOUT:-100} ./build/bench/decode_model --configs ${PDL_CONFIGS:-gdn2_1.3B,swa_gdn2_1.3B} \
      --batches 1 --contexts 1024 --prefill none --steps 50 --no-profile $( [ $rep = 2 ] && echo --no-validate ) \
      --json "$OUT/pdl_ab_${pdl}_$rep.json" > "$OUT/pdl_ab_${pdl}_$rep.log" 2>&1
    echo "pdl=$pdl rep $rep rc=$?: $(grep -E '^(gdn2|swa)' "$OUT/pdl_ab_${pdl}_$rep.log" | cut -c1-150 | tr '\n' ' ')"
    grep -E "validation" "$OUT/pdl_ab_${pdl}_$rep.log" | cut -c1-250
  done; done
fi
if [[ " $PHASES " == *" ab_old "* ]]; then
  # a before/after of a change without a switch: old/ (an older tree's Makefile, include, src, bench) is
  # built here, then its decode_model and ours alternate twice (AB_CONFIGS at batches 1 and 16, 1K context)
  t0=$(date +%s)
  ( cd old && make -j16 CUDA=1 CPPFLAGS="-I$D/usr/include" LDFLAGS="-L$L -Wl,-rpath,$L" build/bench/decode_model ) \
    > "$OUT/old_build.log" 2>&1 || { echo "old build failed"; tail -20 "$OUT/old_build.log"; }
  echo "old build: $(( $(date +%s) - t0 )) s"
  for rep in 1 2; do for v in new old; do
    bin=./build/bench/decode_model; [ $v = old ] && bin=old/build/bench/decode_model
    [ -x $bin ] || continue
    timeout ${AB_TIMEOUT:-120} $bin --configs ${AB_CONFIGS:-gdn2_1.3B,swa_gdn2_1.3B} --batches 1,16 --contexts 1024 \
      --prefill none --steps 50 --no-profile $( [ $rep = 2 ] && echo --no-validate ) --json "$OUT/ab_${v}_$rep.json" \
      > "$OUT/ab_${v}_$rep.log" 2>&1
    echo "$v rep $rep rc=$?: $(grep -E '^(gdn2|swa)' "$OUT/ab_${v}_$rep.log" | cut -c1-130 | tr '\n' ' ')"
    grep -E "validation" "$OUT/ab_${v}_$rep.log" | cut -c1-250
  done; done
fi
if [[ " $PHASES " == *" gemm_dev "* ]]; then
  # issue 13: every cuBLASLt algorithm for the decode step's weight shapes at n = 1, 16 (dev/cuda/gemm_small_n.cu)
  nvcc -O2 -std=c++17 -arch=sm_90a -Iinclude -Isrc dev/cuda/gemm_small_n.cu -lcublasLt -lcublas -o /tmp/gemm_small_n && timeout 120 /tmp/gemm_small_n > "$OUT/gemm_small_n.log" 2>&1
  echo "gemm_small_n rc=$?"; cat "$OUT/gemm_small_n.log"
fi
if [[ " $PHASES " == *" gemm_train "* ]]; then
  # issue 16: what the fastest cuBLASLt algorithm would save over the first, at the training step's shapes (dev/cuda/gemm_train.cu)
  # (and torch's path beside it: cublasGemmEx, bf16 dW + fp32 add). GEMM_N: tokens (12288 = B 3, 16384 = B 4)
  nvcc -O2 -std=c++17 -arch=sm_90a dev/cuda/gemm_train.cu -lcublasLt -lcublas -o /tmp/gemm_train && timeout ${GEMM_TIMEOUT:-150} /tmp/gemm_train ${GEMM_N:-16384} > "$OUT/gemm_train.log" 2>&1
  echo "gemm_train rc=$?"; cat "$OUT/gemm_train.log"
fi
if [[ " $PHASES " == *" conv_dev "* ]]; then
  # issue 16: the library's conv kernels against the one-channel kernels they replaced (dev/cuda/conv_dev.cu; after
  # model_build). CONV_VARIANTS: space-separated R:C:P:PB:BMIN builds of the library's kernels (compiled at once)
  V=${CONV_VARIANTS:-64:4:8:4:4}; i=0
  for v in $V; do IFS=: read r c p pb bm <<< "$v"
    nvcc -O3 -std=c++17 -arch=sm_90a -Iinclude -Isrc -DCONV_R=$r -DCONV_C=$c -DCONV_P=$p -DCONV_PB=$pb -DCONV_BMIN=$bm \
      dev/cuda/conv_dev.cu build/libgdn2.a -lcublasLt -lcublas -lnccl -lgomp -o /tmp/conv_dev_$i > "$OUT/conv_dev_build_$i.log" 2>&1 &
    i=$((i + 1)); done; wait
  i=0; for v in $V; do
    timeout 60 /tmp/conv_dev_$i > "$OUT/conv_dev_$i.log" 2>&1; echo "conv_dev $v rc=$?"; cat "$OUT/conv_dev_$i.log"
    i=$((i + 1)); done
fi
if [[ " $PHASES " == *" norm_dev "* ]]; then
  # issue 16: the fused RMSNorm backward against its software-pipelined variant at 8 / 16 / 32 rows a block, and
  # beside them add_rmsnorm_fwd, swiglu_bwd and a copy at the training shapes (dev/cuda/norm_dev.cu; after model_build)
  nvcc -O3 -std=c++17 -arch=sm_90a -Iinclude -Isrc dev/cuda/norm_dev.cu build/libgdn2.a -lcublasLt -lcublas -lnccl -lgomp \
    -o /tmp/norm_dev > "$OUT/norm_dev_build.log" 2>&1 && timeout 90 /tmp/norm_dev > "$OUT/norm_dev.log" 2>&1
  echo "norm_dev rc=$?"; cat "$OUT/norm_dev.log"
fi
if [[ " $PHASES " == *" demo_sweep "* ]]; then
  # issue 16's demo: DEMO_SPECS (space-separated NAME:LAYOUT:DROPOUT:LR:STEPS:WD:EMB_DROPOUT) at once on one GPU
  t0=$(date +%s)
  TIME_LIMIT=${DEMO_TL:-400} dev/cuda/demo_sweep.sh "$OUT" $DEMO_SPECS > "$OUT/demo_sweep.log" 2>&1
  echo "demo_sweep $(( $(date +%s) - t0 )) s"; cat "$OUT/demo_sweep.log" | cut -c1-300
fi
if [[ " $PHASES " == *" decode_peer "* ]]; then
  # issue 13's peer, after decode_model in the same call: fla's GDN-2 model (KDAForCausalLM with GatedDeltaNet2 mixers,
  # gdn2_1.3B shape, bf16), decode step eager and in a CUDA graph (bench/peers/decode_peer_fla.py; fla from peers/fla_head)
  t0=$(date +%s)
  PYTHONUNBUFFERED=1 timeout ${DECODE_PEER_TIMEOUT:-420} python3 bench/peers/decode_peer_fla.py --fla peers/fla_head \
    --fla-commit ${FLA_COMMIT:-bc3b101d} --out "$OUT/peer-fla-decode.json" > "$OUT/decode_peer_fla.log" 2>&1
  echo "decode_peer fla rc=$? $(( $(date +%s) - t0 )) s"; grep -E "^ *[0-9]+ +(eager|graph|compiled) |^B=|decode_peer_fla:" "$OUT/decode_peer_fla.log" | head -20
fi
if [[ " $PHASES " == *" serve_load "* ]]; then
  # a checkpoint with random-like weights (one training step), then 64 streaming clients for 2 minutes
  t0=$(date +%s)
  ./build/gdn2 train --device cuda --model ${SERVE_MODEL:-gdn2_1.3B} --task mqar --steps 1 --batch 1 --seq-len 64 --quiet \
    --out /tmp/serve.safetensors > "$OUT/serve_ckpt.log" 2>&1; echo "serve checkpoint rc=$?"
  timeout ${SERVE_TIMEOUT:-320} python3 bench/serve_load.py --ckpt /tmp/serve.safetensors --device cuda --clients 64 \
    --duration ${SERVE_S:-120} --out "$OUT/serve-load.json" > "$OUT/serve_load.log" 2>&1
  echo "serve_load rc=$? $(( $(date +%s) - t0 )) s"; tail -3 "$OUT/serve_load.log"
fi
if [[ " $PHASES " == *" verify "* ]]; then
  timeout ${VERIFY_TIMEOUT:-200} ./build/bench/cuda_ops "$OUT/cuda_verify.json" --verify > "$OUT/cuda_verify.log" 2>&1
  echo "cuda_ops --verify rc=$?"; tail -24 "$OUT/cuda_verify.log"
fi
if [[ " $PHASES " == *" python "* ]]; then
  t0=$(date +%s)
  triton_restore  # the peers' chunk kernels compile here too (GDN2_P4 above; GDN2_P4=none skips them)
  # PY_ARGS: e.g. "--groups other,decode" (a run split over calls while the peers compile)
  PYTHONPATH=python timeout ${PY_TIMEOUT:-300} python3 python/tests/test_cuda.py ${PY_ARGS:-} > "$OUT/python_test_cuda.log" 2>&1
  echo "python test_cuda rc=$? $(( $(date +%s) - t0 )) s"; grep -E "FAIL" "$OUT/python_test_cuda.log" | head -10; tail -2 "$OUT/python_test_cuda.log"
  have_triton || tar czf "$OUT/triton_train.tgz" -C $TRITON_CACHE_DIR .
fi
if [[ " $PHASES " == *" swap "* ]]; then
  t0=$(date +%s)
  triton_restore
  PYTHONPATH=python timeout ${SWAP_TIMEOUT:-400} python3 bench/peers/swap_layer_train.py \
    --steps ${SWAP_STEPS:-200} --deadline-s $(( ${SWAP_TIMEOUT:-400} - 30 )) --out "$OUT/h200-swap-layer.json" > "$OUT/swap.log" 2>&1
  echo "swap rc=$? $(( $(date +%s) - t0 )) s"; tail -8 "$OUT/swap.log"
  have_triton || tar czf "$OUT/triton_train.tgz" -C $TRITON_CACHE_DIR .
fi
if [[ " $PHASES " == *" nccl1 "* ]]; then
  A="--model tiny --task text --data data/tinyshakespeare.txt --steps 30 --batch 8 --seq-len 128 --log-every 10"
  ./build/gdn2 train --device cuda $A > "$OUT/nccl_ref.log" 2>&1; echo "single GPU rc=$?"
  ./build/gdn2 train --gpus 1 $A > "$OUT/nccl_1.log" 2>&1; echo "--gpus 1 (NCCL) rc=$?"
  tail -1 "$OUT/nccl_ref.log"; tail -1 "$OUT/nccl_1.log"
fi

# PACK=1: everything under $OUT in one results.tgz (the device returns at most 8 files, 16 MiB each);
# copy it into bench/results/<card>-<what>/ and commit it right after the call (NEXT_RUN.md)
if [ "${PACK:-0}" = 1 ]; then
  # the Triton caches stay beside it (large: split them to carry them back, NEXT_RUN.md "Mechanics now")
  # and each Triton cache split into 15 MiB parts (carry them back in the tree's root: triton_restore)
  ( cd "$OUT" && tar czf /tmp/results.tgz --exclude=results.tgz --exclude='triton_*.tgz' . &&
    find . -mindepth 1 -maxdepth 1 ! -name 'triton_*.tgz' -exec rm -rf {} + && mv /tmp/results.tgz . &&
    for f in triton_*.tgz; do [ -f "$f" ] && split -b 15M "$f" "$f.part-" && rm "$f"; done; ls -la )
fi
