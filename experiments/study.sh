#!/bin/sh
# The mixer study (issue 4, docs/reports/STUDY.md): gdn vs kda vs gdn2 (and full attention as a reference)
# at matched recurrent state (same H, K = V), same data, same budget, 3 seeds, on MQAR,
# forgetting-MQAR, task-trained S-NIAH-1 / S-NIAH-3 / MK-NIAH-1, and parity with and without
# allow_neg_eigval. Sizes: the CPU tiers of docs/STUDY.md.
#
#   experiments/study.sh smoke   reduced: MQAR/fMQAR smoke tier + parity (~5-10 core-hours worst case)
#   experiments/study.sh full    the full CPU sizes (many core-hours; run on a quiet machine)
#   experiments/study.sh check   a few seconds: the script end to end with meaningless budgets
#   experiments/study.sh table   only rebuild the tables from the results already collected
#
# Environment: JOBS (parallel runs, default 1), OUT (results dir, default experiments/results/<tier>),
# NICE (default 19), DRY (=1: write and print $OUT/cmds.txt, run nothing). Run from the project root. Each run prints one JSON line into $OUT/runs.jsonl.
# smoke tier only (to fit a time budget, same budget for every mixer): PARTS (default "mqar fmqar parity"),
# MQAR_STEPS (max steps for MQAR and fMQAR, default 3000), MQAR_MIXERS (default "gdn kda gdn2 attn"),
# PARITY_STEPS (default 1000), PARITY_MIXERS (default gdn2); PARTS "niah" adds reduced task-trained NIAH:
# NIAH_TASKS (default "mk-niah-1 s-niah-1 s-niah-3"), NIAH_MIXERS (default all four), NIAH_LEN (train
# length in bytes, default 768; tested at 1x, 2x, 4x), NIAH_STEPS (default 300), NIAH_LR (default 3e-3),
# NIAH_EVAL_SAMPLES (default 50), NIAH_FULL_LOSS (=1: study --full-loss, next-byte loss on the whole
# prompt too), NIAH_SAVE (=1: keep the gdn2 checkpoints in $OUT/ckpt/).
set -eu
TIER=${1:-smoke}
JOBS=${JOBS:-1}
NICE=${NICE:-19}
HAY=${HAYSTACK:-data/tinyshakespeare.txt} # essay haystack, not shipped: sh scripts/get_data.sh
OUT=${OUT:-experiments/results/$TIER}
[ "$TIER" = table ] && OUT=${OUT_TABLE:-experiments/results/smoke}
mkdir -p "$OUT"

