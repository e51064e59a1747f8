"""The gdn2 Python package's CUDA tensor path on a GPU (python/gdn2/torch_ops.py over
include/gdn2_cuda.h). Plain script (no pytest): one line per check, "PASS ..." / "FAIL ..." /
"SKIP ...", then "N passed, N failed, N skipped"; exit status 1 when a check failed.

Without torch, without a CUDA device or without CUDA in torch it prints one
"SKIP (no CUDA device) ..." line and "0 passed, 0 failed, 1 skipped" (exit 0). A GPU that torch
sees with a libgdn2 built without CUDA is a FAIL (rebuild with `make CUDA=1`).

What is checked (bars: relative RMSE, sqrt(sum (x-ref)^2 / sum ref^2), against a float64 reference:
the package's CPU float64 path, gdn2_ref_fwd / gdn2_ref_bwd, itself checked against an independent
torch float64 recurrence below):
  - gdn2.chunk_gdn2 on CUDA bf16 and fp32 tensors, forward + autograd backward (dq dk dv dg db dw,
    dh0, dA_log, ddt_bias), with and without the gate in kernel (and lower_bound), initial state,
    final state (with an upstream dht), cu_seqlens (a CUDA tensor and a host list), GVA (HV > H),
    non-contiguous inputs, state_v_first, a side stream, disable_recompute=True (the
    keep_for_backward / reuse_forward reserve space). bf16 inputs: the reference runs on the same
    bf16-rounded q, k, v, b, w, do; bars as tests/test_cuda.c and fla: o, ht 5e-3; dq, dk, dv, dh0
    1e-2; dg, db, dw, dA_log, ddt_bias 2e-2. fp32: 1e-5 (o, ht) and 1e-4 (gradients).
  - the official chunk_gdn2 (chutesai/GatedDeltaNet-2 lit_gpt/gdn2_ops) and fla's chunk_gdn2
    (fla.ops.gdn2, when the fla copy has it: fla @4b02d15d has not) on the same bf16 inputs (cases
    with HV = H and no lower_bound: the official kernel has neither GVA nor lower_bound without
    safe_gate; of those, cases 0, 1 and 5 of CASES unless --peers-all), where importable from $GDN2_P4 (default .gpu/peers/p4 under the repository root):
    |gdn2 - ref| <= bar and |gdn2 - peer| <= bar + |peer - ref| (relative RMSE each, all printed);
    fla's chunk_kda against gdn2.chunk_kda the same way; the official fused_recurrent_gdn2 against
    T decode steps. A peer that raises is a SKIP with its traceback, not a FAIL.
  - fused_recurrent_gdn2 / chunk_kda / chunk_gated_delta_rule on CUDA against their references;
    decode_step on CUDA (fp32 and bf16 inputs, fp32 and bf16 state pools, slots with holes)
    against the CPU decode step, and T decode steps against chunk_gdn2's o and final state.
  - shape errors are raised on the host (ValueError) before any launch.

  PYTHONPATH=python python3 python/tests/test_cuda.py [-v] [--peers-fp32] [--peers-all] [--groups A,B]
(-v: seconds per group; --peers-fp32: the peer comparisons also on fp32 inputs, where the official
kernels use TF32; --peers-all: every eligible chunk case against the peers, not only cases 0, 1, 5 of
CASES (each shape is a Triton compile for them); GDN2_P4=none: no peers; --groups: only these of
reference, chunk, layouts, errors, other, decode — the others are counted as skipped — so that a run whose
peers compile on a fresh machine can be split over calls.)
The library: GDN2_LIBRARY, else the package's copy, else build/libgdn2.so."""
import os
import sys
import time
import traceback
import types
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, ".."))
import numpy as np  # noqa: E402

