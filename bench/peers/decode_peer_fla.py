"""Decode speed of fla's GDN-2 model on the GPU, side by side with ours (build/bench/decode_model).

  python3 bench/peers/decode_peer_fla.py --fla peers/fla_head --out OUT.json
                                         [--batches 1,16,64,256] [--steps 50] [--warmup 5] [--prompt 16]

What runs. fla (fla-org/flash-linear-attention) HEAD has the GDN-2 token mixer
(fla/layers/gdn2.py: GatedDeltaNet2, kernels fla/ops/gdn2) but no GDN-2 causal-LM class (there is no
fla/models/gdn2). So the model is fla's KDA causal LM (fla/models/kda: KDAForCausalLM = embeddings,
18 pre-norm blocks of [RMSNorm, mixer, RMSNorm + residual, GatedMLP], final RMSNorm, untied lm_head)
with every block's mixer built as fla's GatedDeltaNet2 instead of KimiDeltaAttention, at the
gdn2_1.3B shape (18 layers, hidden 2304, 16 GDN-2 heads of 128 for keys and values, MLP 6208, vocab
32000: the same 1,450,096,416 parameters as ours), random init, bf16, eval mode, fla's own Cache
(fla/models/utils.py). What differs from our model is printed and written to the JSON
("differences").

What is timed. Per batch B: a random prompt of --prompt tokens per sequence is prefilled (one forward
with use_cache=True), then the decode step: one token per sequence through the whole model with the
cache (GatedDeltaNet2 takes its fused_recurrent path when q_len <= 64 in eval mode; ShortConvolution
its step path, which updates the conv cache in place), logits [B, 1, 32000] bf16.
  - "eager": fla's model forward as it is, op by op (the layer's fused_recurrent_gdn2 allocates a
    new fp32 state per layer per step; the cache keeps the newest).
  - "graph": the same step captured once in a torch.cuda.CUDAGraph and replayed. A graph needs
    the state updated in place; fla's conv cache already is, and for the recurrent state the
    layer module's reference to fused_recurrent_gdn2 is replaced by a call of fla's own
    fused_recurrent_gdn2_fwd(..., inplace_final_state=True) (same Triton kernel and arguments;
    it stores the final state over the initial one, which each program reads before it writes).
    If the capture fails, torch.compile(mode="reduce-overhead") is tried ("compiled"); if that
    fails too, eager alone is reported, with the reason.
A step's time is the median wall time of --steps steps after --warmup, each ending synchronised:
  step_us        token ids uploaded (B int64, from pinned memory), the step, the bf16 logits
                 downloaded to pinned host memory (as decode_model's step_us downloads its fp32
                 logits; these are half the bytes);
  step_us_device the same without the logits' download (they stay on the GPU).
tok_s = B / step_us. The graph is timed first (after its validation, with the validation's state
snapshot freed), then eager (the graph freed, no copy of the state kept): peak_gb is
torch.cuda.max_memory_allocated over each timing (weights, cache, the step's buffers; the graph's
pool), from a reset right before it. Context: a recurrent (GDN-2) layer's state is the same size at every
position, so the step costs the same at any context; a context (decode_model's 1K..128K) is only a
label for this model, and the rows say "context": "any".

Validation before timing: the prefill's and three eager steps' logits are finite (else the batch is
skipped, with the reason in "skipped"); from the same state (restored from a snapshot), the in-place
variant's three eager steps and the graph's (or compiled step's) three replays give the eager
step's logits within bf16 noise (relative RMSE <= 1e-2 each, in the row's "checks"; else that batch
is timed eager only and its "note" says why).

Output: a table on stdout and JSON {"gpu", "torch", "triton", "fla", "fla_commit", "model",
"differences", "decode": [{config, batch, context, step_us, tok_s, step_us_device, tok_s_device,
mode, peak_gb, step_us_eager, tok_s_eager, checks, note?}] (one row per batch, the best mode that
passed validation), "eager": [the eager rows], "skipped": [{batch, why}]} written to --out (to a
temporary name, then renamed, after every batch, so that a run cut short keeps what it measured).

fla is imported from --fla PATH (a checkout of fla HEAD: PATH/fla/layers/gdn2.py) without running
fla/__init__.py, fla/layers/__init__.py or fla/models/__init__.py (they import every layer and
model; stub packages are registered as bench_peers.py does). Needs torch, triton, einops and
transformers (fla's models and Cache are transformers classes).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_peers import stub_package  # noqa: E402  (one home: registers a package without its __init__.py)

OURS = {  # src/model/config.c k_named "gdn2_1.3B", docs/MODEL.md
    "config": "gdn2_1.3B", "n_layer": 18, "hidden": 2304, "gdn_heads": 16, "gdn_head_dim": 128,
    "gdn_v_heads": 16, "expand_v": 1, "intermediate": 6208, "vocab": 32000, "conv_size": 4,
    "norm_eps": 1e-5, "allow_neg_eigval": False, "tie_embeddings": False, "params": 1450096416,
}


DEVICE = "cuda"  # the device the steps run on (a test may point it elsewhere)


def die(msg, code=2):
    print(f"decode_peer_fla: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def fla_package_dir(path):
    p = os.path.abspath(path)
    for cand in (os.path.join(p, "fla"), p):
        if os.path.isfile(os.path.join(cand, "layers", "gdn2.py")) and os.path.isdir(os.path.join(cand, "models", "kda")):
            return cand
    return None


def fla_commit(path, given):
    if given:
        return given
    try:
        r = subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if r.returncode == 0:
            return r.stdout.strip()
    except Exception:
        pass
    f = os.path.join(path, "COMMIT")
    return open(f).read().strip() if os.path.exists(f) else "unknown"


def load_fla(pkg):
    """Import what this needs of fla from the package folder `pkg` (stubs for the heavy __init__s)."""
    fla = stub_package("fla", pkg)
    stub_package("fla.layers", os.path.join(pkg, "layers"))
    stub_package("fla.models", os.path.join(pkg, "models"))
    import fla.layers.gdn2 as gdn2_layer_mod
    import fla.models.kda.modeling_kda as kda_mod
    from fla.models.kda.configuration_kda import KDAConfig
    from fla.models.utils import Cache
    from fla.ops.gdn2.fused_recurrent import fused_recurrent_gdn2_fwd
    return types.SimpleNamespace(version=fla.__version__, gdn2=gdn2_layer_mod, kda=kda_mod, KDAConfig=KDAConfig,
                                 Cache=Cache, fused_recurrent_gdn2_fwd=fused_recurrent_gdn2_fwd,
                                 fused_recurrent_gdn2=gdn2_layer_mod.fused_recurrent_gdn2)


def build_model(F, torch, tiny=False, device="cuda"):
    """fla's KDA causal LM with GatedDeltaNet2 mixers at the gdn2_1.3B shape (or a tiny one), bf16, eval."""
    o = OURS if not tiny else dict(OURS, n_layer=2, hidden=64, gdn_heads=2, gdn_head_dim=32, gdn_v_heads=2,
                                    intermediate=128, vocab=256)
    cfg = F.KDAConfig(
        attn_mode="chunk",              # the layer falls back to fused_recurrent for q_len <= 64 in eval
        hidden_size=o["hidden"],
        expand_v=1.0,
        use_short_conv=True,
        allow_neg_eigval=False,
        conv_size=o["conv_size"],
        head_dim=o["gdn_head_dim"],
        num_heads=o["gdn_heads"],
        num_v_heads=None,
        hidden_ratio=4,
        intermediate_size=o["intermediate"],
        hidden_act="swish",
        num_hidden_layers=o["n_layer"],
        norm_eps=o["norm_eps"],
        attn=None,
        use_cache=True,
        tie_word_embeddings=False,
        fuse_norm=True,
        fuse_swiglu=True,
        fuse_cross_entropy=False,
        vocab_size=o["vocab"],
    )

    base = F.gdn2.GatedDeltaNet2

    class GDN2Mixer(base):
        """fla's GatedDeltaNet2, built where KDABlock builds its mixer. KDABlock passes KDA's
        safe_gate / lower_bound too (GatedDeltaNet2 takes **kwargs); KDAPreTrainedModel._init_weights
        reads `safe_gate` of its mixers (False: A_log = ln U(1,16), as GatedDeltaNet2's own init)."""
        safe_gate = False

    saved = F.kda.KimiDeltaAttention
    F.kda.KimiDeltaAttention = GDN2Mixer  # the name KDABlock and _init_weights look up at call time
    try:
        try:  # built on the GPU (its init there takes a second); on the CPU if the device context is refused
            with torch.device(device):
                model = F.kda.KDAForCausalLM(cfg)
        except Exception as e:
            if device == "cpu":
                raise
            print(f"building under torch.device({device!r}) failed ({type(e).__name__}: {e}); building on the CPU",
                  flush=True)
            model = F.kda.KDAForCausalLM(cfg).to(device)
    finally:
        F.kda.KimiDeltaAttention = saved
    model = model.to(torch.bfloat16).eval()
    mixers = [blk.attn for blk in model.model.layers]
    assert all(isinstance(m, base) for m in mixers), "a block's mixer is not GatedDeltaNet2"
    return model, cfg, o


