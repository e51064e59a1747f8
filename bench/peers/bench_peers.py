"""Side-by-side timing of the peer GDN-2 kernels on the GPU (bf16 q,k,v,b,w; fp32 g; in-kernel
q/k L2 norm; no initial/final state): triton.testing.do_bench medians (L2 flushed before each rep)
after a first call that compiles and autotunes. Also:
  - the peak GPU memory of one training step (fwd + bwd), torch.cuda.max_memory_allocated from a
    reset right before the step, inputs and d_o already allocated and counted (the accounting of
    bench/cuda_ops's peak_gb_gdn2), gradients set to None first;
  - --decode: the official fused_recurrent step captured in a CUDA graph (one launch per replay,
    output buffer preallocated), timed back to back (events around 200 consecutive replays) and
    from a cold L2 (a 512 MiB buffer written before each replay, events around the replay alone),
    as bench/cuda_ops times ours; the eager call through do_bench is kept for reference.

  python3 bench/peers/bench_peers.py --impl official --root peers [--quick] --out peers_official.json
  python3 bench/peers/bench_peers.py --impl fla --root peers [--quick] [--modes gdn2,kda,gdn] --out peers_fla.json

--impl official: chutesai/GatedDeltaNet-2 @95709fc (lit_gpt/gdn2_ops) on fla @4b02d15d
                 (peers/official, peers/fla_old)
--impl fla:      fla-org/flash-linear-attention HEAD fla.ops.gdn2.chunk_gdn2 (peers/fla_head)
--modes (issue 15): gdn2 (chunk_gdn2, the default of --impl official, the only one it has), kda
                 (fla.ops.kda.chunk_kda: g fp32 per-channel log decay [B,T,H,K], beta bf16 [B,T,H]),
                 gdn (fla.ops.gated_delta_rule.chunk_gated_delta_rule: g fp32 [B,T,H], one log decay
                 per head, beta bf16 [B,T,H]); --impl fla runs all three by default. Same shapes,
                 input style (q,k,v bf16 randn; g logsigmoid(randn) clamped at -0.5; beta rand),
                 scale K^-0.5, in-kernel q/k L2 norm, timing and peak accounting as chunk_gdn2; the
                 rows carry "mode" (gdn2 rows none, as before). A failed import writes a row with
                 "error" for that mode instead of stopping the run.
fla/__init__.py is bypassed (a stub package is registered) because it imports every HF model.
The checkouts live in the git-ignored peers/ folder; nothing of them is committed.
"""
import argparse
import json
import os
import sys
import time
import types


