"""torch autograd functions over the gdn2 C library.

CPU tensors: the numpy core (gdn2/_core.py) on views of the tensors; float64 runs the float64
reference forward and its exact backward (so torch.autograd.gradcheck applies), other dtypes the
fp32 chunk / recurrent kernels, results cast back to the input dtypes.

CUDA tensors (GPU-UNTESTED: written against include/gdn2_cuda.h, never run on a device here):
the device-pointer API on torch's current stream, q, k, v, b, w (and o and their gradients) in
bf16 when q is bf16, else fp32; g, states, A_log, dt_bias in fp32. KDA / GDN on CUDA expand beta
(and the scalar decay) with torch ops and run the GDN-2 kernels; the recurrent form on CUDA runs
the chunk kernels (same function)."""
import ctypes

import numpy as np
import torch

from . import _core
from . import _lib as L


def _np(t, dt):
    tdt = torch.float64 if dt == np.float64 else torch.float32
    return None if t is None else t.detach().to(dtype=tdt).contiguous().numpy()


def _cpu_problem(meta, q, k, v, g, b, w, beta, h0, A_log, dt_bias):
    kind, impl, scale, l2, gate, lb, cu = meta
    f64 = q.dtype == torch.float64
    dt = np.float64 if f64 else np.float32
    return _core.Problem(kind, _np(q, dt), _np(k, dt), _np(v, dt), _np(g, dt), b=_np(b, dt), w=_np(w, dt),
                         beta=_np(beta, dt), h0=_np(h0, dt), A_log=_np(A_log, dt), dt_bias=_np(dt_bias, dt),
                         scale=scale, qk_l2norm=l2, gate_in_kernel=gate, lower_bound=lb, cu_seqlens=cu, f64=f64)


# ---- CUDA (GPU-untested) ----------------------------------------------------------------------
def _addr(t):
    return None if t is None else t.data_ptr()


def _cuda_setup(meta, q, k, v, g, b, w, h0, A_log, dt_bias):
    kind, impl, scale, l2, gate, lb, cu = meta
    if kind != "gdn2":
        raise AssertionError("gdn2: internal: CUDA runs the expanded GDN-2 form")
    if not L.cuda_available():
        raise L.Gdn2Unsupported(L.GDN2_ERR_UNSUPPORTED, "gdn2: CUDA tensors need a libgdn2 built with CUDA and a "
                                "device: " + L.last_error())
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    bf = q.dtype == torch.bfloat16
    cdt = torch.bfloat16 if bf else torch.float32
    x = {n: t.detach().to(dtype=cdt).contiguous() for n, t in (("q", q), ("k", k), ("v", v), ("b", b), ("w", w))}
    x["g"] = g.detach().to(dtype=torch.float32).contiguous()
    N = B if cu is None else len(cu) - 1
    x["h0"] = None if h0 is None else h0.detach().to(dtype=torch.float32).contiguous()
    if gate:  # the device API needs both: absent = zero
        x["A_log"] = (torch.zeros(H, device=q.device) if A_log is None
                      else A_log.detach().to(dtype=torch.float32).reshape(-1).contiguous())
        x["dt_bias"] = (torch.zeros(H * K, device=q.device) if dt_bias is None
                        else dt_bias.detach().to(dtype=torch.float32).reshape(-1).contiguous())
    else:
        x["A_log"] = x["dt_bias"] = None
    dims = L.Dims(B, T, H, HV, K, V)
    opts = L.Opts()
    opts.scale = 0.0 if scale is None else float(scale)
    opts.qk_l2norm, opts.gate_in_kernel = int(bool(l2)), int(bool(gate))
    opts.lower_bound = 0.0 if lb is None else float(lb)
    cu_arr = None
    if cu is not None:  # a HOST array (include/gdn2_cuda.h)
        cu_arr = np.ascontiguousarray(cu, dtype=np.int64)
        opts.cu_seqlens, opts.n_seqs = cu_arr.ctypes.data, cu_arr.size - 1
    a = L.CudaFwdArgs()
    a.dtype = L.GDN2_CUDA_BF16 if bf else L.GDN2_CUDA_F32
    for n in ("q", "k", "v", "b", "w", "g", "h0", "A_log", "dt_bias"):
        setattr(a, n, _addr(x[n]))
    return dims, opts, a, x, cdt, N, cu_arr


