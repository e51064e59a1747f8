"""Merge one device run's results into bench/results/h200-ops.{json,md}.

  python3 bench/peers/merge.py RUN_DIR [--out bench/results/h200-ops] [--anchors PERF_ANCHORS.md]

RUN_DIR holds cuda_ops.json (bench/cuda_ops), peers_official.log / peers_fla.log (JSON lines
printed by bench_peers.py; the .log is read so that a run cut short still counts) and env.txt.
A peer figure missing from the run is left null; where the --anchors file (a markdown table of peer
timings, PERF_ANCHORS.md, not shipped with the repository) has it (measured on the same kind of H200
by the same method, but not in this run) it is given separately as ms_<peer>_anchor.
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


def anchors(path):
    """{(impl, name, (B,T,H)): ms} from PERF_ANCHORS.md's chunk table (K = V = 128); {} without one."""
    out = {}
    if not path:
        return out
    for line in open(path):
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) < 4 or not cells[1].startswith("("):
            continue
        impl = "official" if cells[0].startswith("official") else "fla" if cells[0].startswith("fla HEAD") else None
        if impl is None:
            continue
        try:
            bth = tuple(int(x) for x in cells[1].strip("()").split(","))
            out[(impl, "fwd", bth)] = float(cells[2])
            out[(impl, "fwd+bwd", bth)] = float(cells[3])
        except ValueError:
            pass
    return out


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
    anc = anchors(sys.argv[sys.argv.index("--anchors") + 1] if "--anchors" in sys.argv else None)
    wl = []
    for w in ours["workloads"]:
        key = tuple(w["shape"])
        mo, mf = peers.get(("official", w["name"], key)), peers.get(("fla", w["name"], key))
        wl.append({"name": w["name"], "shape": w["shape"], "dtype": w["dtype"], "ms_gdn2": w["ms_gdn2"],
                   "ms_official": mo, "ms_fla": mf,
                   "ratio_official": round(mo / w["ms_gdn2"], 3) if mo else None,
                   "ratio_fla": round(mf / w["ms_gdn2"], 3) if mf else None,
                   "mtok_s_gdn2": w["mtok_s"], "tflops_gdn2": w["tflops"]})
        for impl, ms in (("official", mo), ("fla", mf)):
            a = anc.get((impl, w["name"], key[:3]))
            if ms is None and a is not None:
                wl[-1][f"ms_{impl}_anchor"] = a
                wl[-1][f"ratio_{impl}_anchor"] = round(a / w["ms_gdn2"], 3)
    dec = []
    for d in ours["decode"]:
        dec.append({"N": d["N"], "us": d["us"], "us_events": d.get("us_events"), "gbps": d["gbps"],
                    "copy_gbps": d["copy_gbps"], "share_of_copy": round(d["gbps"] / d["copy_gbps"], 3),
                    "us_official_eager": dec_off.get(d["N"])})
    dec16 = [{"N": d["N"], "us": d["us"], "us_events": d.get("us_events"), "gbps": d["gbps"], "copy_gbps": d["copy_gbps"],
              "share_of_copy": round(d["gbps"] / d["copy_gbps"], 3)} for d in ours.get("decode_bf16_state", [])]
    res = {"device": ours.get("device"), "env": env, "copy_gbps": ours.get("copy_gbps"), "workloads": wl, "decode": dec}
    if dec16:
        res["decode_bf16_state"] = dec16
    with open(out + ".json", "w") as f:
        json.dump(res, f, indent=1)
    lines = ["# H200 op benchmark (bf16 q,k,v,b,w; fp32 g and state; in-kernel q/k L2 norm)", "",
             "```", env, "```", "",
             "| op | (B,T,H,K,V) | gdn2 ms | official ms | fla ms | official/gdn2 | fla/gdn2 | gdn2 Mtok/s |",
             "|---|---|---|---|---|---|---|---|"]
    for w in wl:
        f = lambda x: "-" if x is None else f"{x:.3f}"
        fla = f(w["ms_fla"]) if w["ms_fla"] is not None else (
            f"({w['ms_fla_anchor']:.3f} anchor)" if "ms_fla_anchor" in w else "-")
        rfla = f(w["ratio_fla"]) if w["ratio_fla"] is not None else (
            f"({w['ratio_fla_anchor']:.3f} anchor)" if "ratio_fla_anchor" in w else "-")
        lines.append(f"| {w['name']} | {tuple(w['shape'])} | {w['ms_gdn2']:.3f} | {f(w['ms_official'])} | {fla} | "
                     f"{f(w['ratio_official'])} | {rfla} | {w['mtok_s_gdn2']:.2f} |")
    lines += ["", "ratio = peer ms / gdn2 ms (above 1: gdn2 faster). '(x anchor)': fla not measured in this run (its "
              "Triton autotuning takes ~200 s per shape on a fresh machine, more than a device call can spare); figure "
              "from the --anchors table (PERF_ANCHORS.md), same machine kind and method, different run.",
              "", f"Decode step, H=16, K=V=128, fp32 state, called from C (host clock incl. launch); copy {ours.get('copy_gbps')} GB/s", "",
              "| N | gdn2 us | GB/s | share of copy | official eager us (same run) |", "|---|---|---|---|---|"]
    for d in dec:
        lines.append(f"| {d['N']} | {d['us']:.2f} | {d['gbps']:.0f} | {100 * d['share_of_copy']:.0f}% | "
                     f"{'-' if d['us_official_eager'] is None else d['us_official_eager']} |")
    if dec16:
        lines += ["", "Decode step with the state pool in bf16 (half the state bytes; accuracy cost in bench/results/cpu-decode-state.json)", "",
                  "| N | gdn2 us | GB/s | share of copy |", "|---|---|---|---|"]
        for d in dec16:
            lines.append(f"| {d['N']} | {d['us']:.2f} | {d['gbps']:.0f} | {100 * d['share_of_copy']:.0f}% |")
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
