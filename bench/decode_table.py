"""The decode and prefill tables of a results README, from build/bench/decode_model's JSON and
(optionally) bench/peers/decode_peer_fla.py's, as markdown on stdout.

    python3 bench/decode_table.py bench/results/h100-decode/h100-decode.json [--peer peer-fla-decode.json]

Per config and batch: the graph step at each context, its spread (all contexts; in brackets from 8K, where an
SWA layer's window is full), the floor, the share of it, the eager step (first context), the device-sampled
step (first / last context) and, with --peer, fla's graph step (any context) and fla / ours at the first context.
"""
import argparse
import json

ap = argparse.ArgumentParser()
ap.add_argument("decode")
ap.add_argument("--peer")
a = ap.parse_args()
with open(a.decode) as f:
    d = json.load(f)
peer = {}
if a.peer:
    with open(a.peer) as f:
        for r in json.load(f).get("decode", []):
            peer[(r["config"], r["batch"])] = r

rows = {}
for r in d["decode"]:
    rows.setdefault((r["config"], r["batch"]), []).append(r)


def spread(v):
    return 100.0 * (max(v) - min(v)) / min(v) if v else 0.0


print("| config | batch | step µs at context " + " / ".join("%dK" % (c // 1024) for c in sorted({r["context"] for r in d["decode"]}))
      + " (graph) | spread (from 8K) | floor µs | share of floor | eager µs | sampled on device µs (first / last) |"
      + (" fla graph µs | fla / ours |" if peer else ""))
print("|---|---|---|---|---|---|---|---|" + ("---|---|" if peer else ""))
for (cfg, b), rs in rows.items():
    rs.sort(key=lambda r: r["context"])
    if any("skipped" in r for r in rs):
        print("| %s | %d | skipped: %s |" % (cfg, b, rs[0].get("skipped", "")) + " |" * (5 + 2 * bool(peer)))
        continue
    steps = [r["step_us"] for r in rs]
    late = [r["step_us"] for r in rs if r["context"] >= 8192]
    floors = sorted({round(r["floor_us"]) for r in rs})
    line = "| %s | %d | %s | %.1f %% (%.1f %%) | %s | %s | %.0f | %.0f / %.0f |" % (
        cfg, b, " / ".join("%.0f" % s for s in steps), spread(steps), spread(late),
        " / ".join(str(f) for f in floors), " / ".join("%.0f" % r["floor_pct"] for r in rs) + " %",
        rs[0]["step_us_eager"], rs[0].get("step_us_sampled", float("nan")), rs[-1].get("step_us_sampled", float("nan")))
    if peer:
        p = peer.get((cfg, b))
        line += (" %.0f | %.2fx |" % (p["step_us"], p["step_us"] / rs[0]["step_us"])) if p else " not run | |"
    print(line)
print()
print("| config | prefill tokens | ms | tokens/s |")
print("|---|---|---|---|")
for r in d.get("prefill", []):
    print("| %s | %d | %.1f | %.0f |" % (r["config"], r["tokens"], r["ms"], r["tok_s"]))
print()
print("Copy bandwidth (device to device, read + write): %.1f GB/s; device: %s." % (d["copy_bw_gbs"], d["device"]))