def _cuda_fwd(meta, q, k, v, g, b, w, h0, A_log, dt_bias):
    dims, opts, a, x, cdt, N, cu_arr = _cuda_setup(meta, q, k, v, g, b, w, h0, A_log, dt_bias)
    o = torch.empty(v.shape, dtype=cdt, device=q.device)
    ht = torch.empty((N, dims.HV, dims.K, dims.V), dtype=torch.float32, device=q.device)
    a.o, a.ht = _addr(o), _addr(ht)
    with torch.cuda.device(q.device):
        stream = torch.cuda.current_stream(q.device).cuda_stream
        L.call("gdn2_cuda_chunk_fwd", ctypes.byref(dims), ctypes.byref(opts), ctypes.byref(a), ctypes.c_void_p(stream))
    return o, ht


def _cuda_bwd(meta, q, k, v, g, b, w, h0, A_log, dt_bias, do, dht):
    dims, opts, a, x, cdt, N, cu_arr = _cuda_setup(meta, q, k, v, g, b, w, h0, A_log, dt_bias)
    dev = q.device
    do_c = do.detach().to(dtype=cdt).contiguous()
    dht_c = None if dht is None else dht.detach().to(dtype=torch.float32).contiguous()
    out = {n: torch.empty(x[n].shape, dtype=cdt, device=dev) for n in ("q", "k", "v", "b", "w")}
    dg = torch.empty(x["g"].shape, dtype=torch.float32, device=dev)
    dh0 = None if h0 is None else torch.empty(x["h0"].shape, dtype=torch.float32, device=dev)
    gate = opts.gate_in_kernel
    dA = torch.empty(dims.H, dtype=torch.float32, device=dev) if gate else None
    ddt = torch.empty(dims.H * dims.K, dtype=torch.float32, device=dev) if gate else None
    gr = L.CudaBwdArgs()
    gr.d_o, gr.dht = _addr(do_c), _addr(dht_c)
    gr.dq, gr.dk, gr.dv, gr.db, gr.dw = (_addr(out[n]) for n in ("q", "k", "v", "b", "w"))
    gr.dg, gr.dh0, gr.dA_log, gr.ddt_bias = _addr(dg), _addr(dh0), _addr(dA), _addr(ddt)
    with torch.cuda.device(dev):
        stream = torch.cuda.current_stream(dev).cuda_stream
        L.call("gdn2_cuda_chunk_bwd", ctypes.byref(dims), ctypes.byref(opts), ctypes.byref(a), ctypes.byref(gr),
               ctypes.c_void_p(stream))
    return _core.Grads(out["q"], out["k"], out["v"], dg, out["b"], out["w"], dA, ddt, dh0)


# ---- the autograd function --------------------------------------------------------------------
class _Fn(torch.autograd.Function):
    """(o, ht) = op(q, k, v, g, b, w, beta, h0, A_log, dt_bias) for meta = (kind, impl, scale,
    qk_l2norm, gate_in_kernel, lower_bound, cu_seqlens as a host numpy array or None)."""

    @staticmethod
    def forward(ctx, meta, q, k, v, g, b, w, beta, h0, A_log, dt_bias):
        ctx.meta = meta
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(q, k, v, g, b, w, beta, h0, A_log, dt_bias)
        if q.is_cuda:
            o, ht = _cuda_fwd(meta, q, k, v, g, b, w, h0, A_log, dt_bias)
        else:
            o, ht = _cpu_problem(meta, q, k, v, g, b, w, beta, h0, A_log, dt_bias).forward(meta[1], want_ht=True)
            o, ht = torch.from_numpy(o), torch.from_numpy(ht)
        return o.to(dtype=q.dtype), ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, g, b, w, beta, h0, A_log, dt_bias = ctx.saved_tensors
        meta = ctx.meta
        if do is None:
            do = torch.zeros(v.shape, dtype=q.dtype, device=q.device)
        if q.is_cuda:
            gr = _cuda_bwd(meta, q, k, v, g, b, w, h0, A_log, dt_bias, do, dht)
        else:
            f64 = q.dtype == torch.float64
            dt = np.float64 if f64 else np.float32
            p = _cpu_problem(meta, q, k, v, g, b, w, beta, h0, A_log, dt_bias)
            gr = p.backward(_np(do, dt), _np(dht, dt))
            gr = _core.Grads(*(None if x is None else torch.from_numpy(x) for x in gr))

        def like(x, ref):
            return None if x is None or ref is None else x.reshape(ref.shape).to(dtype=ref.dtype)

        if meta[0] == "gdn2":
            db, dw, dbeta = like(gr.db, b), like(gr.dw, w), None
        else:
            db = dw = None
            dbeta = like(gr.db, beta)
        return (None, like(gr.dq, q), like(gr.dk, k), like(gr.dv, v), like(gr.dg, g), db, dw, dbeta,
                like(gr.dh0, h0), like(gr.dA_log, A_log), like(gr.ddt_bias, dt_bias))