n_pass = n_fail = n_skip = 0
VERBOSE = "-v" in sys.argv
PEERS_FP32 = "--peers-fp32" in sys.argv  # also compare fp32 inputs with the peers (more Triton compiles)
# the chunk cases compared with the peers (indices into CASES): each new shape and flag set costs the
# peers a Triton compile and autotune of ~1-2 minutes on a fresh machine (a whole run timed out at
# 250 s on the H200 with every case); --peers-all compares every eligible case
PEER_CASES = None if "--peers-all" in sys.argv else (0, 1, 5)
GROUP_NAMES = ("reference", "chunk", "layouts", "errors", "other", "decode")
GROUPS = set(GROUP_NAMES)
if "--groups" in sys.argv:
    i = sys.argv.index("--groups")
    GROUPS = set(sys.argv[i + 1].split(",")) if i + 1 < len(sys.argv) else set()
    if not GROUPS or not GROUPS <= set(GROUP_NAMES):
        sys.exit("test_cuda.py: --groups takes a comma list of %s (got %r)"
                 % (", ".join(GROUP_NAMES), sys.argv[i + 1] if i + 1 < len(sys.argv) else ""))


def check(ok, msg):
    global n_pass, n_fail
    print("%s %s" % ("PASS" if ok else "FAIL", msg), flush=True)
    if ok:
        n_pass += 1
    else:
        n_fail += 1
    return ok


def skip(msg):
    global n_skip
    print("SKIP %s" % msg, flush=True)
    n_skip += 1


def finish():
    print("%d passed, %d failed, %d skipped" % (n_pass, n_fail, n_skip), flush=True)
    sys.exit(1 if n_fail else 0)


try:
    import torch
except Exception as e:  # noqa: BLE001
    torch = None
    TORCH_ERR = repr(e)
import gdn2  # noqa: E402  (after torch: see gdn2/_lib.py, _preload_torch)


def gate():
    """True when the GPU checks can run; else the one skip line (or a FAIL for a GPU machine with
    a libgdn2 built without CUDA)."""
    if torch is None:
        skip("(no CUDA device) torch is not importable (%s)" % TORCH_ERR)
        return False
    if not torch.cuda.is_available():
        skip("(no CUDA device) torch %s sees no CUDA device" % torch.__version__)
        return False
    if not gdn2.cuda_available():
        check(False, "libgdn2 at %s has no usable CUDA while torch sees %s (rebuild with make CUDA=1): %s"
              % (gdn2.library_path, torch.cuda.get_device_name(0), gdn2._lib.last_error()))
        return False
    print("note: %s, torch %s, libgdn2 %s at %s" % (torch.cuda.get_device_name(0), torch.__version__,
                                                    gdn2.version(), gdn2.library_path), flush=True)
    return True


DEV = os.environ.get("GDN2_TEST_DEVICE", "cuda")  # (cpu: a dry run of this script's own code)
F64 = torch.float64 if torch is not None else None
BARS_BF16 = dict(o=5e-3, ht=5e-3, dq=1e-2, dk=1e-2, dv=1e-2, dh0=1e-2, dg=2e-2, db=2e-2, dw=2e-2, dA_log=2e-2,
                 ddt_bias=2e-2, dbeta=2e-2)
BARS_F32 = {k: (1e-5 if k in ("o", "ht") else 1e-4) for k in BARS_BF16}
GRAD_OF = dict(q="dq", k="dk", v="dv", g="dg", b="db", w="dw", beta="dbeta", initial_state="dh0", A_log="dA_log",
               dt_bias="ddt_bias")


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def rel(x, ref):
    x, ref = x.detach().to(device="cpu", dtype=F64), ref.detach().to(device="cpu", dtype=F64)
    den = ref.pow(2).sum().sqrt().item()
    num = (x - ref).pow(2).sum().sqrt().item()
    if not np.isfinite(num):
        return float("inf")
    return num / den if den else num


def rnd(x, dt):
    """x as the reference sees it after a cast to dt (bf16 / fp16 rounding), in float64."""
    return x.to(dtype=dt).to(dtype=F64)


