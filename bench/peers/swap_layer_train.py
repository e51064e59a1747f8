"""The official GatedDeltaNet2 layer trained with its own chunk_gdn2 and with gdn2.chunk_gdn2 swapped in.

What it does (one GPU; the peer code under $GDN2_P4, default .gpu/peers/p4, as
.gpu/peers/official_train_bench.py: chutesai/GatedDeltaNet-2 @95709fc lit_gpt, fla @4b02d15d, the
flash_attn shim; `fla` and `lit_gpt` are stub packages so that their __init__ files are not run):
  model  = token embedding -> --layers x lit_gpt.model.Block(config gdn2_1.3B) (FusedRMSNorm ->
           GatedDeltaNet2(hidden 2304: 16 heads of K = V = 128, short convs, in-kernel q/k L2 norm)
           -> residual -> FusedRMSNorm -> LLaMAMLP(6208) -> residual; --no-mlp drops the MLP half)
           -> FusedRMSNorm -> linear head over --vocab tokens; fp32 parameters.
  task   = next-token prediction on synthetic sequences that need the recurrent state: each
           sequence is a random walk on a fixed sparse bigram table (each token has --fanout
           successors) for its first --period tokens, then that segment repeated to length T
           (predictable only by recalling tokens --period positions back). Batch i of every phase
           comes from the same seed: every phase sees the same data.
  step   = autocast(bf16) forward -> logits.float() -> cross entropy -> backward ->
           clip_grad_norm_(1.0) -> fused AdamW(--lr, betas (0.9, 0.95), weight decay 0.1) ->
           zero_grad; synchronised and timed (wall clock) per step.
  phases = official     the layer as published (lit_gpt.gdn2.chunk_gdn2 = the official Triton op)
           gdn2         lit_gpt.gdn2.chunk_gdn2 = gdn2.chunk_gdn2 (this project's CUDA kernels through
                        the Python package); same initial weights, same data
           gdn2_keep    the same with disable_recompute=True (keep_for_backward / reuse_forward)
           official_perturbed  the official op from initial weights each multiplied by
                        (1 + 2^-9 N(0,1)) (about one bf16 rounding): the loss spread that bf16-level
                        noise alone gives, the scale against which the gdn2 - official difference is
                        read.
           (--phases picks and orders them; default all four.)
  per phase: the loss of every step, the median step time over the steps after --warmup (the first
  ones include Triton compile / autotune), the peak memory (torch.cuda.max_memory_allocated, reset
  after the warm-up), and the op alone: chunk_gdn2 fwd+bwd at the layer's shape [B, T, 16, 128]
  (bf16 q k v b w, fp32 g, q/k L2 norm in kernel), median of CUDA-event timings.
  comparisons: max and mean |loss difference| per step of each phase against `official`, and the
  step-time ratio.

  python3 bench/peers/swap_layer_train.py [--out bench/results/h200-swap-layer.json] [--steps 200]
      [--warmup 10] [--layers 2] [--B 4] [--T 4096] [--vocab 4096] [--lr 1e-3] [--no-mlp]
      [--phases official,gdn2,gdn2_keep,official_perturbed] [--deadline-s SECONDS]

The JSON is rewritten after every phase (and every 50 steps), so a run cut by a timeout keeps what
it finished. --deadline-s: seconds from the start after which no phase is started and a running one
stops at its next step. Set TRITON_CACHE_DIR to a kept folder to skip the official kernels'
autotuning (~200 s on a fresh machine) on a second run. The gdn2 library: GDN2_LIBRARY, else
python/gdn2's copy, else build/libgdn2.so (a CUDA build: make CUDA=1)."""
import argparse
import functools
import json
import math
import os
import statistics
import subprocess
import sys
import time
import traceback
import types

T_START = time.time()
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
P4 = os.environ.get("GDN2_P4", os.path.join(REPO, ".gpu", "peers", "p4"))
PHASES = ("official", "gdn2", "gdn2_keep", "official_perturbed")


def log(*a):
    print("[%6.1fs]" % (time.time() - T_START), *a, flush=True)


