# The official trainer's products, one at a time, as torch makes them (issue 16): the other half of
# dev/cuda/gemm_train.cu's rows, in the same process conditions (the same shapes, 7 groups of 5 launches
# between two CUDA events, the median group, after a warm-up group).
#
# Why: the official's profile sums its products to 130.3 ms a gdn2_1.3B step at B = 3 on an H100
# (bench/results/h100-cand17/), ours to 145.0 ms, with the same FLOPs (13 weights a layer, forward, dX,
# dW). gemm_train's "gemmex" rows imitate torch's calls on the toolkit's cuBLAS and are not faster. So
# either torch's cuBLAS is another build, or its calls differ in something gemm_train does not imitate.
# This prints, per product: the time of torch's own call (F.linear forward, dY @ W, dY^T @ X in bf16,
# as autograd computes them), the kernel it ran (torch.profiler), and the weighted sum over a
# gdn2_1.3B step; and which libcublasLt the process maps, with its version. Run it twice, once as is
# and once with LD_PRELOAD naming the toolkit's libcublasLt.so.13 and libcublas.so.13: the same calls on
# the other cuBLAS (the first line says which was loaded).
#
#   python3 dev/cuda/torch_gemm.py [N tokens, default 16384] [rows whose name contains this]
import ctypes
import sys

import torch
import torch.nn.functional as F

N = int(sys.argv[1]) if len(sys.argv) > 1 else 16384
ONLY = sys.argv[2] if len(sys.argv) > 2 else None  # only the rows whose name contains this
if N <= 0:
    sys.exit("usage: torch_gemm.py [N tokens > 0] [rows whose name contains this]")
dev = "cuda"
torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = True  # torch's default, said aloud

# (what, out, in, calls a gdn2_1.3B step): gemm_train.cu's table
W = [("q k v b w", 2048, 2304, 5 * 18), ("o_proj", 2304, 2048, 18), ("f0 g0", 128, 2304, 2 * 18),
     ("f1 g1", 2048, 128, 2 * 18), ("w1 w2 6208", 6208, 2304, 2 * 18), ("w3 6208", 2304, 6208, 18),
     ("lm_head", 32000, 2304, 1)]


def loaded_cublaslt():
    a = torch.randn(64, 64, device=dev, dtype=torch.bfloat16)
    (a @ a).sum().item()
    paths = sorted({l.split()[-1] for l in open("/proc/self/maps") if "libcublasLt" in l})
    ver = None
    if paths:
        try:
            lib = ctypes.CDLL(paths[0])
            lib.cublasLtGetVersion.restype = ctypes.c_size_t
            ver = lib.cublasLtGetVersion()
        except OSError as e:
            ver = "(%s)" % e
    return paths, ver


def median_ms(fn):
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t = []
    for g in range(-1, 7):
        e0.record()
        for _ in range(5):
            fn()
        e1.record()
        e1.synchronize()
        if g >= 0:
            t.append(e0.elapsed_time(e1) / 5)
    return sorted(t)[3]


def kernel_of(fn):
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as p:
            fn()
            torch.cuda.synchronize()
    except Exception as e:  # the times stand without the names
        return "(profiler: %s)" % e
    names = [e.key for e in p.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    return " + ".join(n[:64] for n in names) or "?"


def main():
    paths, ver = loaded_cublaslt()
    print("torch %s (CUDA %s), %s; libcublasLt mapped: %s, cublasLtGetVersion %s" %
          (torch.__version__, torch.version.cuda, torch.cuda.get_device_name(), " ".join(paths) or "none", ver))
    print("N = %d tokens; per launch; row-major as torch sees them: fwd Y = X W^T, dX = dY W, dW = dY^T X (bf16)" % N)
    g = torch.Generator(device=dev).manual_seed(1)
    step = 0.0
    for what, out, inn, calls in W:
        if ONLY and ONLY not in what:
            continue
        X = (torch.rand(N, inn, device=dev, generator=g) - 0.5).mul_(0.1).bfloat16()
        Wt = (torch.rand(out, inn, device=dev, generator=g) - 0.5).mul_(0.1).bfloat16()
        dY = (torch.rand(N, out, device=dev, generator=g) - 0.5).mul_(0.1).bfloat16()
        grad = torch.zeros(out, inn, device=dev)
        cases = [("fwd", lambda: F.linear(X, Wt)), ("dX", lambda: dY @ Wt), ("dW", lambda: dY.t() @ X),
                 ("dW+add", lambda: grad.add_(dY.t() @ X))]
        for kind, fn in cases:
            fn()
            ms = median_ms(fn)
            if kind != "dW":
                step += calls * ms
            m, n, k = {"fwd": (N, out, inn), "dX": (N, inn, out)}.get(kind, (out, inn, N))
            print("%-10s %-6s %6d %6d %6d | %7.3f ms %5.0f TFLOP/s | %s" %
                  (what, kind, m, n, k, ms, 2.0 * m * n * k / ms / 1e9, kernel_of(fn)), flush=True)
        del X, Wt, dY, grad
        torch.cuda.empty_cache()
    print("gdn2_1.3B step, weighted by its calls (fwd + dX + dW with its fp32 add): %.1f ms" % step)


if __name__ == "__main__":
    main()