# ---------------------------------------------------------------------------- inputs
def make(B, T, H, HV, K, V, l2=False, gate=False, h0=False, dht=False, N=None, seed=0, kind="gdn2"):
    """Master inputs in float32 on the CPU (as tests/test_cuda.c's gen)."""
    gen = torch.Generator().manual_seed(seed)
    N = B if N is None else N

    def rn(*s, scale=1.0):
        return torch.randn(*s, generator=gen) * scale

    def ru(lo, hi, *s):
        return lo + (hi - lo) * torch.rand(*s, generator=gen)

    x = dict(q=rn(B, T, H, K), k=rn(B, T, H, K), v=rn(B, T, HV, V))
    if not l2:
        x["q"] /= K ** 0.5
        x["k"] /= K ** 0.5
    x["g"] = rn(B, T, H, K) if gate else ru(-1.0, -0.01, B, T, H, K)
    if kind == "gdn2":
        x["b"], x["w"] = ru(0, 1, B, T, H, K), ru(0, 1, B, T, HV, V)
    else:
        x["beta"] = ru(0, 1, B, T, H)
        if kind == "gdn":
            x["g"] = ru(-1.0, -0.01, B, T, H)
    if h0:
        x["initial_state"] = rn(N, HV, K, V, scale=0.3)
    if gate:
        x["A_log"] = ru(0, float(np.log(16.0)), H)
        x["dt_bias"] = rn(H * K, scale=0.5)
    up = dict(do=rn(B, T, HV, V), dht=rn(N, HV, K, V) if dht else None)
    return x, up


LOWP = ("q", "k", "v", "b", "w", "beta")  # the tensors that take the input dtype (bf16); the rest fp32


def leaves(x, dt, device, f64=False):
    out = {}
    for n, t in x.items():
        t = rnd(t, dt if n in LOWP else torch.float32) if f64 else t.to(dtype=dt if n in LOWP else torch.float32)
        out[n] = t.to(device=device).requires_grad_(True)
    return out


def run_op(fn, x, up, kw, dt, device, f64=False, out_dt=None):
    """(outputs, grads) of fn on leaves of x: outputs o (and ht), grads of every leaf, for the
    upstream do (cast to o's dtype) and dht."""
    X = leaves(x, dt, device, f64)
    want_ht = up["dht"] is not None or kw.get("output_final_state", False)
    o, ht = fn(**X, **dict(kw, output_final_state=want_ht))
    outs, gouts = [o], [rnd(up["do"], dt).to(dtype=o.dtype, device=device) if f64 else
                        up["do"].to(dtype=o.dtype, device=device)]
    res = dict(o=o.detach())
    if want_ht:
        res["ht"] = ht.detach()
        if up["dht"] is not None:
            outs.append(ht)
            gouts.append(up["dht"].to(dtype=ht.dtype, device=device))
    names = list(X)
    grads = torch.autograd.grad(outs, [X[n] for n in names], gouts, allow_unused=True)
    for n, gr in zip(names, grads):
        res[GRAD_OF[n]] = gr
    return res


def compare(tag, got, ref, bars, peer=None, peer_name=None):
    ok = True
    for name, r in ref.items():
        if name not in bars or r is None:
            continue
        x = got.get(name)
        if x is None:
            ok &= check(False, "%s %-8s missing (None) in gdn2's result" % (tag, name))
            continue
        e = rel(x, r)
        line = "%s %-8s rel_rmse %.3e (bar %.0e)" % (tag, name, e, bars[name])
        if peer is not None and peer.get(name) is not None:
            ep, d = rel(peer[name], r), rel(x, peer[name])
            line += "; %s %.3e, gdn2-%s %.3e (bar %.1e)" % (peer_name, ep, peer_name, d, bars[name] + ep)
            ok &= check(e <= bars[name] and d <= bars[name] + ep, line)
        else:
            ok &= check(e <= bars[name], line)
    return ok


def group(name, fn):
    """One of main's groups, or one SKIP when --groups leaves it out."""
    if name not in GROUPS:
        skip("group %s: not in --groups" % name)
        return
    guard(name, fn)


def guard(tag, fn, *a, **kw):
    """Runs one group of checks; an exception is one FAIL with the traceback."""
    t0 = time.time()
    try:
        fn(*a, **kw)
    except Exception:  # noqa: BLE001
        check(False, "%s raised:\n%s" % (tag, traceback.format_exc()))
    if VERBOSE:
        print("  (%s: %.1f s)" % (tag, time.time() - t0), flush=True)


# ---------------------------------------------------------------------------- peers
P4 = os.environ.get("GDN2_P4", os.path.join(REPO, ".gpu", "peers", "p4"))
PEERS = {}