def differences(model, cfg, o):
    m = model.model.layers[0].attn
    mlp = model.model.layers[0].mlp
    n_params = sum(p.numel() for p in model.parameters())
    d = [
        {"what": "model class", "fla": "KDAForCausalLM (fla/models/kda) with each block's mixer built as "
         "fla.layers.gdn2.GatedDeltaNet2: fla HEAD has the GDN-2 layer but no GDN-2 model class",
         "ours": "the official lit_gpt GPT (docs/MODEL.md): the same block structure"},
        {"what": "parameters", "fla": n_params, "ours": o["params"], "same": n_params == o["params"]},
        {"what": "output gate of the mixer's RMSNorm", "fla": f"FusedRMSNormGated(activation={m.o_norm.activation!r}): "
         "rmsnorm(o)*w * sigmoid(a)", "ours": "rmsnorm(o)*w * a*sigmoid(a) (swish, official lit_gpt)"},
        {"what": "dtype of the weights", "fla": "all bf16 (model.to(bfloat16)): projections, embedding, lm_head, "
         "norm / conv weights, A_log, dt_bias",
         "ours": "bf16 matmul views; fp32 norm, conv and gate parameters (A_log, dt_bias), fp32 embedding rows"},
        {"what": "conv cache", "fla": f"bf16 [B, D, {m.conv_size}] per q/k/v (ShortConvolution.step, updated in place)",
         "ours": "fp32"},
        {"what": "recurrent state", "fla": "fp32 [B, H, K, V] per layer; eager: a new tensor each step "
         "(fused_recurrent_gdn2 allocates final_state); graph: updated in place (inplace_final_state=True)",
         "ours": "fp32 [HV, K, V] per slot, updated in place"},
        {"what": "logits", "fla": "bf16 [B, 1, vocab] (downloaded in step_us)", "ours": "fp32 [B, padded_vocab] "
         "downloaded to the host in step_us (decode_model)"},
        {"what": "batching", "fla": "a dense batch: every sequence of the cache steps every time",
         "ours": "step_slots over slot tables (any subset of the slots, continuous batching)"},
        {"what": "norm_eps", "fla": cfg.norm_eps, "ours": o["norm_eps"], "note": "KDAConfig's default is 1e-6; set to ours"},
        {"what": "MLP", "fla": f"GatedMLP(intermediate {mlp.intermediate_size}, fuse_swiglu: swiglu_linear "
         "fuses silu(gate)*up with down_proj)", "ours": f"SwiGLU w1/w2/w3, intermediate {o['intermediate']}"},
        {"what": "residual + norm", "fla": "fuse_norm: the MLP's RMSNorm adds the residual in its kernel",
         "ours": "separate add and RMSNorm"},
        {"what": "init", "fla": "Linear and Embedding N(0, 0.02) (KDAPreTrainedModel._init_weights), A_log ln U(1,16), "
         "dt_bias softplus^-1(log-uniform [1e-3, 1e-1])", "ours": "official: xavier (gain 2^-2.5), "
         "kaiming-uniform, wte N(0, 0.02); irrelevant to speed"},
        {"what": "same as ours", "fla": f"layers {cfg.num_hidden_layers}, hidden {cfg.hidden_size}, "
         f"heads {m.num_heads} x K {m.head_k_dim} / {m.num_v_heads} x V {m.head_v_dim}, short conv {m.conv_size} + SiLU on "
         f"q, k, v (bias {m.conv_bias}), low-rank f_proj / g_proj (rank {m.head_v_dim}, g_proj bias), b/w sigmoid gates, "
         f"allow_neg_eigval {m.allow_neg_eigval}, q/k L2 norm in the kernel, scale K^-1/2, vocab {cfg.vocab_size}, "
         f"untied lm_head {not cfg.tie_word_embeddings}", "ours": "the same"},
        {"what": "swa_gdn2_1.3B", "fla": "not run: fla's Attention layer needs flash-attn (not on the device) and "
         "its KV cache grows by torch.cat (not capturable in a static graph)", "ours": "decode_model runs it"},
    ]
    return d


