#!/bin/bash
# Several char-level Tiny Shakespeare runs at once on one GPU (the 10M-parameter model leaves most of
# an H200 idle), each `gdn2 train --device cuda` with nanoGPT shakespeare-char's batch (64 x 256).
# usage (device, repo root, after a build): dev/cuda/demo_sweep.sh OUTDIR "NAME:LAYOUT:DROPOUT:LR:STEPS[:WD[:EMB_DROPOUT[:MIN_LR[:SEED]]]]" ...
# Each run: OUTDIR/demo_NAME.log; the summary line: best validation loss and the step it came at.
OUTDIR=$1; shift
TL=${TIME_LIMIT:-400}
pids=()
for spec in "$@"; do
  IFS=: read -r name layout p lr steps wd ep minlr seed <<< "$spec"
  ./build/gdn2 train --device cuda --model char_10M --layout "$layout" --task text --data data/tinyshakespeare.txt \
    --batch 64 --seq-len 256 --steps "$steps" --lr "$lr" --warmup 100 --dropout "$p" --emb-dropout "${ep:-0}" --wd "${wd:-0.1}" ${minlr:+--min-lr $minlr} ${seed:+--seed $seed} \
    --eval-every 100 --eval-batches 40 --log-every 500 --target-loss 1.47 --time-limit "$TL" \
    > "$OUTDIR/demo_$name.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait $p; done
for spec in "$@"; do
  name=${spec%%:*}
  best=$(grep -o 'val_loss[ =:"]*[0-9.]*' "$OUTDIR/demo_$name.log" | grep -o '[0-9.]*$' | sort -n | head -1)
  echo "$spec: best val $best; $(grep -c . "$OUTDIR/demo_$name.log") lines; last: $(tail -1 "$OUTDIR/demo_$name.log" | cut -c1-200)"
done