def load_peers():
    """The official chunk_gdn2 and fla's chunk_gdn2 / chunk_kda from $GDN2_P4 (stub packages: the
    packages' __init__ files, which import HF models / lightning, are not run)."""
    if not os.path.isdir(P4):
        skip("(peer) GDN2_P4=%s is not a directory: no official / fla comparisons" % P4)
        return
    if "fla" not in sys.modules:
        fpkg = types.ModuleType("fla")
        fpkg.__path__ = [os.path.join(P4, "fla")]
        fpkg.__version__ = "0.5.1+4b02d15d"
        sys.modules["fla"] = fpkg
    if "lit_gpt" not in sys.modules:
        lpkg = types.ModuleType("lit_gpt")
        lpkg.__path__ = [os.path.join(P4, "official", "lit_gpt")]
        sys.modules["lit_gpt"] = lpkg
    for name, mod, attr in (("official", "lit_gpt.gdn2_ops.chunk_gdn2", "chunk_gdn2"),
                            ("official_recurrent", "lit_gpt.gdn2_ops.fused_recurrent_gdn2", "fused_recurrent_gdn2"),
                            ("fla", "fla.ops.gdn2", "chunk_gdn2"),
                            ("fla_kda", "fla.ops.kda", "chunk_kda")):
        try:
            m = __import__(mod, fromlist=[attr])
            PEERS[name] = getattr(m, attr)
            print("note: peer %s = %s.%s" % (name, mod, attr), flush=True)
        except Exception as e:  # noqa: BLE001
            skip("(peer) %s: %s.%s not importable from %s: %s" % (name, mod, attr, P4, repr(e)[:200]))


def peer_failed(what):
    """A peer that raises is reported (SKIP with its traceback), not counted against gdn2."""
    skip("(peer) %s raised:\n%s" % (what, traceback.format_exc()[-2500:]))


def peer_kw(kw):
    """gdn2.chunk_gdn2's keyword arguments as the official / fla chunk_gdn2 take them."""
    kw = dict(kw)
    kw.pop("state_v_first", None)
    kw.pop("disable_recompute", None)
    return kw


# ---------------------------------------------------------------------------- reference check
def naive_torch(q, k, v, g, b, w, initial_state=None, scale=None, l2=False):
    """Independent float64 recurrence (the README's formula), differentiable."""
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    G = HV // H
    scale = K ** -0.5 if scale is None else scale
    if l2:
        q = q / (q.pow(2).sum(-1, keepdim=True) + 1e-6).sqrt()
        k = k / (k.pow(2).sum(-1, keepdim=True) + 1e-6).sqrt()
    rep = (lambda t: t.repeat_interleave(G, dim=2)) if G > 1 else (lambda t: t)
    q, k, g, b = rep(q), rep(k), rep(g), rep(b)
    S = initial_state if initial_state is not None else q.new_zeros(B, HV, K, V)
    os_ = []
    for t in range(T):
        kt = k[:, t]
        S = g[:, t].exp().unsqueeze(-1) * S
        S = S - kt.unsqueeze(-1) * torch.einsum("bhk,bhkv->bhv", b[:, t] * kt, S).unsqueeze(-2) \
            + kt.unsqueeze(-1) * (w[:, t] * v[:, t]).unsqueeze(-2)
        os_.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    return torch.stack(os_, 1), S


def test_reference():
    """The CPU float64 path (the reference below) against the independent recurrence."""
    x, up = make(2, 70, 2, 4, 16, 24, l2=True, h0=True, dht=True, seed=1)
    kw = dict(use_qk_l2norm_in_kernel=True)
    ref = run_op(gdn2.chunk_gdn2, x, up, kw, F64, "cpu", f64=True)

    def nv(q, k, v, g, b, w, initial_state, use_qk_l2norm_in_kernel, output_final_state):
        return naive_torch(q, k, v, g, b, w, initial_state, l2=use_qk_l2norm_in_kernel)

    nai = run_op(nv, x, up, kw, F64, "cpu", f64=True)
    for name in ("o", "ht", "dq", "dk", "dv", "dg", "db", "dw", "dh0"):
        e = rel(ref[name], nai[name])
        check(e < 1e-10, "reference: CPU float64 chunk_gdn2 vs independent torch recurrence %-4s rel %.1e" % (name, e))


