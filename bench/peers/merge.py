"""Merge one device run's results into bench/results/h200-ops.{json,md}.

  python3 bench/peers/merge.py RUN_DIR [--out bench/results/h200-ops]

RUN_DIR holds cuda_ops.json (bench/cuda_ops), peers_official.log / peers_fla.log (JSON lines
printed by bench_peers.py; the .log is read so that a run cut short still counts) and env.txt.
A peer figure missing from the run is left null (never filled from elsewhere).
"""
import json
import os
import sys


def read_rows(path):
    rows = []
    if not os.path.exists(path):
        return rows
    for line in open(path):
        line = line.strip()
        if line.startswith("{") and '"impl"' in line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows


def main():
    run = sys.argv[1]
    out = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else "bench/results/h200-ops"
    ours = json.load(open(os.path.join(run, "cuda_ops.json")))
    peers = {}
    dec_off = {}
    for impl in ("official", "fla"):
        for r in read_rows(os.path.join(run, f"peers_{impl}.log")):
            if "N" in r:
                dec_off[r["N"]] = r["us_eager"]
            else:
                peers[(impl, r["name"], tuple(r["shape"]))] = r["ms"]
    env = open(os.path.join(run, "env.txt")).read().strip() if os.path.exists(os.path.join(run, "env.txt")) else ""
    wl = []
    for w in ours["workloads"]:
        key = tuple(w["shape"])
        mo, mf = peers.get(("official", w["name"], key)), peers.get(("fla", w["name"], key))
        wl.append({"name": w["name"], "shape": w["shape"], "dtype": w["dtype"], "ms_gdn2": w["ms_gdn2"],
                   "ms_official": mo, "ms_fla": mf,
                   "ratio_official": round(mo / w["ms_gdn2"], 3) if mo else None,
                   "ratio_fla": round(mf / w["ms_gdn2"], 3) if mf else None,
                   "mtok_s_gdn2": w["mtok_s"], "tflops_gdn2": w["tflops"]})
    dec = []
    for d in ours["decode"]:
        dec.append({"N": d["N"], "us": d["us"], "us_events": d.get("us_events"), "gbps": d["gbps"],
                    "copy_gbps": d["copy_gbps"], "share_of_copy": round(d["gbps"] / d["copy_gbps"], 3),
                    "us_official_eager": dec_off.get(d["N"])})
    res = {"device": ours.get("device"), "env": env, "copy_gbps": ours.get("copy_gbps"), "workloads": wl, "decode": dec}
    with open(out + ".json", "w") as f:
        json.dump(res, f, indent=1)
    lines = ["# H200 op benchmark (bf16 q,k,v,b,w; fp32 g and state; in-kernel q/k L2 norm)", "",
             "```", env, "```", "",
             "| op | (B,T,H,K,V) | gdn2 ms | official ms | fla ms | official/gdn2 | fla/gdn2 | gdn2 Mtok/s |",
             "|---|---|---|---|---|---|---|---|"]
    for w in wl:
        f = lambda x: "-" if x is None else f"{x:.3f}"
        lines.append(f"| {w['name']} | {tuple(w['shape'])} | {w['ms_gdn2']:.3f} | {f(w['ms_official'])} | {f(w['ms_fla'])} | "
                     f"{f(w['ratio_official'])} | {f(w['ratio_fla'])} | {w['mtok_s_gdn2']:.2f} |")
    lines += ["", f"Decode step, H=16, K=V=128, fp32 state, called from C (host clock incl. launch); copy {ours.get('copy_gbps')} GB/s", "",
              "| N | gdn2 us | GB/s | share of copy | official eager us (same run) |", "|---|---|---|---|---|"]
    for d in dec:
        lines.append(f"| {d['N']} | {d['us']:.2f} | {d['gbps']:.0f} | {100 * d['share_of_copy']:.0f}% | "
                     f"{'-' if d['us_official_eager'] is None else d['us_official_eager']} |")
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