def setup_paths(p4=P4):
    sys.path.insert(0, os.path.join(p4, "shim"))  # flash_attn stand-in (lit_gpt.model imports it)
    fpkg = types.ModuleType("fla")  # skip fla/__init__.py (imports every HF model)
    fpkg.__path__ = [os.path.join(p4, "fla")]
    fpkg.__version__ = "0.5.1+4b02d15d"
    sys.modules["fla"] = fpkg
    lpkg = types.ModuleType("lit_gpt")  # skip lit_gpt/__init__.py (lightning, tokenizer)
    lpkg.__path__ = [os.path.join(p4, "official", "lit_gpt")]
    sys.modules["lit_gpt"] = lpkg
    sys.path.insert(0, os.path.join(REPO, "python"))


def smi():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw,"
                               "memory.used", "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=20).stdout.strip()
    except Exception as e:  # noqa: BLE001
        return repr(e)


class Run:
    def __init__(self, a):
        self.a = a
        self.res = dict(meta={}, phases={}, comparisons={})

    def save(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.a.out)), exist_ok=True)
        tmp = self.a.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.res, f, indent=1)
        os.replace(tmp, self.a.out)

    def left(self):
        return self.a.deadline_s - (time.time() - T_START)


def build(a, cfg, torch, M):
    """embedding -> layers x Block -> norm -> head (fp32 parameters on the GPU)."""
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(a.vocab, cfg.n_embd)
            self.blocks = nn.ModuleList(M.Block(cfg, i * cfg.gdn2_per_layer) for i in range(a.layers))
            self.norm = cfg.norm_class(cfg.n_embd, eps=cfg.norm_eps)
            self.head = nn.Linear(cfg.n_embd, a.vocab, bias=False)

        def forward(self, idx):
            x = self.emb(idx)
            for blk in self.blocks:
                x, _ = blk(x, None, idx.shape[1])  # a GDN-2 block uses no rope / mask / kv cache
            return self.head(self.norm(x))

    with torch.device("cuda"):
        net = Net()
    for blk in net.blocks:
        assert blk.use_gdn2, "block is not a GDN-2 block"
    nn.init.normal_(net.emb.weight, std=0.02)
    nn.init.normal_(net.head.weight, std=0.02 / math.sqrt(2 * a.layers))
    return net


def make_batch(a, step, torch):
    """Batch `step`: identical in every phase (its own generator). First --period tokens a walk on
    the fixed bigram table, then repeated."""
    g = torch.Generator(device="cuda").manual_seed(10_000 + step)
    P = min(a.period, a.T + 1)
    succ = make_batch.table
    cur = torch.randint(0, a.vocab, (a.B,), device="cuda", generator=g)
    choice = torch.randint(0, a.fanout, (a.B, P), device="cuda", generator=g)
    seg = torch.empty(a.B, P, dtype=torch.long, device="cuda")
    # the walk: P small (default 512): a loop of gathers
    for t in range(P):
        seg[:, t] = cur
        cur = succ[cur, choice[:, t]]
    reps = (a.T + 1 + P - 1) // P
    idx = seg.repeat(1, reps)[:, :a.T + 1]
    return idx[:, :-1].contiguous(), idx[:, 1:].contiguous()