# ---------------------------------------------------------------------------- chunk_gdn2
CASES = [
    # name, (B, T, H, HV, K, V), l2, gate, lower_bound, cu_seqlens, h0, dht
    ("B2 T200 K=V=64 h0/dht", (2, 200, 2, 2, 64, 64), False, False, None, None, True, True),
    ("l2+gate T150 K=V=128 h0/dht", (1, 150, 2, 2, 128, 128), True, True, None, None, True, True),
    ("l2+gate lower_bound=-3 T100", (1, 100, 2, 2, 64, 64), True, True, -3.0, None, False, False),
    ("GVA H2 HV4 K64 V128 T130 h0/dht", (1, 130, 2, 4, 64, 128), True, False, None, None, True, True),
    ("varlen 0,37,37,170,300 h0/dht", (1, 300, 2, 2, 64, 64), True, False, None, [0, 37, 37, 170, 300], True, True),
    ("layer-like B2 T256 H4 K=V=128 l2", (2, 256, 4, 4, 128, 128), True, False, None, None, False, False),
    ("odd dims K=48 V=80 T65 h0/dht", (1, 65, 1, 1, 48, 80), True, False, None, None, True, True),
]


def chunk_case(case, dt, extra=None, cu_tensor=True):
    name, (B, T, H, HV, K, V), l2, gate, lb, cu, h0, dht = case
    extra = dict(extra or {})
    N = len(cu) - 1 if cu else B
    x, up = make(B, T, H, HV, K, V, l2=l2, gate=gate, h0=h0, dht=dht, N=N, seed=zlib.crc32(name.encode()) % 1000)
    kw = dict(use_qk_l2norm_in_kernel=l2, use_gate_in_kernel=gate)
    if lb is not None:
        kw["lower_bound"] = lb
    if cu is not None:
        kw["cu_seqlens"] = torch.tensor(cu, dtype=torch.long)
    ref = run_op(gdn2.chunk_gdn2, x, up, kw, dt, "cpu", f64=True)
    kwd = dict(kw, **extra)
    if cu is not None:
        kwd["cu_seqlens"] = torch.tensor(cu, dtype=torch.long, device=DEV) if cu_tensor else list(cu)
    got = run_op(gdn2.chunk_gdn2, x, up, kwd, dt, DEV)
    tag = "chunk_gdn2 %s %s%s" % ("bf16" if dt == torch.bfloat16 else "fp32", name,
                                  "".join(" %s=%s" % kv for kv in extra.items()))
    bars = BARS_BF16 if dt == torch.bfloat16 else BARS_F32
    # the peers: same-shape value heads only (the official kernel has no GVA), no lower_bound
    # (the official needs safe_gate with it), fp32 inputs: the official runs TF32 matmuls
    peer = None
    if (not extra and cu_tensor and H == HV and lb is None and (dt == torch.bfloat16 or PEERS_FP32)
            and (PEER_CASES is None or CASES.index(case) in PEER_CASES)):
        for pname in ("official", "fla"):
            if pname not in PEERS:
                continue
            try:  # (with the gate in kernel the official takes A_log / dt_bias through **kwargs)
                pr = run_op(PEERS[pname], x, up, peer_kw(kwd), dt, DEV)
            except Exception:  # noqa: BLE001
                peer_failed("%s: peer %s" % (tag, pname))
                continue
            compare(tag + " [vs %s]" % pname, got, ref, bars, pr, pname)
            peer = True
    if peer is None:
        compare(tag, got, ref, bars)
    return got


def test_chunk():
    for case in CASES:
        for dt in (torch.bfloat16, torch.float32):
            guard("chunk %s" % case[0], chunk_case, case, dt)
    # the reserve space (keep_for_backward / reuse_forward): against the reference, and equal to
    # the recomputing backward
    for case in (CASES[1], CASES[4], CASES[5]):
        for dt in (torch.bfloat16, torch.float32):
            def keep_case(case=case, dt=dt):
                a = chunk_case(case, dt)
                b = chunk_case(case, dt, dict(disable_recompute=True))
                # bit-equal, except the gradients reduced with atomics over chunks and heads (dg with
                # the gate in the kernel, dA_log, ddt_bias): their summation order differs between runs
                atomic = ("dg", "dA_log", "ddt_bias")
                for n in a:
                    if a[n] is None:
                        continue
                    e, bar = rel(b[n], a[n]), (1e-4 if n in atomic else 0.0)
                    check(e <= bar, "chunk_gdn2 %s %s: disable_recompute=True vs recompute, %s rel %.1e (bar %.0e)"
                          % ("bf16" if dt == torch.bfloat16 else "fp32", case[0], n, e, bar))
            guard("keep %s" % case[0], keep_case)
    guard("varlen host list", chunk_case, CASES[4], torch.bfloat16, None, False)


