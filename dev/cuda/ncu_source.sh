#!/bin/bash
# Per-source-line profile of chosen kernels (stall samples, executed instructions), bf16 (8,4096,16,128,128).
# usage (on the device, after dev/cuda/device_run.sh build): dev/cuda/ncu_source.sh "k_prep_tc k_bk"
# Writes $OUT/src_<kernel>.csv (ncu --page source, CUDA lines) and prints the 25 hottest lines of each.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
for k in $1; do
  timeout 200 $NCU --set full --import-source yes -k regex:"^$k\$|^$k<" --launch-count 1 -f -o /tmp/prof_$k \
    ./build/bench/cuda_ops /dev/null --quick > /dev/null 2>&1
  $NCU -i /tmp/prof_$k.ncu-rep --page source --csv --print-source cuda > "$OUT/src_$k.csv" 2>&1
  echo "== $k: $(wc -l < "$OUT/src_$k.csv") lines"; head -2 "$OUT/src_$k.csv" | cut -c1-400
done