if [ "$TIER" != table ]; then
    make -j2 -f Makefile -f experiments/study.mk build/experiments/study >/dev/null
    : > "$OUT/cmds.txt"
    S=build/experiments/study
    MIXERS="gdn kda gdn2 attn"
    SEEDS="0 1 2"
    if [ "$TIER" = check ]; then
        # a few seconds: exercises the script end to end (tiny budgets, meaningless scores)
        for m in gdn2 kda; do for s in 0 1; do
            echo "$S --task mqar --mixer $m --seed $s --steps 5 --batch 4 --layers 1 --dim 32 --heads 2 --head-dim 16 --len 64 --eval-samples 20" >> "$OUT/cmds.txt"
        done; done
        echo "$S --task s-niah-1 --mixer gdn2 --seed 0 --steps 2 --batch 2 --layers 1 --dim 32 --heads 2 --head-dim 16 --len 576 --eval-lens 576 --eval-samples 2 --full-loss" >> "$OUT/cmds.txt"
    elif [ "$TIER" = smoke ]; then
        # MQAR CPU smoke tier: V=256 (keys 1-127, values 128-255), T=64, n=4, random fillers;
        # 2 layers, D=32, 2 heads (K=V=16: state 2*16*16 = 512 per layer); AdamW lr 3e-3, wd 0.1,
        # cosine, batch 32. TASKS.md estimated ~500 steps; the sanity runs in docs/reports/STUDY.md show the
        # recurrent mixers need more, so up to 3000 steps with early stopping at 99 % (Zoology's rule).
        PARTS=${PARTS:-mqar fmqar parity}
        for t in $PARTS; do [ "$t" = parity ] || [ "$t" = niah ] && continue; for s in $SEEDS; do for m in ${MQAR_MIXERS:-$MIXERS}; do
            echo "$S --task $t --mixer $m --seed $s --steps ${MQAR_STEPS:-3000} --target 99 --eval-every 250 --batch 32 --lr 3e-3 --layers 2 --dim 32 --heads 2 --head-dim 16 --len 64 --vocab 256 --pairs 4 --eval-samples 500" >> "$OUT/cmds.txt"
        done; done; done
        # task-trained NIAH, reduced (PARTS containing "niah"; the full tier below has the TASKS.md sizes):
        # the full tier's model (2 layers, D=64, 2 heads, K=V=32: state 2048 per layer) and batch 8,
        # but train length NIAH_LEN bytes, NIAH_STEPS steps, lr NIAH_LR, test at 1x, 2x, 4x the train
        # length with NIAH_EVAL_SAMPLES samples (RULER's depth draw). Ordered task by task, then seed,
        # so that an interrupted batch leaves whole (task, seed) groups. NIAH_SAVE=1: every gdn2 run
        # also writes its checkpoint to $OUT/ckpt/ (for gdn2 eval). MK-NIAH-1 needs >= ~608 bytes.
        case " $PARTS " in *" niah "*)
        NL=${NIAH_LEN:-768}; fl=""; [ -n "${NIAH_FULL_LOSS:-}" ] && fl=" --full-loss"
        for t in ${NIAH_TASKS:-mk-niah-1 s-niah-1 s-niah-3}; do for s in $SEEDS; do for m in ${NIAH_MIXERS:-$MIXERS}; do
            sv=""; [ -n "${NIAH_SAVE:-}" ] && [ "$m" = gdn2 ] && { mkdir -p "$OUT/ckpt"; sv=" --out $OUT/ckpt/$t-$m-s$s.safetensors"; }
            echo "$S --task $t --mixer $m --seed $s --steps ${NIAH_STEPS:-300} --batch 8 --lr ${NIAH_LR:-3e-3} --layers 2 --dim 64 --heads 2 --head-dim 32 --len $NL --eval-lens $NL,$((2 * NL)),$((4 * NL)) --eval-samples ${NIAH_EVAL_SAMPLES:-50} --haystack $HAY$fl$sv" >> "$OUT/cmds.txt"
        done; done; done;;
        esac
        # parity: GDN-2 with b in [0,1] vs the b*2 extension (eigenvalues in [-1,1]); train L 3..40,
        # test L = 41, 101, 255; 2 layers, D=64, 4 heads (K=16), batch 64, 1000 steps, lr 1e-3.
        case " $PARTS " in *" parity "*)
        for s in $SEEDS; do for m in ${PARITY_MIXERS:-gdn2}; do for neg in "" "--neg-eig"; do
            echo "$S --task parity --mixer $m $neg --seed $s --steps ${PARITY_STEPS:-1000} --batch 64 --lr 1e-3 --layers 2 --dim 64 --heads 4 --head-dim 16 --eval-samples 500" >> "$OUT/cmds.txt"
        done; done; done;;
        esac
    else
        # MQAR / forgetting-MQAR CPU main tier: V=8192, (T,n) = (64,4) and (128,8); 2 layers, D=64,
        # 2 heads (K=V=32: state 2048 per layer), batch 64, 1500 steps, lr in {1e-3, 3e-3}.
        for t in mqar fmqar; do for tn in "64 4" "128 8"; do for lr in 1e-3 3e-3; do for m in $MIXERS; do for s in $SEEDS; do
            set -- $tn
            echo "$S --task $t --mixer $m --seed $s --steps 1500 --target 99 --eval-every 250 --batch 64 --lr $lr --layers 2 --dim 64 --heads 2 --head-dim 32 --len $1 --pairs $2 --vocab 8192 --eval-samples 1000" >> "$OUT/cmds.txt"
        done; done; done; done; done
        # task-trained NIAH (RULER format, byte level, essay-substitute haystack): train at 1024 bytes,
        # test at 1x, 2x, 4x; 2 layers, D=64, 2 heads (K=32), batch 8, 1000 steps, lr 1e-3.
        for t in s-niah-1 s-niah-3 mk-niah-1; do for m in $MIXERS; do for s in $SEEDS; do
            echo "$S --task $t --mixer $m --seed $s --steps 1000 --batch 8 --lr 1e-3 --layers 2 --dim 64 --heads 2 --head-dim 32 --len 1024 --eval-lens 1024,2048,4096 --eval-samples 100 --haystack $HAY" >> "$OUT/cmds.txt"
        done; done; done
        # parity and modular arithmetic, with and without allow_neg_eigval, all recurrent mixers:
        # 2 layers, D=64, 4 heads, batch 64, 3000 steps, lr 1e-3.
        for t in parity modarith; do for m in gdn kda gdn2; do for neg in "" "--neg-eig"; do for s in $SEEDS; do
            echo "$S --task $t --mixer $m $neg --seed $s --steps 3000 --batch 64 --lr 1e-3 --layers 2 --dim 64 --heads 4 --head-dim 16 --eval-samples 500" >> "$OUT/cmds.txt"
        done; done; done; done
    fi
    [ -n "${DRY:-}" ] && { cat "$OUT/cmds.txt"; exit 0; }   # DRY=1: only list the commands
    echo "$(wc -l < "$OUT/cmds.txt") runs, $JOBS at a time, results in $OUT/runs.jsonl" >&2
    # one thread per run; runs in parallel only as JOBS allows
    export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
    : > "$OUT/runs.jsonl"
    xargs -P "$JOBS" -I CMD sh -c "nice -n $NICE CMD >> $OUT/runs.jsonl 2>> $OUT/log.txt" < "$OUT/cmds.txt"