def test_layouts():
    """Non-contiguous inputs, state_v_first, a side stream, fp16 inputs (run in fp32)."""
    B, T, H, HV, K, V = 2, 130, 2, 2, 64, 64
    x, up = make(B, T, H, HV, K, V, l2=True, h0=True, dht=True, seed=7)
    kw = dict(use_qk_l2norm_in_kernel=True)
    ref = run_op(gdn2.chunk_gdn2, x, up, kw, torch.bfloat16, "cpu", f64=True)
    base = run_op(gdn2.chunk_gdn2, x, up, kw, torch.bfloat16, DEV)

    def strided(**a):  # every input a transposed copy's view: same values, other strides
        a = {n: (t.transpose(1, 2).contiguous().transpose(1, 2) if torch.is_tensor(t) and t.dim() == 4
                 and n != "initial_state" else t)
             for n, t in a.items()}
        return gdn2.chunk_gdn2(**a)

    got = run_op(strided, x, up, kw, torch.bfloat16, DEV)
    compare("chunk_gdn2 bf16 non-contiguous inputs", got, ref, BARS_BF16)

    def vfirst(initial_state=None, **a):
        o, ht = gdn2.chunk_gdn2(initial_state=initial_state.transpose(-1, -2), state_v_first=True, **a)
        return o, (None if ht is None else ht.transpose(-1, -2))

    got = run_op(vfirst, x, up, kw, torch.bfloat16, DEV)
    compare("chunk_gdn2 bf16 state_v_first", got, ref, BARS_BF16)

    if DEV == "cuda":
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            got = run_op(gdn2.chunk_gdn2, x, up, kw, torch.bfloat16, DEV)
        torch.cuda.current_stream().wait_stream(s)
        sync()
        worst = max(rel(got[n], base[n]) for n in base if base[n] is not None)
        check(worst <= 1e-6, "chunk_gdn2 bf16 on a side stream vs the default stream: worst rel %.1e" % worst)

    ref32 = run_op(gdn2.chunk_gdn2, x, up, kw, torch.float16, "cpu", f64=True)
    got = run_op(gdn2.chunk_gdn2, x, up, kw, torch.float16, DEV)
    ok = got["o"].dtype == torch.float16 and got["dq"].dtype == torch.float16 and got["dg"].dtype == torch.float32
    check(ok, "chunk_gdn2 fp16 inputs: o, dq fp16 and dg fp32 (got %s, %s, %s)" % (got["o"].dtype, got["dq"].dtype,
                                                                                 got["dg"].dtype))
    compare("chunk_gdn2 fp16 inputs (fp32 kernels)", got, ref32, BARS_BF16)

    # autocast (the layer's setting): bf16 activations in, fp32 g; no error, o bf16
    with torch.autocast(DEV, dtype=torch.bfloat16):
        X = leaves(x, torch.bfloat16, DEV)
        o, ht = gdn2.chunk_gdn2(**X, **kw, output_final_state=True)
        (o.float().sum() + ht.sum()).backward()
    check(o.dtype == torch.bfloat16 and ht.dtype == torch.float32 and X["g"].grad is not None
          and X["g"].grad.dtype == torch.float32, "chunk_gdn2 under autocast(bf16): o %s, ht %s, g.grad %s"
          % (o.dtype, ht.dtype, None if X["g"].grad is None else X["g"].grad.dtype))