def stub_package(name, path):
    m = types.ModuleType(name)
    m.__path__ = [path]
    # fla.utils reads fla.__version__: take it from the real __init__.py without running it
    m.__version__ = "0.0.0"
    init = os.path.join(path, "__init__.py")
    if os.path.exists(init):
        for line in open(init):
            if line.startswith("__version__"):
                m.__version__ = line.split("=", 1)[1].strip().strip("'\"")
    sys.modules[name] = m
    parent, _, child = name.rpartition(".")
    if parent and parent in sys.modules:  # a subpackage (fla.layers): reachable as an attribute too
        setattr(sys.modules[parent], child, m)
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", choices=["official", "fla"], required=True)
    ap.add_argument("--root", default="peers")
    ap.add_argument("--out", default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--decode", action="store_true", help="also time the official recurrent decode step")
    ap.add_argument("--shapes", default=None,
                    help="comma-separated indices into the chunk shape list, 'none' for none (default: all)")
    ap.add_argument("--modes", default=None,
                    help="comma-separated of gdn2,kda,gdn (default: all three for fla, gdn2 for official)")
    args = ap.parse_args()
    modes = (args.modes or ("gdn2,kda,gdn" if args.impl == "fla" else "gdn2")).split(",")
    for m in modes:
        if m not in ("gdn2", "kda", "gdn"):
            ap.error(f"--modes: unknown mode {m!r}")
        if m != "gdn2" and args.impl == "official":
            ap.error(f"--modes {m}: the official checkout has gdn2 only")

    import torch
    import triton

    root = os.path.abspath(args.root)
    ops, import_error = {}, {}
    if args.impl == "official":
        stub_package("fla", os.path.join(root, "fla_old", "fla"))
        sys.path.insert(0, os.path.join(root, "official"))
    else:
        stub_package("fla", os.path.join(root, "fla_head", "fla"))
    for m in modes:
        try:
            if args.impl == "official":
                from lit_gpt.gdn2_ops.chunk_gdn2 import chunk_gdn2 as op
            elif m == "gdn2":
                from fla.ops.gdn2 import chunk_gdn2 as op
            elif m == "kda":
                from fla.ops.kda import chunk_kda as op
            else:
                from fla.ops.gated_delta_rule import chunk_gated_delta_rule as op
            ops[m] = op
        except Exception as e:  # noqa: BLE001 - any import failure becomes an "error" row
            import_error[m] = f"import failed: {e!r}"
            print(f"{args.impl} {m}: {import_error[m]}", flush=True)

    dev = "cuda"
    shapes = [(8, 4096, 16, 128, 128), (2, 16384, 16, 128, 128), (1, 65536, 16, 128, 128), (32, 2048, 32, 128, 128)]
    if args.quick:
        shapes = shapes[:1]
    if args.shapes is not None:
        shapes = [] if args.shapes == "none" else [shapes[int(i)] for i in args.shapes.split(",")]
    rows = []

    def timed(fwd, params, do):
        """(first call s, fwd ms, fwd+bwd ms, peak GB of one fwd+bwd, GB allocated before it)"""
        def fwd_bwd():
            o = fwd()
            o = o[0] if isinstance(o, tuple) else o
            o.backward(do)

        t0 = time.time()
        fwd_bwd()  # compile + autotune
        torch.cuda.synchronize()
        first = time.time() - t0
        ms_f = triton.testing.do_bench(fwd, warmup=25, rep=200, return_mode="median")
        ms_fb = triton.testing.do_bench(fwd_bwd, warmup=25, rep=300, return_mode="median", grad_to_none=params)
        # peak memory of one training step, from a reset with the inputs and d_o allocated
        for x in params:
            x.grad = None
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fwd_bwd()
        torch.cuda.synchronize()
        return first, ms_f, ms_fb, torch.cuda.max_memory_allocated() / 1e9, base / 1e9

    def error_rows(base_row, msg):
        for name in ("fwd", "fwd+bwd"):
            row = dict(base_row, name=name, error=msg[:500])
            rows.append(row)
            print(json.dumps(row), flush=True)

    for mode in modes:
        for (B, T, H, K, V) in shapes:
            base_row = {"impl": args.impl, "shape": [B, T, H, K, V], "dtype": "bf16"}
            if mode != "gdn2":
                base_row["mode"] = mode
            if mode in import_error:
                error_rows(base_row, import_error[mode])
                continue
            op = ops[mode]
            torch.manual_seed(0)
            q = torch.randn(B, T, H, K, device=dev, dtype=torch.bfloat16, requires_grad=True)
            k = torch.randn(B, T, H, K, device=dev, dtype=torch.bfloat16, requires_grad=True)
            v = torch.randn(B, T, H, V, device=dev, dtype=torch.bfloat16, requires_grad=True)
            # g: per channel [B,T,H,K] (gdn2, kda) or one per head [B,T,H] (gdn)
            gshape = (B, T, H) if mode == "gdn" else (B, T, H, K)
            g = torch.nn.functional.logsigmoid(torch.randn(*gshape, device=dev, dtype=torch.float32)).detach()
            g = (g.clamp(min=-0.5)).requires_grad_(True)
            do = torch.randn(B, T, H, V, device=dev, dtype=torch.bfloat16)
            if mode == "gdn2":
                b = torch.rand(B, T, H, K, device=dev, dtype=torch.bfloat16).requires_grad_(True)
                w = torch.rand(B, T, H, V, device=dev, dtype=torch.bfloat16).requires_grad_(True)
                params = [q, k, v, g, b, w]

                def fwd():
                    return op(q, k, v, g, b, w, scale=K ** -0.5, use_qk_l2norm_in_kernel=True)
            else:
                beta = torch.rand(B, T, H, device=dev, dtype=torch.bfloat16).requires_grad_(True)
                params = [q, k, v, g, beta]

                def fwd():
                    return op(q, k, v, g, beta, scale=K ** -0.5, use_qk_l2norm_in_kernel=True)
            try:
                first, ms_f, ms_fb, peak, base = timed(fwd, params, do)
            except Exception as e:  # noqa: BLE001 - a peer op that fails at a shape: an "error" row, go on
                error_rows(base_row, f"run failed: {e!r}")
            else:
                for name, ms in (("fwd", ms_f), ("fwd+bwd", ms_fb)):
                    row = dict(base_row, name=name, ms=round(ms, 4), mtok_s=round(B * T / ms / 1e3, 3),
                               first_call_s=round(first, 1))
                    if name == "fwd+bwd":
                        row["peak_gb"] = round(peak, 3)
                        row["inputs_gb"] = round(base, 3)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            q = k = v = g = do = params = b = w = beta = fwd = None  # free this shape's tensors (all modes)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    dec = []
    if args.decode and args.impl == "official":
        from lit_gpt.gdn2_ops.fused_recurrent_gdn2 import fused_recurrent_gdn2_fwd
        flush = torch.empty(512 << 20, dtype=torch.uint8, device=dev)  # > 2x the H200's L2 (50 MB)
        for N in (1, 16, 64, 256, 1024):
            H, K, V = 16, 128, 128
            q = torch.randn(N, 1, H, K, device=dev, dtype=torch.bfloat16)
            k = torch.randn(N, 1, H, K, device=dev, dtype=torch.bfloat16)
            v = torch.randn(N, 1, H, V, device=dev, dtype=torch.bfloat16)
            g = -torch.rand(N, 1, H, K, device=dev, dtype=torch.float32) * 0.5
            b = torch.rand(N, 1, H, K, device=dev, dtype=torch.bfloat16)
            w = torch.rand(N, 1, H, V, device=dev, dtype=torch.bfloat16)
            h0 = torch.randn(N, H, K, V, device=dev, dtype=torch.float32) * 0.1
            q2, k2, v2, g2, b2, w2 = [x.reshape(1, N, H, -1) for x in (q, k, v, g, b, w)]
            cu = torch.arange(N + 1, device=dev, dtype=torch.int64)
            out = torch.empty_like(v2)

            def step():
                return fused_recurrent_gdn2_fwd(q2, k2, v2, g2, b2, w2, initial_state=h0, scale=K ** -0.5,
                                                output_final_state=True, inplace_final_state=True, cu_seqlens=cu,
                                                use_qk_l2norm_in_kernel=True, out=out)
            try:
                step()
                torch.cuda.synchronize()
                us = triton.testing.do_bench(step, warmup=25, rep=200, return_mode="median") * 1e3
                row = {"impl": "official", "N": N, "us_eager": round(us, 2)}
                # the step in a CUDA graph: warm-up on a side stream, then capture one call
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(3):
                        step()
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    step()
                for _ in range(20):
                    graph.replay()
                torch.cuda.synchronize()
                t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                reps = 200
                t0.record()
                for _ in range(reps):
                    graph.replay()
                t1.record()
                t1.synchronize()
                row["us_graph"] = round(t0.elapsed_time(t1) / reps * 1e3, 3)
                cold = []
                for i in range(50):
                    flush.fill_(i & 0xff)
                    t0.record()
                    graph.replay()
                    t1.record()
                    t1.synchronize()
                    cold.append(t0.elapsed_time(t1) * 1e3)
                cold.sort()
                row["us_graph_cold"] = round(cold[len(cold) // 2], 3)
                dec.append(row)
                print(json.dumps(row), flush=True)
                del graph
            except Exception as e:  # the launcher's argument list differs between versions
                print(f"official decode N={N} failed: {e!r}", flush=True)
                break

    if args.out:
        with open(args.out, "w") as f:
            json.dump({"impl": args.impl, "torch": torch.__version__, "triton": triton.__version__,
                       "gpu": torch.cuda.get_device_name(), "rows": rows, "decode": dec}, f, indent=1)


if __name__ == "__main__":
    main()