fi

# ---- tables: mean +- sample std over seeds (and min..max), per task x mixer x setting x length; also the
# steps actually trained (early stopping), the final smoothed train loss and the wall time per run ----
jq -r '. as $r | .eval[] | [$r.task, $r.mixer + (if $r.neg_eig == 1 then "+neg" else "" end),
       ($r.train_len|tostring) + "/lr" + ($r.lr|tostring), (.length|tostring), (.score|tostring), ($r.seed|tostring),
       ($r.state_per_layer|tostring), ($r.params|tostring), ($r.steps|tostring), ($r.final_loss|tostring),
       ($r.wall_s|tostring)] | @tsv' "$OUT/runs.jsonl" |
sort -t "$(printf '\t')" -k1,1 -k3,3 -k4,4n -k2,2 |
awk -F '\t' '
{ k = $1 "\t" $2 "\t" $3 "\t" $4; n[k]++; s[k] += $5; ss[k] += $5 * $5;
  if (!(k in mn) || $5 < mn[k]) mn[k] = $5; if (!(k in mx) || $5 > mx[k]) mx[k] = $5;
  if (!(k in smn) || $9 < smn[k]) smn[k] = $9; if (!(k in smx) || $9 > smx[k]) smx[k] = $9;
  ls[k] += $10; ws[k] += $11;
  st[k] = $7; pr[k] = $8; if (!(k in seen)) { seen[k] = 1; order[++no] = k } }
END {
  print "| task | mixer | train len / lr | test len | score % (mean ± std) | min..max | seeds | steps trained | final train loss (mean) | wall s/run (mean) | state/layer | params |";
  print "|---|---|---|---|---|---|---|---|---|---|---|---|";
  for (i = 1; i <= no; i++) { k = order[i]; m = s[k] / n[k]; v = n[k] > 1 ? (ss[k] - n[k] * m * m) / (n[k] - 1) : 0;
    if (v < 0) v = 0; split(k, f, "\t");
    stp = smn[k] == smx[k] ? smn[k] : smn[k] ".." smx[k];
    printf "| %s | %s | %s | %s | %.1f ± %.1f | %.1f..%.1f | %d | %s | %.3g | %.0f | %s | %s |\n", f[1], f[2], f[3], f[4], m, sqrt(v),
      mn[k], mx[k], n[k], stp, ls[k] / n[k], ws[k] / n[k], st[k], pr[k] }
}' > "$OUT/table.md"
cat "$OUT/table.md"