def test_errors():
    x, up = make(1, 64, 2, 2, 64, 64, seed=3)
    X = {n: t.to(DEV) for n, t in x.items()}

    def err(exc, **over):
        a = dict(X, **over)
        try:
            gdn2.chunk_gdn2(**a)
        except exc as e:
            return str(e)
        except Exception as e:  # noqa: BLE001
            return "wrong exception %r" % e
        return None

    m = err(ValueError, b=X["b"][..., :32].contiguous())
    check(m is not None and "b has shape" in m, "CUDA: b of the wrong shape is a ValueError on the host: %s" % m)
    m = err(ValueError, initial_state=torch.zeros(2, 2, 64, 64, device=DEV))
    check(m is not None and "initial_state" in m, "CUDA: initial_state of the wrong shape: %s" % m)
    m = err(ValueError, scale=0.0)
    check(m is not None and "scale" in m, "CUDA: scale = 0 refused: %s" % m)
    m = err(ValueError, use_gate_in_kernel=True, A_log=torch.zeros(3, device=DEV))
    check(m is not None and "A_log" in m, "CUDA: A_log of the wrong size: %s" % m)
    m = err(ValueError, cu_seqlens=torch.tensor([0, 10, 50], device=DEV))
    check(m is not None and "cu_seqlens" in m.lower(), "CUDA: cu_seqlens not ending at T refused: %s" % m)
    m = err(ValueError, k=X["k"].cpu())
    if DEV == "cuda":
        check(m is not None and "cpu" in m, "CUDA: k on the CPU refused: %s" % m)
    sync()


# ---------------------------------------------------------------------------- other entry points
def test_other_forms():
    for dt in (torch.bfloat16, torch.float32):
        bars = BARS_BF16 if dt == torch.bfloat16 else BARS_F32
        tn = "bf16" if dt == torch.bfloat16 else "fp32"
        x, up = make(1, 150, 2, 2, 64, 64, l2=True, gate=True, h0=True, dht=True, seed=11)
        kw = dict(use_qk_l2norm_in_kernel=True, use_gate_in_kernel=True)
        ref = run_op(gdn2.chunk_gdn2, x, up, kw, dt, "cpu", f64=True)
        got = run_op(gdn2.fused_recurrent_gdn2, x, up, kw, dt, DEV)
        compare("fused_recurrent_gdn2 %s l2+gate h0/dht" % tn, got, ref, bars)

        x, up = make(2, 130, 2, 2, 64, 64, l2=True, h0=True, dht=True, seed=12, kind="kda")
        kw = dict(use_qk_l2norm_in_kernel=True)
        ref = run_op(gdn2.chunk_kda, x, up, kw, dt, "cpu", f64=True)
        got = run_op(gdn2.chunk_kda, x, up, kw, dt, DEV)
        pr = None
        if "fla_kda" in PEERS and (dt == torch.bfloat16 or PEERS_FP32):
            try:
                pr = run_op(PEERS["fla_kda"], x, up, kw, dt, DEV)
            except Exception:  # noqa: BLE001
                peer_failed("fla chunk_kda")
        compare("chunk_kda %s l2 h0/dht" % tn + (" [vs fla]" if pr else ""), got, ref, bars, pr, "fla")

        x, up = make(2, 130, 2, 2, 64, 64, l2=True, h0=True, dht=True, seed=13, kind="gdn")
        ref = run_op(gdn2.chunk_gated_delta_rule, x, up, kw, dt, "cpu", f64=True)
        got = run_op(gdn2.chunk_gated_delta_rule, x, up, kw, dt, DEV)
        compare("chunk_gated_delta_rule %s l2 h0/dht" % tn, got, ref, bars)