def run(kind, impl, q, k, v, g, b, w, beta, scale, initial_state, output_final_state, l2, gate, A_log, dt_bias,
        lower_bound, cu_seqlens, state_v_first):
    cu = None
    if cu_seqlens is not None:
        cu = (cu_seqlens.detach().cpu().numpy() if torch.is_tensor(cu_seqlens) else np.asarray(cu_seqlens))
        cu = np.ascontiguousarray(cu, dtype=np.int64)
        if cu.ndim != 1 or cu.size < 2:
            raise ValueError("gdn2: cu_seqlens must be 1-D [N+1]")
        if q.shape[0] != 1:
            raise ValueError("gdn2: the batch size is expected to be 1 rather than %d when using cu_seqlens" % q.shape[0])
    if q.dim() != 4 or v.dim() != 4:
        raise ValueError("gdn2: q and v must be [B,T,H,K] and [B,T,HV,V]")
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    if HV % H:
        raise ValueError("gdn2: the value heads HV=%d must be a multiple of the key heads H=%d" % (HV, H))
    for name, t in (("k", k), ("g", g), ("b", b), ("w", w), ("beta", beta), ("initial_state", initial_state),
                    ("A_log", A_log), ("dt_bias", dt_bias)):
        if t is not None and t.device != q.device:
            raise ValueError("gdn2: %s is on %s, q on %s" % (name, t.device, q.device))
    if not gate:
        A_log = dt_bias = None
    h0 = initial_state
    if h0 is not None and state_v_first:
        h0 = h0.transpose(-1, -2)
    if q.is_cuda and kind != "gdn2":  # expand beta (and the scalar decay): autograd folds the gradients back
        G = HV // H
        b = beta.unsqueeze(-1).expand(B, T, H, K)
        w = beta.repeat_interleave(G, dim=2).unsqueeze(-1).expand(B, T, HV, V)
        if kind == "gdn":
            g = g.unsqueeze(-1).expand(B, T, H, K)
        kind, beta = "gdn2", None
    if q.is_cuda and impl == "recurrent":
        impl = "chunk"
    meta = (kind, impl, scale, bool(l2), bool(gate), lower_bound, cu)
    o, ht = _Fn.apply(meta, q, k, v, g, b, w, beta, h0, A_log, dt_bias)
    if not output_final_state:
        return o, None
    if state_v_first:
        ht = ht.transpose(-1, -2).contiguous()
    return o, ht