class InplaceRecurrent:
    """Replaces fla.layers.gdn2's reference to fused_recurrent_gdn2 by fla's own fused_recurrent_gdn2_fwd
    with inplace_final_state=True (when there is an initial state and no cu_seqlens); undone on exit."""

    def __init__(self, F):
        self.F = F

    def __enter__(self):
        F = self.F
        orig, fwd = F.fused_recurrent_gdn2, F.fused_recurrent_gdn2_fwd

        def step(q, k, v, g, b, w, initial_state=None, output_final_state=False, use_qk_l2norm_in_kernel=False,
                 cu_seqlens=None, scale=None, **kw):
            if initial_state is None or cu_seqlens is not None or kw:
                return orig(q=q, k=k, v=v, g=g, b=b, w=w, initial_state=initial_state, scale=scale,
                            output_final_state=output_final_state, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                            cu_seqlens=cu_seqlens, **kw)
            q, k, v, g, b, w = (x.contiguous() for x in (q, k, v, g, b, w))
            assert initial_state.is_contiguous() and initial_state.dtype.is_floating_point
            return fwd(q=q, k=k, v=v, g=g, b=b, w=w, initial_state=initial_state, scale=scale,
                       output_final_state=True, inplace_final_state=True,
                       use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel)
        F.gdn2.fused_recurrent_gdn2 = step
        return self

    def __exit__(self, *exc):
        self.F.gdn2.fused_recurrent_gdn2 = self.F.fused_recurrent_gdn2
        return False