def test_decode():
    n, H, HV, K, V, n_slots = 4, 2, 4, 64, 64, 6
    gen = torch.Generator().manual_seed(5)
    q, k = torch.randn(2, n, H, K, generator=gen)
    v = torch.randn(n, HV, V, generator=gen)
    g = torch.randn(n, H, K, generator=gen)
    b, w = torch.rand(n, H, K, generator=gen), torch.rand(n, HV, V, generator=gen)
    A_log, dt_bias = torch.rand(H, generator=gen) * 2.7, torch.randn(H * K, generator=gen) * 0.5
    pool0 = torch.randn(n_slots, HV, K, V, generator=gen) * 0.3
    slots = [3, -1, 0, 5]
    kw = dict(use_qk_l2norm_in_kernel=True, use_gate_in_kernel=True)
    for dt in (torch.float32, torch.bfloat16):
        # the CPU step sees the values the GPU reads: bf16-rounded q, k, v, b, w
        cq, ck, cv, cb, cw = (t.to(dt).float() for t in (q, k, v, b, w))
        for sdt in (torch.float32, torch.bfloat16):
            pc = pool0.to(sdt).clone()
            oc = gdn2.decode_step(cq, ck, cv, g, cb, cw, pc, slots, A_log, dt_bias, **kw)
            pg = pool0.to(sdt).to(DEV)
            og = gdn2.decode_step(*(t.to(dtype=dt, device=DEV) for t in (q, k, v)), g.to(DEV), b.to(dt).to(DEV),
                                  w.to(dt).to(DEV), pg, torch.tensor(slots, device=DEV, dtype=torch.int32),
                                  A_log.to(DEV), dt_bias.to(DEV), **kw)
            sync()
            eo, es = rel(og, oc), rel(pg, pc)
            bo = 5e-3 if dt == torch.bfloat16 else 1e-5
            bs = 1e-3 if sdt == torch.bfloat16 else 1e-5
            ok = og.dtype == dt and eo <= bo and es <= bs and bool((og[1] == 0).all())
            check(ok, "decode_step CUDA %s inputs, %s pool, slots %s: vs CPU o rel %.1e (bar %.0e), pool %.1e "
                  "(bar %.0e), skipped row zero" % ("bf16" if dt == torch.bfloat16 else "fp32",
                                                    "bf16" if sdt == torch.bfloat16 else "fp32", slots, eo, bo, es, bs))
    # slots as a host list out of range: refused on the host
    try:
        gdn2.decode_step(*(t.to(DEV) for t in (q[:1], k[:1], v[:1], g[:1], b[:1], w[:1])), pool0.to(DEV), [n_slots])
        m = None
    except ValueError as e:
        m = str(e)
    check(m is not None and "out of range" in m, "decode_step CUDA: a host slot out of range refused: %s" % m)

    # T decode steps == chunk_gdn2's o and final state (fp32)
    B, T = 2, 40
    x, _ = make(B, T, H, HV, K, V, l2=True, gate=True, h0=True, seed=9)
    X = {nm: t.to(DEV) for nm, t in x.items()}
    o_c, ht_c = gdn2.chunk_gdn2(**X, **kw, output_final_state=True)
    pool = X["initial_state"].clone().contiguous()
    os_ = []
    for t in range(T):
        os_.append(gdn2.decode_step(X["q"][:, t], X["k"][:, t], X["v"][:, t], X["g"][:, t], X["b"][:, t],
                                    X["w"][:, t], pool, list(range(B)), X["A_log"], X["dt_bias"], **kw))
    o_d = torch.stack(os_, 1)
    eo, es = rel(o_d, o_c), rel(pool, ht_c)
    check(eo < 1e-4 and es < 1e-4, "decode_step CUDA x %d tokens vs chunk_gdn2 CUDA fp32: o rel %.1e, state %.1e"
          % (T, eo, es))
    if "official_recurrent" in PEERS:
        try:
            Xr = {nm: (t.repeat_interleave(HV // H, dim=2) if nm in ("q", "k", "g", "b") else t)
                  for nm, t in X.items() if nm not in ("A_log", "dt_bias")}
            dtb = X["dt_bias"].view(H, K).repeat_interleave(HV // H, 0).reshape(-1)
            o_o, ht_o = PEERS["official_recurrent"](**Xr, A_log=X["A_log"].repeat_interleave(HV // H), dt_bias=dtb,
                                                    output_final_state=True, **kw)
            eo, es = rel(o_d, o_o), rel(pool, ht_o)
            check(eo < 1e-3 and es < 1e-3, "decode_step CUDA x %d tokens vs the official fused_recurrent_gdn2 "
                  "(fp32, key heads repeated): o rel %.1e, state %.1e (bar 1e-3)" % (T, eo, es))
        except Exception:  # noqa: BLE001
            peer_failed("official fused_recurrent_gdn2")


def main():
    t0 = time.time()
    if DEV == "cuda" and not gate():
        finish()
    load_peers()
    group("reference", test_reference)
    group("chunk", test_chunk)
    group("layouts", test_layouts)
    group("errors", test_errors)
    group("other", test_other_forms)
    group("decode", test_decode)
    print("note: %.1f s" % (time.time() - t0), flush=True)
    finish()


if __name__ == "__main__":
    main()