def op_timing(fn, a, torch, reps=20):
    """chunk_gdn2 fwd+bwd alone at the layer's shape, median ms (CUDA events)."""
    B, T, H, K = a.B, a.T, 16, 128
    gen = torch.Generator(device="cuda").manual_seed(0)
    bf = torch.bfloat16
    q, k, v = (torch.randn(B, T, H, K, device="cuda", dtype=bf, generator=gen).requires_grad_(True) for _ in range(3))
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, K, device="cuda", generator=gen)).clamp(min=-0.5)
    g.requires_grad_(True)
    b = torch.rand(B, T, H, K, device="cuda", generator=gen).to(bf).requires_grad_(True)
    w = torch.rand(B, T, H, K, device="cuda", generator=gen).to(bf).requires_grad_(True)
    do = torch.randn(B, T, H, K, device="cuda", dtype=bf, generator=gen)
    ts = []
    for i in range(reps + 3):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        o, _ = fn(q=q, k=k, v=v, g=g, b=b, w=w, use_qk_l2norm_in_kernel=True, output_final_state=False)
        torch.autograd.backward(o, do)
        e1.record()
        torch.cuda.synchronize()
        if i >= 3:
            ts.append(e0.elapsed_time(e1))
        for x in (q, k, v, g, b, w):
            x.grad = None
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results", "h200-swap-layer.json"))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10, help="steps left out of the timing (compile, autotune)")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--B", type=int, default=4)
    ap.add_argument("--T", type=int, default=4096)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--fanout", type=int, default=8)
    ap.add_argument("--period", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--config", default="gdn2_1.3B")
    ap.add_argument("--no-mlp", action="store_true", help="blocks without the MLP half (GDN-2 token mixer only)")
    ap.add_argument("--phases", default=",".join(PHASES))
    ap.add_argument("--no-op-timing", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--deadline-s", type=float, default=1e9)
    a = ap.parse_args()
    phases = [p for p in a.phases.split(",") if p]
    for p in phases:
        if p not in PHASES:
            ap.error("unknown phase %r (known: %s)" % (p, ", ".join(PHASES)))
    R = Run(a)
    setup_paths()
    import torch
    import triton
    torch.backends.cuda.matmul.allow_tf32 = True  # as pretrain.py: set_float32_matmul_precision("high")
    torch.set_float32_matmul_precision("high")
    import fla.layers.utils  # noqa: F401  (before lit_gpt.model: the flash_attn shim's bert_padding uses it)
    import lit_gpt.model as M  # noqa: E402  (before lit_gpt.config: config.py imports lit_gpt.model)
    import lit_gpt.gdn2 as LG
    from lit_gpt.config import Config, name_to_config
    import gdn2
    official_op = LG.chunk_gdn2
    meta = R.res["meta"]
    meta.update(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__,
                python=sys.version.split()[0], gdn2=gdn2.version(), gdn2_library=gdn2.library_path,
                gdn2_cuda=gdn2.cuda_available(), argv=sys.argv[1:], args=vars(a), smi_start=smi(),
                triton_cache_dir=os.environ.get("TRITON_CACHE_DIR"),
                code="lit_gpt from chutesai/GatedDeltaNet-2 @95709fc; fla-org/flash-linear-attention @4b02d15d",
                step="autocast(bf16) fwd -> logits.float() -> cross_entropy -> backward -> clip_grad_norm_(1.0) -> "
                     "fused AdamW(lr %g, betas (0.9,0.95), wd 0.1) -> zero_grad(set_to_none)" % a.lr,
                t_import_s=round(time.time() - T_START, 1))
    if not gdn2.cuda_available():
        meta["error"] = "libgdn2 at %s has no CUDA: %s" % (gdn2.library_path, gdn2._lib.last_error())
        R.save()
        log(meta["error"])
        sys.exit(1)
    cd = dict(name_to_config[a.config])
    cd["block_size"] = a.T
    if a.no_mlp:
        cd["mlp"] = False
    cfg = Config(**cd)
    meta["config"] = cd

    torch.manual_seed(a.seed)
    net = build(a, cfg, torch, M)
    layer = net.blocks[0].attn
    meta["layer"] = dict(hidden_size=layer.hidden_size, num_heads=layer.num_heads, num_v_heads=layer.num_v_heads,
                         head_k_dim=layer.head_k_dim, head_v_dim=layer.head_v_dim,
                         params_per_gdn2_layer=sum(p.numel() for p in layer.parameters()),
                         params_per_block=sum(p.numel() for p in net.blocks[0].parameters()),
                         params_total=sum(p.numel() for p in net.parameters()))
    log("model", json.dumps(meta["layer"]))
    init = {k: v.detach().clone() for k, v in net.state_dict().items()}
    g0 = torch.Generator(device="cuda").manual_seed(a.seed + 1)
    make_batch.table = torch.randint(0, a.vocab, (a.vocab, a.fanout), device="cuda", generator=g0)
    ops = dict(official=official_op, gdn2=gdn2.chunk_gdn2, gdn2_keep=functools.partial(gdn2.chunk_gdn2,
                                                                                       disable_recompute=True),
               official_perturbed=official_op)
    R.save()
    last_phase_s = None
    for ph in phases:
        need = (last_phase_s or 0) * 0.8
        if R.left() < need + 10:
            R.res["phases"][ph] = dict(skipped="deadline (%.0f s left, ~%.0f s needed)" % (R.left(), need))
            R.save()
            log(ph, "skipped:", R.res["phases"][ph]["skipped"])
            continue
        t_ph = time.time()
        P = R.res["phases"][ph] = dict(op="official" if ph.startswith("official") else "gdn2", losses=[], step_s=[])
        try:
            LG.chunk_gdn2 = ops[ph]
            net.load_state_dict(init)
            if ph == "official_perturbed":
                gp = torch.Generator(device="cuda").manual_seed(a.seed + 2)
                with torch.no_grad():
                    for p in net.parameters():
                        p.mul_(1 + 2.0 ** -9 * torch.randn(p.shape, device="cuda", generator=gp))
            net.train()
            params = list(net.parameters())
            opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
            torch.manual_seed(a.seed)
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            for step in range(a.steps):
                if R.left() <= 0:
                    P["stopped"] = "deadline at step %d" % step
                    break
                inp, tgt = make_batch(a, step, torch)
                torch.cuda.synchronize()
                s0 = time.perf_counter()
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    logits = net(inp)
                loss = torch.nn.functional.cross_entropy(logits.float().view(-1, a.vocab), tgt.view(-1))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                lv = loss.item()  # (synchronises)
                torch.cuda.synchronize()
                P["step_s"].append(time.perf_counter() - s0)
                P["losses"].append(lv)
                del logits, loss
                if step + 1 == a.warmup:
                    torch.cuda.reset_peak_memory_stats()
                if step < 3 or (step + 1) % 25 == 0:
                    log("%s step %d loss %.4f  %.1f ms" % (ph, step, lv, P["step_s"][-1] * 1e3))
                if (step + 1) % 50 == 0:
                    R.save()
                if not math.isfinite(lv):
                    P["stopped"] = "non-finite loss at step %d" % step
                    break
            timed = P["step_s"][a.warmup:] if len(P["step_s"]) > a.warmup else P["step_s"][1:]
            if timed:
                P.update(step_ms_median=statistics.median(timed) * 1e3, step_ms_min=min(timed) * 1e3,
                         step_ms_max=max(timed) * 1e3, timed_steps=len(timed),
                         tok_s=a.B * a.T / statistics.median(timed))
            P.update(peak_gb=torch.cuda.max_memory_allocated() / 1e9,
                     peak_reserved_gb=torch.cuda.max_memory_reserved() / 1e9,
                     first_step_s=P["step_s"][0] if P["step_s"] else None)
            del opt, params
            if not a.no_op_timing and ph != "official_perturbed":
                P["op_fwd_bwd_ms"] = op_timing(ops[ph], a, torch)
        except Exception as e:  # noqa: BLE001
            P.update(error=repr(e)[:500], tb=traceback.format_exc()[-3000:])
            log(ph, "FAILED", traceback.format_exc())
        finally:
            LG.chunk_gdn2 = official_op
        P["phase_s"] = round(time.time() - t_ph, 1)
        last_phase_s = P["phase_s"]
        P["step_s"] = [round(x, 5) for x in P["step_s"]]
        compare(R)
        R.save()
        log(ph, "done:", json.dumps({k: v for k, v in P.items() if k not in ("losses", "step_s")}))
        torch.cuda.empty_cache()
    meta["smi_end"] = smi()
    meta["t_total_s"] = round(time.time() - T_START, 1)
    R.save()
    log("DONE", json.dumps(R.res["comparisons"]), "->", a.out)


def compare(R):
    ph = R.res["phases"]
    ref = ph.get("official", {}).get("losses")
    if not ref:
        return
    for name, P in ph.items():
        if name == "official" or not P.get("losses"):
            continue
        n = min(len(ref), len(P["losses"]))
        d = [abs(x - y) for x, y in zip(ref[:n], P["losses"][:n])]
        c = dict(steps=n, max_abs_loss_diff=max(d), mean_abs_loss_diff=sum(d) / n,
                 max_abs_loss_diff_last_half=max(d[n // 2:]) if n >= 2 else max(d),
                 final_loss=[ref[n - 1], P["losses"][n - 1]],
                 max_rel_loss_diff=max(di / abs(r) for di, r in zip(d, ref[:n]) if r))
        if "step_ms_median" in P and "step_ms_median" in ph["official"]:
            c["step_time_ratio_official_over_this"] = ph["official"]["step_ms_median"] / P["step_ms_median"]
        if "op_fwd_bwd_ms" in P and "op_fwd_bwd_ms" in ph["official"]:
            c["op_time_ratio_official_over_this"] = ph["official"]["op_fwd_bwd_ms"] / P["op_fwd_bwd_ms"]
        R.res["comparisons"]["%s_vs_official" % name] = c


if __name__ == "__main__":
    main()