def rel_rmse(a, b):
    a, b = a.float(), b.float()
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def one_batch(torch, F, model, cfg, o, B, args):
    """Prefill, validate and time the decode step at batch B: (eager row, best row)."""
    dev = torch.device(DEVICE)
    V, n_layers = cfg.vocab_size, cfg.num_hidden_layers
    g = torch.Generator(device="cpu").manual_seed(1000 + B)
    prompt = torch.randint(0, V, (B, args.prompt), generator=g).to(dev)
    nid = max(args.steps + args.warmup, 3)
    ids_host = torch.randint(0, V, (nid, B, 1), generator=g).pin_memory()
    static_ids = torch.empty(B, 1, dtype=torch.long, device=dev)
    logits_host = torch.empty(B, 1, V, dtype=torch.bfloat16).pin_memory()

    def fwd(ids, pkv):
        return model(input_ids=ids, past_key_values=pkv, use_cache=True, return_dict=True,
                     output_attentions=False, output_hidden_states=False)

    out = fwd(prompt, None)
    cache = out.past_key_values
    assert tuple(out.logits.shape) == (B, args.prompt, V), f"prefill logits {tuple(out.logits.shape)}"
    assert torch.isfinite(out.logits).all(), "prefill logits not finite"
    assert cache is not None and len(cache) == n_layers, f"cache has {len(cache) if cache is not None else None} layers"
    del out
    # the state tensors a step reads (and, in place, writes): the fp32 recurrent state, the conv caches (q, k, v)
    refs = []
    for i in range(n_layers):
        st = cache[i]
        rec, conv = st["recurrent_state"], st["conv_state"]
        assert rec is not None and conv is not None and len(conv) == 3, f"layer {i}: no recurrent/conv state"
        assert rec.is_contiguous() and rec.dtype == torch.float32, f"layer {i}: recurrent state {rec.dtype}"
        refs.append((rec, tuple(conv)))
    snap = [(r.clone(), tuple(c.clone() for c in cs)) for r, cs in refs]
    state_gb = sum(r.numel() * r.element_size() + sum(c.numel() * c.element_size() for c in cs)
                   for r, cs in refs) / 1e9

    def restore():
        for i, ((r, cs), (sr, scs)) in enumerate(zip(refs, snap)):
            r.copy_(sr)
            for c, sc in zip(cs, scs):
                c.copy_(sc)
            cache[i]["recurrent_state"] = r
            cache[i]["conv_state"] = cs

    def step():
        return fwd(static_ids, cache).logits

    def timed(fn, with_d2h):
        ts = []
        for j in range(args.warmup + args.steps):
            t = time.perf_counter()
            static_ids.copy_(ids_host[j % nid], non_blocking=True)
            lg = fn()
            if with_d2h:
                logits_host.copy_(lg)
            torch.cuda.synchronize()
            if j >= args.warmup:
                ts.append((time.perf_counter() - t) * 1e6)
        return statistics.median(ts)

    def row(mode, us, us_dev):
        return {"config": o["config"], "batch": B, "context": "any", "mode": mode, "step_us": round(us, 1),
                "tok_s": round(B / us * 1e6, 1), "step_us_device": round(us_dev, 1),
                "tok_s_device": round(B / us_dev * 1e6, 1), "state_gb": round(state_gb, 3)}

    # validation: 3 eager steps of fla as it is, from the prefilled state
    ref = []
    for j in range(3):
        static_ids.copy_(ids_host[j])
        lg = step()
        assert tuple(lg.shape) == (B, 1, V), f"step logits {tuple(lg.shape)}"
        assert torch.isfinite(lg).all(), f"eager step {j}: logits not finite"
        ref.append(lg.clone())
    restore()
    best, checks, note = None, {}, None
    if args.no_graph:
        note = "--no-graph: eager only"
    else:
        with InplaceRecurrent(F):
            errs = []  # the in-place variant, eagerly: fla's step's logits, and the state stays in the same tensors
            for j in range(3):
                static_ids.copy_(ids_host[j])
                errs.append(rel_rmse(step(), ref[j]))
            checks["inplace_eager_rel_rmse"] = [float(f"{x:.3g}") for x in errs]
            mode, run, graph, static_logits, cstep = None, None, None, None, None
            if not max(errs) <= 1e-2:
                note = f"the in-place recurrent step differs from fla's: rel RMSE {errs}; eager only"
            elif not all(cache[i]["recurrent_state"] is refs[i][0] for i in range(n_layers)):
                note = "the in-place step did not keep the recurrent state in place (the layer did not call the " \
                       "replacement); eager only"
            restore()
            try:
                if note:
                    raise RuntimeError(note)
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for j in range(3):
                        static_ids.copy_(ids_host[j])
                        step()
                torch.cuda.current_stream().wait_stream(side)
                torch.cuda.synchronize()
                restore()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    static_logits = step()
                torch.cuda.synchronize()

                def run():
                    graph.replay()
                    return static_logits
                mode = "graph"
            except Exception as e:
                inplace_failed = bool(note)
                note = note or f"CUDA graph capture failed: {type(e).__name__}: {e}"
                print(f"B={B}: {note}", flush=True)
                graph = static_logits = None
                torch.cuda.synchronize()
                if not args.no_compile and not inplace_failed:
                    try:
                        cstep = torch.compile(step, mode="reduce-overhead")
                        restore()
                        for j in range(3):  # compile + cudagraph-tree recording
                            static_ids.copy_(ids_host[j])
                            cstep()
                        torch.cuda.synchronize()

                        def run():
                            return cstep()
                        mode = "compiled"
                    except Exception as e2:
                        note += f"; torch.compile(mode='reduce-overhead') failed: {type(e2).__name__}: {e2}"
                        print(f"B={B}: {note}", flush=True)
            if run is not None:
                restore()
                errs = []
                for j in range(3):
                    static_ids.copy_(ids_host[j])
                    errs.append(rel_rmse(run(), ref[j]))
                checks[f"{mode}_rel_rmse"] = [float(f"{x:.3g}") for x in errs]
                if not max(errs) <= 1e-2:
                    note = (note + "; " if note else "") + f"{mode} logits differ from the eager step's: rel RMSE {errs}"
                    print(f"B={B}: {note}; eager only", flush=True)
                    run = None
            if run is not None:
                restore()
                snap = None  # the validation's snapshot: not counted in the timed step's memory
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                best = row(mode, timed(run, True), timed(run, False))
                best["peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
                best["finite_after_timing"] = bool(torch.isfinite(run()).all())
            run = graph = static_logits = cstep = None  # the graph's memory pool goes before the eager timing
            if mode == "compiled":
                torch._dynamo.reset()
    # eager, as fla runs it: a new state per layer each step (the harness keeps no other copy now)
    refs = snap = ref = None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    row_e = row("eager", timed(step, True), timed(step, False))
    row_e["peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    row_e["finite_after_timing"] = bool(torch.isfinite(step()).all())
    if best is None:
        best = row_e
    else:
        best["step_us_eager"], best["tok_s_eager"] = row_e["step_us"], row_e["tok_s"]
        best["peak_gb_eager"] = row_e["peak_gb"]
    best["checks"] = checks
    if note:
        best["note"] = note
    return row_e, best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fla", default="peers/fla_head", help="a checkout of fla HEAD (PATH/fla/layers/gdn2.py)")
    ap.add_argument("--fla-commit", default=None, help="the fla commit of the checkout (default: git, PATH/COMMIT)")
    ap.add_argument("--out", default=None, help="JSON output (written after every batch)")
    ap.add_argument("--batches", default="1,16,64,256")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--prompt", type=int, default=16, help="prompt tokens per sequence prefilled before the steps")
    ap.add_argument("--no-graph", action="store_true", help="eager only")
    ap.add_argument("--no-compile", action="store_true", help="no torch.compile fallback when the capture fails")
    ap.add_argument("--check-cpu", action="store_true",
                    help="no GPU needed: import fla, build a tiny model on the CPU, print its differences, exit")
    args = ap.parse_args()
    try:
        batches = [int(x) for x in args.batches.split(",") if x]
        assert batches and min(batches) >= 1 and args.steps >= 1 and args.warmup >= 0 and args.prompt >= 1
    except Exception:
        die(f"bad --batches/--steps/--warmup/--prompt: {args.batches!r} {args.steps} {args.warmup} {args.prompt}")

    try:
        import torch
        import triton
    except ImportError as e:
        die(f"needs torch and triton ({e})")
    if not args.check_cpu and not torch.cuda.is_available():
        die("no CUDA GPU visible to torch (torch.cuda.is_available() is False): nothing to time")
    pkg = fla_package_dir(args.fla)
    if pkg is None:
        die(f"fla not found at {args.fla!r}: expected a checkout of fla HEAD with fla/layers/gdn2.py and "
            f"fla/models/kda (e.g. peers/fla_head)")
    try:
        F = load_fla(pkg)
    except Exception as e:
        traceback.print_exc()
        die(f"importing fla from {pkg} failed: {type(e).__name__}: {e}")
    torch.set_grad_enabled(False)

    if args.check_cpu:
        model, cfg, o = build_model(F, torch, tiny=True, device="cpu")
        print(json.dumps({"fla": F.version, "params_tiny": sum(p.numel() for p in model.parameters()),
                          "mixer": type(model.model.layers[0].attn).__mro__[1].__module__}, indent=1))
        for dd in differences(model, cfg, o):
            print(json.dumps(dd))
        return

    gpu = torch.cuda.get_device_name()
    t0 = time.time()
    torch.manual_seed(0)
    model, cfg, o = build_model(F, torch)
    diffs = differences(model, cfg, o)
    print(f"gpu {gpu}; torch {torch.__version__}, triton {triton.__version__}, fla {F.version}; model built in "
          f"{time.time() - t0:.1f} s, {diffs[1]['fla']} parameters (ours {o['params']})", flush=True)
    for dd in diffs:
        print("  difference:", json.dumps(dd), flush=True)

    res = {
        "peer": "fla", "gpu": gpu, "torch": torch.__version__, "triton": triton.__version__, "fla": F.version,
        "fla_commit": fla_commit(os.path.dirname(pkg), args.fla_commit), "fla_path": args.fla,
        "model": {"config": o["config"], "class": "fla KDAForCausalLM with fla.layers.gdn2.GatedDeltaNet2 mixers",
                  "kda_config": {k: getattr(cfg, k) for k in ("hidden_size", "num_hidden_layers", "num_heads", "head_dim",
                                                             "expand_v", "num_v_heads", "intermediate_size", "vocab_size",
                                                             "conv_size", "use_short_conv", "allow_neg_eigval", "norm_eps",
                                                             "fuse_norm", "fuse_swiglu", "tie_word_embeddings")},
                  "dtype": "bfloat16", "params": diffs[1]["fla"]},
        "differences": diffs,
        "context_note": "a recurrent (GDN-2) layer's step costs the same at any position: the context is only "
                        "a label for this model (rows say \"context\": \"any\"); decode_model's contexts 1K..128K "
                        "all compare with the same peer row",
        "timing": {"steps": args.steps, "warmup": args.warmup, "prompt": args.prompt,
                   "step_us": "median wall time: ids upload + step + bf16 logits download to pinned host memory",
                   "step_us_device": "the same without the logits download"},
        "decode": [], "eager": [], "skipped": [],
    }

    def write():
        if not args.out:
            return
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(res, f, indent=1)
        os.replace(tmp, args.out)

    print(f"{'B':>5} {'mode':>8} {'step_us':>10} {'tok/s':>10} {'dev_us':>10} {'tok/s dev':>10} {'peak GB':>8}", flush=True)
    for B in batches:
        try:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            row_e, best = one_batch(torch, F, model, cfg, o, B, args)
            res["eager"].append(row_e)
            res["decode"].append(best)
            for r in ([row_e] if best is row_e else [row_e, best]):
                print(f"{B:>5} {r['mode']:>8} {r['step_us']:>10.1f} {r['tok_s']:>10.1f} {r['step_us_device']:>10.1f} "
                      f"{r['tok_s_device']:>10.1f} {r['peak_gb']:>8.2f}", flush=True)
            print("  " + json.dumps(best), flush=True)
        except torch.cuda.OutOfMemoryError as e:
            res["skipped"].append({"batch": B, "why": f"out of memory: {str(e).splitlines()[0]}"})
            print(f"B={B}: out of memory, skipped", flush=True)
        except Exception as e:
            traceback.print_exc()
            res["skipped"].append({"batch": B, "why": f"{type(e).__name__}: {e}"})
            print(f"B={B}: failed: {type(e).__name__}: {e}", flush=True)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        write()
    res["peak_gb"] = round(max([r.get("peak_gb", 0) for r in res["decode"]] or [0]), 2)
    write()
    if args.out:
        print(f"wrote {args.out}", flush=True)
    if not res["decode"]:
        die("no batch was timed (see the messages above)", 1)


if __name__ == "__main__":
    main()
