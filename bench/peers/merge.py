"""Merge one device run's results into bench/results/h200-ops.{json,md}.

  python3 bench/peers/merge.py RUN_DIR [--out bench/results/h200-ops] [--commit HASH]

RUN_DIR holds cuda_ops.json (bench/cuda_ops), peers_official.log / peers_fla.log (JSON lines
printed by bench_peers.py; the .log is read so that a run cut short still counts) and env.txt.
A peer figure missing from the run is left null. --commit names the commit the run measured (the
device's copy of the tree has no git history).
KDA / GDN (issue 15): cuda_ops.json's "collapsed" rows (bench/cuda_ops --modes kda,gdn: the GDN-2
kernels on collapsed inputs) are paired with fla's rows of the same "mode" (chunk_kda,
chunk_gated_delta_rule), shape and name (fwd, fwd+bwd) into "collapsed" / a table of their own;
ratio = fla ms / our end-to-end ms (broadcast and fold included). The gdn2 rows are unchanged.
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


def share(us, nbytes, copy):
    """(GB/s, share of copy) of a step that moves nbytes in us microseconds"""
    if us is None or not nbytes or not copy:
        return None, None
    gbps = nbytes / (us * 1e-6) / 1e9
    return round(gbps, 1), round(gbps / copy, 3)


def main():
    run = sys.argv[1]
    out = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else "bench/results/h200-ops"
    commit = sys.argv[sys.argv.index("--commit") + 1] if "--commit" in sys.argv else None
    ours = json.load(open(os.path.join(run, "cuda_ops.json")))
    peers, peak_off, dec_off, mode_rows = {}, {}, {}, {}
    for impl in ("official", "fla"):
        for r in read_rows(os.path.join(run, f"peers_{impl}.log")):
            if "N" in r:
                dec_off[r["N"]] = r
            elif r.get("mode", "gdn2") != "gdn2":  # kda / gdn: paired with our "collapsed" rows
                mode_rows[(impl, r["mode"], r["name"], tuple(r["shape"]))] = r
            elif "error" in r:
                pass  # a gdn2 peer that did not run: its figures stay null
            else:
                peers[(impl, r["name"], tuple(r["shape"]))] = r["ms"]
                if "peak_gb" in r:
                    peak_off[(impl, tuple(r["shape"]))] = r["peak_gb"]
    env = open(os.path.join(run, "env.txt")).read().strip() if os.path.exists(os.path.join(run, "env.txt")) else ""
    copy = ours.get("copy_gbps")
    wl = []
    for w in ours["workloads"]:
        key = tuple(w["shape"])
        mo, mf = peers.get(("official", w["name"], key)), peers.get(("fla", w["name"], key))
        row = {"name": w["name"], "shape": w["shape"], "dtype": w["dtype"], "ms_gdn2": w["ms_gdn2"],
               "ms_official": mo, "ms_fla": mf,
               "ratio_official": round(mo / w["ms_gdn2"], 3) if mo else None,
               "ratio_fla": round(mf / w["ms_gdn2"], 3) if mf else None,
               "mtok_s_gdn2": w["mtok_s"], "tflops_gdn2": w["tflops"]}
        if w["name"].startswith("fwd+bwd"):
            row["peak_gb_gdn2"] = w.get("peak_gb_gdn2")
            row["peak_gb_gdn2_recompute"] = w.get("peak_gb_gdn2_recompute")
            row["peak_gb_official"] = peak_off.get(("official", key))
        wl.append(row)
    dec = []
    for d in ours["decode"]:
        o = dec_off.get(d["N"], {})
        nb = d.get("bytes")
        row = {"N": d["N"], "bytes": nb, "copy_gbps": copy,
               "us_gdn2_b2b": d.get("us_events"), "us_gdn2_cold": d.get("us_cold"), "us_gdn2_host_clock": d["us"],
               "us_official_graph_b2b": o.get("us_graph"), "us_official_graph_cold": o.get("us_graph_cold"),
               "us_official_eager": o.get("us_eager")}
        for k in ("gdn2_b2b", "gdn2_cold", "official_graph_b2b", "official_graph_cold"):
            row[f"gbps_{k}"], row[f"share_{k}"] = share(row[f"us_{k}"], nb, copy)
        dec.append(row)
    dec16 = []
    for d in ours.get("decode_bf16_state", []):
        nb = d.get("bytes")
        row = {"N": d["N"], "bytes": nb, "us_gdn2_b2b": d.get("us_events"), "us_gdn2_cold": d.get("us_cold"),
               "us_gdn2_host_clock": d["us"]}
        for k in ("gdn2_b2b", "gdn2_cold"):
            row[f"gbps_{k}"], row[f"share_{k}"] = share(row[f"us_{k}"], nb, copy)
        dec16.append(row)
    col = []
    for c in ours.get("collapsed", []):
        f = mode_rows.get(("fla", c["mode"], c["name"], tuple(c["shape"])), {})
        mf = f.get("ms")
        col.append({"mode": c["mode"], "name": c["name"], "shape": c["shape"], "dtype": c["dtype"],
                    "ms_gdn2": c["ms_gdn2"], "ms_expand": c.get("ms_expand"), "ms_total": c.get("ms_total"),
                    "ms_fla": mf, "ratio_fla": round(mf / c["ms_total"], 3) if mf and c.get("ms_total") else None,
                    "ratio_fla_kernel_only": round(mf / c["ms_gdn2"], 3) if mf else None,
                    "mtok_s_gdn2": c.get("mtok_s"), "peak_gb_gdn2": c.get("peak_gb_gdn2"),
                    "peak_gb_fla": f.get("peak_gb"), "fla_error": f.get("error"), "note": c.get("note")})
    res = {"device": ours.get("device"), "commit": commit, "env": env, "validated": ours.get("validated", False),
           "copy_gbps": copy, "workloads": wl, "decode": dec}
    if col:
        res["collapsed"] = col
    if dec16:
        res["decode_bf16_state"] = dec16
    with open(out + ".json.tmp", "w") as f:
        json.dump(res, f, indent=1)
    os.replace(out + ".json.tmp", out + ".json")

    f3 = lambda x: "-" if x is None else f"{x:.3f}"
    f2 = lambda x: "-" if x is None else f"{x:.2f}"
    pc = lambda x: "-" if x is None else f"{100 * x:.0f}%"
    lines = ["# H200 op benchmark (bf16 q,k,v,b,w; fp32 g and state; in-kernel q/k L2 norm)", "",
             f"Measured at commit {commit or '(not given)'}; outputs validated against the fp32 CUDA path (chunk) and "
             "the CPU step (decode) before timing: " + ("passed." if ours.get("validated") else "NOT RECORDED."), "",
             "```", env, "```", "",
             "| op | (B,T,H,K,V) | gdn2 ms | official ms | official/gdn2 | gdn2 Mtok/s | peak GB gdn2 (keep/reuse) | peak GB gdn2 (recompute) | peak GB official |",
             "|---|---|---|---|---|---|---|---|---|"]
    for w in wl:
        rec = w["name"] == "fwd+bwd (recompute)"  # its peak is the recompute column's; the official's is on fwd+bwd
        lines.append(f"| {w['name']} | {tuple(w['shape'])} | {w['ms_gdn2']:.3f} | {f3(w['ms_official'])} | "
                     f"{f3(w['ratio_official'])} | {w['mtok_s_gdn2']:.2f} | {'-' if rec else f2(w.get('peak_gb_gdn2'))} | "
                     f"{f2(w.get('peak_gb_gdn2_recompute'))} | {'-' if rec else f2(w.get('peak_gb_official'))} |")
    missing = [tuple(w["shape"]) for w in wl if w["name"] == "fwd" and w["ms_official"] is None]
    if missing:
        lines += ["", "'-' for the official: not measured in this run (" + ", ".join(str(m) for m in missing) +
                  "; the official Triton kernels autotune each new shape, ~200 s on a fresh machine)."]
    if col:
        fla_names = {"kda": "chunk_kda", "gdn": "chunk_gated_delta_rule"}
        lines += ["", "KDA / GDN: ours is the GDN-2 CUDA kernel on collapsed inputs (no KDA/GDN-specialised kernel): "
                  "b = w = beta broadcast (GDN: g too, from one decay per head) by the model's gate kernel, the backward's "
                  "dbeta (and GDN's dg) folded back by its gate backward; fla: " +
                  ", ".join(f"{m} = fla.ops {n}" for m, n in fla_names.items()) + " (peers/fla_head). "
                  "ours total = broadcast + chunk fwd (+ chunk bwd + fold), end to end; fla/ours = fla ms / ours total "
                  "(above 1: ours faster); fla/kernel = fla ms / our chunk call(s) alone.", "",
                  "| mode | op | (B,T,H,K,V) | ours chunk ms | ours expand ms | ours total ms | fla ms | fla/ours | fla/kernel | "
                  "peak GB ours | peak GB fla |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in col:
            fla = f3(c["ms_fla"]) if c["fla_error"] is None else "error"
            lines.append(f"| {c['mode']} | {c['name']} | {tuple(c['shape'])} | {c['ms_gdn2']:.3f} | {f3(c['ms_expand'])} | "
                         f"{f3(c['ms_total'])} | {fla} | {f3(c['ratio_fla'])} | {f3(c['ratio_fla_kernel_only'])} | "
                         f"{f2(c['peak_gb_gdn2'])} | {f2(c['peak_gb_fla'])} |")
        errs = sorted({c["fla_error"] for c in col if c["fla_error"]})
        if errs:
            lines += ["", "fla errors: " + "; ".join(errs)]
    lines += ["", "ratio = peer ms / gdn2 ms (above 1: gdn2 faster); fwd+bwd is a training step (gdn2: "
              "fwd(keep_for_backward) + bwd(reuse_forward); '(recompute)': plain fwd + bwd). Peak GB: every allocation "
              "live at the step's peak, inputs and d_o included (gdn2: inputs, d_o, o, gradients, workspace; official: "
              "torch.cuda.max_memory_allocated from a reset right before one fwd+bwd).",
              "", f"Decode step, H=16, K=V=128, bf16 inputs, fp32 state pool; copy {copy} GB/s. gdn2: one launch per step "
              "from C (no graph); official: fused_recurrent step captured in a CUDA graph, one replay per step. "
              "Back to back: events around 200 consecutive steps. Cold L2: a 512 MiB buffer written before each step, "
              "events around the step alone (median of 50).", "",
              "| N | gdn2 b2b us | share of copy | official graph b2b us | share | gdn2 cold us | share | official graph cold us | share | official/gdn2 b2b | official/gdn2 cold |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in dec:
        r1 = d["us_official_graph_b2b"] / d["us_gdn2_b2b"] if d["us_official_graph_b2b"] and d["us_gdn2_b2b"] else None
        r2 = d["us_official_graph_cold"] / d["us_gdn2_cold"] if d["us_official_graph_cold"] and d["us_gdn2_cold"] else None
        lines.append(f"| {d['N']} | {f2(d['us_gdn2_b2b'])} | {pc(d['share_gdn2_b2b'])} | {f2(d['us_official_graph_b2b'])} | "
                     f"{pc(d['share_official_graph_b2b'])} | {f2(d['us_gdn2_cold'])} | {pc(d['share_gdn2_cold'])} | "
                     f"{f2(d['us_official_graph_cold'])} | {pc(d['share_official_graph_cold'])} | {f2(r1)} | {f2(r2)} |")
    if dec16:
        lines += ["", "Decode step with the state pool in bf16 (half the state bytes; accuracy cost in "
                  "bench/results/cpu-decode-state.json)", "",
                  "| N | gdn2 b2b us | share of copy | gdn2 cold us | share of copy |", "|---|---|---|---|---|"]
        for d in dec16:
            lines.append(f"| {d['N']} | {f2(d['us_gdn2_b2b'])} | {pc(d['share_gdn2_b2b'])} | {f2(d['us_gdn2_cold'])} | "
                         f"{pc(d['share_gdn2_cold'])} |")
    with open(out + ".md.tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(out + ".md.tmp", out + ".md")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
