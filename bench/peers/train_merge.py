"""Merge gdn2's training-step measurements (build/bench/train_step --json, one file per config) with the
official harness's output (official_train_bench.py OUT.json) into bench/results/h200-train.json:
    {"train": [{config, T, micro_batch, recompute, keep_chunk, tok_s_gdn2, tok_s_official, ratio, peak_gb_gdn2,
                peak_gb_official, mfu_gdn2, mfu_official, split_ms_gdn2, ...}], "notes": ...}
(keep_chunk: the run kept the GDN-2 chunk intermediates for the backward, train_step --keep-chunk; a row counts for
the goal only with peak_gb_gdn2 <= peak_gb_official.)
A config the official side did not measure (or measured at another micro-batch) keeps null official figures.

    python3 bench/peers/train_merge.py OUT.json --ours a.json b.json ... [--official o1.json o2.json ...] [--commit C]
Several --official files (e.g. the official 1.3B run and the fork's 100M run) are read in turn; each row names
the harness file its peer figures come from (official_file).
"""
import argparse
import json

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--ours", nargs="+", required=True)
ap.add_argument("--official", nargs="*", default=[])
ap.add_argument("--commit", default="")
ap.add_argument("--note", default="")
a = ap.parse_args()

off = {}
for path in a.official:
    with open(path) as f:
        o = json.load(f)
    for name, r in o.get("configs", {}).items():
        for run in r.get("runs", []):
            if "tok_s" in run:
                if (name, run["B"], run["T"]) in off:
                    raise SystemExit(f"train_merge: {path}: {name} at B={run['B']} T={run['T']} is in two --official files")
                off[(name, run["B"], run["T"])] = dict(run, attn_impl=r.get("attn_impl"), official_file=path)

rows = []
for p in a.ours:
    with open(p) as f:
        g = json.load(f)
    k = (g["config"], g["micro_batch"], g["T"])
    r = off.get(k)
    rows.append(dict(config=g["config"], T=g["T"], micro_batch=g["micro_batch"], recompute=g.get("recompute", 0),
                     keep_chunk=g.get("keep_chunk", 0),
                     tok_s_gdn2=round(g["tok_s"], 1), tok_s_official=round(r["tok_s"], 1) if r else None,
                     ratio=round(g["tok_s"] / r["tok_s"], 3) if r else None,
                     peak_gb_gdn2=round(g["peak_gb"], 2), peak_gb_official=round(r["peak_gb"], 2) if r else None,
                     mfu_gdn2=round(g["mfu"], 4), mfu_official=round(r["mfu"], 4) if r else None,
                     step_ms_gdn2=round(g["step_ms"], 2), step_ms_official=round(r["step_ms_median"], 2) if r else None,
                     split_ms_gdn2=g.get("split_ms"), loss_first_last_gdn2=[g["loss_first"], g["loss_last"]],
                     loss_first_last_official=r.get("loss_first_last") if r else None,
                     official_attention=r.get("attn_impl") if r else None, official_file=r["official_file"] if r else None,
                     layout=g["layout"],
                     flops_per_token=g["flops_per_token"], device=g.get("device")))
res = dict(train=rows, commit=a.commit, note=a.note,
           method="gdn2: build/bench/train_step (median wall step of forward+backward+clip+AdamW after warm-up; "
                  "peak = device memory in use minus the context, plus the stream-ordered pool's high-water mark); "
                  "official: official_train_bench.py (lit_gpt GPT, autocast bf16, fused CE, clip, fused AdamW; "
                  "torch.cuda.max_memory_allocated); MFU of 989 TFLOP/s with 6*N_nonemb + attention FLOPs")
tmp = a.out + ".tmp"
with open(tmp, "w") as f:
    json.dump(res, f, indent=1)
import os
os.replace(tmp, a.out)
print(json.dumps(rows, indent=1))