def decode_step(q, k, v, g, b, w, state_pool, slots, A_log, dt_bias, scale, l2, gate, lower_bound):
    if state_pool.dtype not in (torch.float32, torch.bfloat16) or not state_pool.is_contiguous():
        raise ValueError("gdn2: state_pool must be a contiguous float32 or bfloat16 tensor (updated in place)")
    if not gate:
        A_log = dt_bias = None
    if not q.is_cuda:
        if state_pool.is_cuda:
            raise ValueError("gdn2: state_pool is on %s, q on the CPU" % state_pool.device)
        pool = (state_pool.numpy() if state_pool.dtype == torch.float32
                else state_pool.view(torch.int16).numpy().view(np.uint16))
        f = np.float32
        o = _core.decode_step_np(_np(q, f), _np(k, f), _np(v, f), _np(g, f), _np(b, f), _np(w, f), pool,
                                 np.asarray(slots.cpu() if torch.is_tensor(slots) else slots, dtype=np.int32),
                                 _np(A_log, f), _np(dt_bias, f), scale, l2, gate, lower_bound)
        return torch.from_numpy(o).to(dtype=q.dtype)
    # CUDA (GPU-untested): gdn2_cuda_recurrent_fwd with T = 1 on the current stream
    if not L.cuda_available():
        raise L.Gdn2Unsupported(L.GDN2_ERR_UNSUPPORTED, "gdn2: CUDA tensors need a libgdn2 built with CUDA and a "
                                "device: " + L.last_error())
    n, H, K = q.shape
    HV, V = v.shape[1], v.shape[2]
    if tuple(state_pool.shape[1:]) != (HV, K, V) or state_pool.dim() != 4 or not state_pool.is_cuda:
        raise ValueError("gdn2: state_pool must be a CUDA tensor [n_slots, HV=%d, K=%d, V=%d], got %s"
                         % (HV, K, V, tuple(state_pool.shape)))
    bf = q.dtype == torch.bfloat16
    cdt = torch.bfloat16 if bf else torch.float32
    x = {nm: t.detach().to(dtype=cdt).contiguous() for nm, t in (("q", q), ("k", k), ("v", v), ("b", b), ("w", w))}
    for nm, t, s in (("q", x["q"], (n, H, K)), ("k", x["k"], (n, H, K)), ("b", x["b"], (n, H, K)),
                     ("v", x["v"], (n, HV, V)), ("w", x["w"], (n, HV, V)), ("g", g, (n, H, K))):
        if tuple(t.shape) != s:
            raise ValueError("gdn2: %s has shape %s, expected %s" % (nm, tuple(t.shape), s))
    gg = g.detach().to(dtype=torch.float32).contiguous()
    sl = torch.as_tensor(slots, device=q.device).to(dtype=torch.int32).contiguous()
    if tuple(sl.shape) != (n,):
        raise ValueError("gdn2: slots must be [n=%d]" % n)
    if gate:
        A_log = torch.zeros(H, device=q.device) if A_log is None else A_log.detach().float().reshape(-1).contiguous()
        dt_bias = (torch.zeros(H * K, device=q.device) if dt_bias is None
                   else dt_bias.detach().float().reshape(-1).contiguous())
    o = torch.empty((n, HV, V), dtype=cdt, device=q.device)
    dims = L.Dims(n, 1, H, HV, K, V)
    opts = L.Opts()
    opts.scale = 0.0 if scale is None else float(scale)
    opts.qk_l2norm, opts.gate_in_kernel = int(bool(l2)), int(bool(gate))
    opts.lower_bound = 0.0 if lower_bound is None else float(lower_bound)
    a = L.CudaRecurrentArgs()
    a.dtype = L.GDN2_CUDA_BF16 if bf else L.GDN2_CUDA_F32
    a.q, a.k, a.v, a.b, a.w = (_addr(x[nm]) for nm in ("q", "k", "v", "b", "w"))
    a.g, a.A_log, a.dt_bias, a.o = _addr(gg), _addr(A_log), _addr(dt_bias), _addr(o)
    a.state_pool, a.n_slots, a.slots = _addr(state_pool), state_pool.shape[0], _addr(sl)
    a.state_dtype = L.GDN2_CUDA_BF16 if state_pool.dtype == torch.bfloat16 else L.GDN2_CUDA_F32
    with torch.cuda.device(q.device):
        stream = torch.cuda.current_stream(q.device).cuda_stream
        L.call("gdn2_cuda_recurrent_fwd", ctypes.byref(dims), ctypes.byref(opts), ctypes.byref(a),
               ctypes.c_void_p(stream))
    return o.to(dtype=q.dtype)
