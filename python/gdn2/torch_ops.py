"""torch autograd functions over the gdn2 C library.

CPU tensors: the numpy core (gdn2/_core.py) on views of the tensors; float64 runs the float64
reference forward and its exact backward (so torch.autograd.gradcheck applies), other dtypes the
fp32 chunk / recurrent kernels, results cast back to the input dtypes.

CUDA tensors: the device-pointer API (include/gdn2_cuda.h) on torch's current stream of q's
device: q, k, v, b, w (and o and their gradients) in bf16 when q is bf16, else fp32 (inputs of
other dtypes are converted; outputs and gradients come back in the dtypes of the inputs); g, states,
A_log, dt_bias in fp32; cu_seqlens read on the host (a CUDA tensor is copied back: one
synchronisation); the scratch is a torch tensor (torch's allocator and memory statistics see it).
By default the backward recomputes the forward's intermediates (as fla's default); with
disable_recompute=True (fla's name; or GDN2_CUDA_KEEP=1 in the environment) the forward keeps them
in its workspace (keep_for_backward, held by the autograd graph until the backward) and the backward
reuses them; on the CPU the same option runs the fp32 GDN-2 chunk kernels' saved pair
(gdn2_chunk_fwd_save / gdn2_chunk_bwd_saved; float64 and the KDA / GDN entry points recompute). KDA / GDN on CUDA expand beta (and the scalar decay) with torch ops and run the GDN-2
kernels; the recurrent form (fused_recurrent_*) on CUDA runs the chunk kernels (same function);
decode_step on CUDA runs gdn2_cuda_recurrent_fwd (one token, a state pool with slots). Shapes are
checked on the host before any launch (the kernels trust their pointers); values are not (NaN /
inf in give NaN / inf out, as fla)."""
import ctypes

import numpy as np
import torch

from . import _core
from . import _lib as L


def _np(t, dt):
    tdt = torch.float64 if dt == np.float64 else torch.float32
    return None if t is None else t.detach().to(dtype=tdt).contiguous().numpy()


def _cpu_problem(meta, q, k, v, g, b, w, beta, h0, A_log, dt_bias):
    kind, impl, scale, l2, gate, lb, cu = meta[:7]
    f64 = q.dtype == torch.float64
    dt = np.float64 if f64 else np.float32
    return _core.Problem(kind, _np(q, dt), _np(k, dt), _np(v, dt), _np(g, dt), b=_np(b, dt), w=_np(w, dt),
                         beta=_np(beta, dt), h0=_np(h0, dt), A_log=_np(A_log, dt), dt_bias=_np(dt_bias, dt),
                         scale=scale, qk_l2norm=l2, gate_in_kernel=gate, lower_bound=lb, cu_seqlens=cu, f64=f64)


# ---- CUDA -------------------------------------------------------------------------------------
# The device-pointer API of include/gdn2_cuda.h: q, k, v, b, w, o and their gradients in bf16 (q
# bf16) or fp32 (any other q dtype); g, h0, ht, A_log, dt_bias and their gradients fp32; every
# tensor C-contiguous in the layouts of include/gdn2.h; cu_seqlens a HOST int64 array; the work
# queued on torch's current stream of q's device; the scratch (opts->workspace) a torch tensor, so
# that torch's caching allocator and its memory statistics see it.
def _addr(t):
    return None if t is None else t.data_ptr()


def _need_cuda():
    if not L.cuda_available():
        raise L.Gdn2Unsupported(L.GDN2_ERR_UNSUPPORTED, "gdn2: CUDA tensors need a libgdn2 built with CUDA and a "
                                "device: " + L.last_error())


def _stream(dev):
    return ctypes.c_void_p(torch.cuda.current_stream(dev).cuda_stream)


def _expect(t, name, shape):
    if t is not None and tuple(t.shape) != tuple(shape):
        raise ValueError("gdn2: %s has shape %s, expected %s" % (name, tuple(t.shape), tuple(shape)))


def _flat(t, name, n):
    """A_log / dt_bias as a contiguous fp32 vector of n elements (checked: the kernels read n)."""
    t = t.detach().to(dtype=torch.float32).reshape(-1).contiguous()
    if t.numel() != n:
        raise ValueError("gdn2: %s has %d elements, expected %d" % (name, t.numel(), n))
    return t


def _al16(t):
    """t, or a copy when its address is not 16-byte aligned (the bf16 fast kernels and the
    keep_for_backward rule want aligned outputs and upstream gradients)."""
    return t if t is None or t.data_ptr() % 16 == 0 else t.clone()


def _ws(dims, opts, a, gr, dev):
    """A torch-allocated device workspace for the call with args a (and gr: the backward), of the size
    that call needs (gdn2_cuda_chunk_call_workspace_size), pointed to by opts (kept alive by the caller)."""
    n = int(L.lib.gdn2_cuda_chunk_call_workspace_size(ctypes.byref(dims), ctypes.byref(opts), ctypes.byref(a),
                                                      None if gr is None else ctypes.byref(gr)))
    if n == 0:
        L.check(L.GDN2_ERR_ARG, "gdn2_cuda_chunk_call_workspace_size")
    ws = torch.empty(n, dtype=torch.uint8, device=dev)
    opts.workspace, opts.workspace_size = ws.data_ptr(), n
    return ws


class _CudaCall:
    """One chunk call's checked, converted inputs and its C structs (gdn2_dims, gdn2_opts,
    gdn2_cuda_fwd_args). The converted tensors x are referenced here: the C structs hold their
    addresses only."""

    def __init__(self, meta, q, k, v, g, b, w, h0, A_log, dt_bias):
        kind, impl, scale, l2, gate, lb, cu = meta[:7]
        if kind != "gdn2":
            raise AssertionError("gdn2: internal: CUDA runs the expanded GDN-2 form")
        _need_cuda()
        B, T, H, K = q.shape
        if tuple(v.shape[:2]) != (B, T):
            raise ValueError("gdn2: v has shape %s, expected [B=%d, T=%d, HV, V]" % (tuple(v.shape), B, T))
        HV, V = v.shape[2], v.shape[3]
        N = B if cu is None else len(cu) - 1
        for t, name, shape in ((k, "k", (B, T, H, K)), (g, "g", (B, T, H, K)), (b, "b", (B, T, H, K)),
                               (w, "w", (B, T, HV, V)), (h0, "initial_state", (N, HV, K, V))):
            _expect(t, name, shape)
        if scale is not None and float(scale) == 0.0:
            raise ValueError("gdn2: scale = 0 is not supported (None means K^-1/2)")
        self.bf = q.dtype == torch.bfloat16
        self.cdt = cdt = torch.bfloat16 if self.bf else torch.float32
        self.dev = q.device
        x = {n: t.detach().to(dtype=cdt).contiguous() for n, t in (("q", q), ("k", k), ("v", v), ("b", b), ("w", w))}
        x["g"] = g.detach().to(dtype=torch.float32).contiguous()
        x["h0"] = None if h0 is None else h0.detach().to(dtype=torch.float32).contiguous()
        if gate:  # the device API needs both: absent = zero (as fla / the CPU ops)
            x["A_log"] = torch.zeros(H, device=q.device) if A_log is None else _flat(A_log, "A_log", H)
            x["dt_bias"] = (torch.zeros(H * K, device=q.device) if dt_bias is None
                            else _flat(dt_bias, "dt_bias", H * K))
        else:
            x["A_log"] = x["dt_bias"] = None
        self.x, self.N = x, N
        self.dims = L.Dims(B, T, H, HV, K, V)
        self.opts = opts = L.Opts()
        opts.scale = 0.0 if scale is None else float(scale)
        opts.qk_l2norm, opts.gate_in_kernel = int(bool(l2)), int(bool(gate))
        opts.lower_bound = 0.0 if lb is None else float(lb)
        self.cu = None
        if cu is not None:  # a HOST array (include/gdn2_cuda.h); checked against T by the library
            self.cu = np.ascontiguousarray(cu, dtype=np.int64)
            opts.cu_seqlens, opts.n_seqs = self.cu.ctypes.data, self.cu.size - 1
        self.a = a = L.CudaFwdArgs()
        a.dtype = L.GDN2_CUDA_BF16 if self.bf else L.GDN2_CUDA_F32
        for n in ("q", "k", "v", "b", "w", "g", "h0", "A_log", "dt_bias"):
            setattr(a, n, _addr(x[n]))
        self.ws = None

    def forward(self, keep):
        """(o, ht); keep: also leave in a workspace (kept on self) what the backward needs."""
        d = self.dims
        o = torch.empty((d.B, d.T, d.HV, d.V), dtype=self.cdt, device=self.dev)
        ht = torch.empty((self.N, d.HV, d.K, d.V), dtype=torch.float32, device=self.dev)
        self.a.o, self.a.ht = _addr(o), _addr(ht)
        self.a.keep_for_backward = int(bool(keep))
        with torch.cuda.device(self.dev):
            self.ws = _ws(d, self.opts, self.a, None, self.dev)
            L.call("gdn2_cuda_chunk_fwd", ctypes.byref(d), ctypes.byref(self.opts), ctypes.byref(self.a),
                   _stream(self.dev))
        if not keep:
            self.ws = None  # the stream-ordered caching allocator may reuse it after the queued work
        return o, ht

    def backward(self, do, dht, reuse):
        """Grads; reuse: take the intermediates that self.forward(keep=True) left in self.ws."""
        d, x, dev = self.dims, self.x, self.dev
        do_c = _al16(do.detach().to(dtype=self.cdt).contiguous())
        dht_c = None if dht is None else _al16(dht.detach().to(dtype=torch.float32).contiguous())
        out = {n: torch.empty(x[n].shape, dtype=self.cdt, device=dev) for n in ("q", "k", "v", "b", "w")}
        dg = torch.empty(x["g"].shape, dtype=torch.float32, device=dev)
        dh0 = None if x["h0"] is None else torch.empty(x["h0"].shape, dtype=torch.float32, device=dev)
        gate = self.opts.gate_in_kernel
        dA = torch.empty(d.H, dtype=torch.float32, device=dev) if gate else None
        ddt = torch.empty(d.H * d.K, dtype=torch.float32, device=dev) if gate else None
        gr = L.CudaBwdArgs()
        gr.d_o, gr.dht = _addr(do_c), _addr(dht_c)
        gr.dq, gr.dk, gr.dv, gr.db, gr.dw = (_addr(out[n]) for n in ("q", "k", "v", "b", "w"))
        gr.dg, gr.dh0, gr.dA_log, gr.ddt_bias = _addr(dg), _addr(dh0), _addr(dA), _addr(ddt)
        gr.reuse_forward = int(bool(reuse))
        self.a.keep_for_backward = 0
        with torch.cuda.device(dev):
            if not reuse:
                self.ws = _ws(d, self.opts, self.a, gr, dev)
            L.call("gdn2_cuda_chunk_bwd", ctypes.byref(d), ctypes.byref(self.opts), ctypes.byref(self.a),
                   ctypes.byref(gr), _stream(dev))
        self.ws = None
        return _core.Grads(out["q"], out["k"], out["v"], dg, out["b"], out["w"], dA, ddt, dh0)


# ---- the autograd function --------------------------------------------------------------------
class _Fn(torch.autograd.Function):
    """(o, ht) = op(q, k, v, g, b, w, beta, h0, A_log, dt_bias) for meta = (kind, impl, scale,
    qk_l2norm, gate_in_kernel, lower_bound, cu_seqlens as a host numpy array or None, keep: CUDA
    keep_for_backward)."""

    @staticmethod
    def forward(ctx, meta, q, k, v, g, b, w, beta, h0, A_log, dt_bias):
        ctx.meta = meta
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(q, k, v, g, b, w, beta, h0, A_log, dt_bias)
        ctx.cuda_kept = ctx.cpu_kept = None
        if q.is_cuda:
            call = _CudaCall(meta, q, k, v, g, b, w, h0, A_log, dt_bias)
            keep = bool(meta[7]) and any(ctx.needs_input_grad)
            o, ht = call.forward(keep)
            if keep:  # the workspace and the converted inputs (same addresses) for the backward
                ctx.cuda_kept = call
        else:
            p = _cpu_problem(meta, q, k, v, g, b, w, beta, h0, A_log, dt_bias)
            # keep mode on the CPU: the fp32 GDN-2 chunk kernels' saved pair, held by the graph
            save = bool(meta[7]) and any(ctx.needs_input_grad) and meta[1] == "chunk" and p.can_save()
            o, ht = p.forward(meta[1], want_ht=True, save=save)
            if save:
                ctx.cpu_kept = p
            o, ht = torch.from_numpy(o), torch.from_numpy(ht)
        return o.to(dtype=q.dtype), ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, g, b, w, beta, h0, A_log, dt_bias = ctx.saved_tensors  # (autograd's in-place checks)
        meta = ctx.meta
        if do is None:
            do = torch.zeros(v.shape, dtype=q.dtype, device=q.device)
        if q.is_cuda:
            call, reuse = ctx.cuda_kept, ctx.cuda_kept is not None
            ctx.cuda_kept = None  # once: a second backward (retain_graph) recomputes
            if call is None:
                call = _CudaCall(meta, q, k, v, g, b, w, h0, A_log, dt_bias)
            gr = call.backward(do, dht, reuse)
        else:
            f64 = q.dtype == torch.float64
            dt = np.float64 if f64 else np.float32
            p, ctx.cpu_kept = ctx.cpu_kept, None  # once: a second backward (retain_graph) recomputes
            if p is None:
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


def _no_compile(fn):
    """Keep torch.compile / dynamo out of the ctypes calls (as the official chunk_gdn2 does)."""
    dis = getattr(getattr(torch, "compiler", None), "disable", None)
    return dis(fn) if dis is not None else fn


@_no_compile
def run(kind, impl, q, k, v, g, b, w, beta, scale, initial_state, output_final_state, l2, gate, A_log, dt_bias,
        lower_bound, cu_seqlens, state_v_first, keep=False):
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
    meta = (kind, impl, scale, bool(l2), bool(gate), lower_bound, cu, bool(keep))
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
    # CUDA: gdn2_cuda_recurrent_fwd with T = 1 on the current stream
    _need_cuda()
    if q.dim() != 3 or v.dim() != 3:
        raise ValueError("gdn2: q and v must be [n,H,K] and [n,HV,V], got %s and %s" % (tuple(q.shape), tuple(v.shape)))
    n, H, K = q.shape
    if v.shape[0] != n or v.shape[1] % H:
        raise ValueError("gdn2: v has shape %s, expected [n=%d, HV (a multiple of H=%d), V]" % (tuple(v.shape), n, H))
    HV, V = v.shape[1], v.shape[2]
    if state_pool.dim() != 4 or tuple(state_pool.shape[1:]) != (HV, K, V) or state_pool.device != q.device:
        raise ValueError("gdn2: state_pool must be a tensor [n_slots, HV=%d, K=%d, V=%d] on %s, got %s on %s"
                         % (HV, K, V, q.device, tuple(state_pool.shape), state_pool.device))
    for nm, t, shp in (("k", k, (n, H, K)), ("g", g, (n, H, K)), ("b", b, (n, H, K)), ("w", w, (n, HV, V))):
        _expect(t, nm, shp)
        if t.device != q.device:
            raise ValueError("gdn2: %s is on %s, q on %s" % (nm, t.device, q.device))
    if scale is not None and float(scale) == 0.0:
        raise ValueError("gdn2: scale = 0 is not supported (None means K^-1/2)")
    bf = q.dtype == torch.bfloat16
    cdt = torch.bfloat16 if bf else torch.float32
    x = {nm: t.detach().to(dtype=cdt).contiguous() for nm, t in (("q", q), ("k", k), ("v", v), ("b", b), ("w", w))}
    gg = g.detach().to(dtype=torch.float32).contiguous()
    if torch.is_tensor(slots) and slots.is_cuda:  # not checked on the host (that would synchronise)
        sl = slots.to(device=q.device, dtype=torch.int32).contiguous()
    else:
        hs = np.asarray(slots.cpu() if torch.is_tensor(slots) else slots, dtype=np.int64).reshape(-1)
        if hs.size and int(hs.max()) >= state_pool.shape[0]:
            raise ValueError("gdn2: slot %d out of range (n_slots = %d)" % (int(hs.max()), state_pool.shape[0]))
        sl = torch.as_tensor(hs.astype(np.int32), device=q.device)
    if tuple(sl.shape) != (n,):
        raise ValueError("gdn2: slots must be [n=%d], got %s" % (n, tuple(sl.shape)))
    if gate:
        A_log = torch.zeros(H, device=q.device) if A_log is None else _flat(A_log, "A_log", H)
        dt_bias = torch.zeros(H * K, device=q.device) if dt_bias is None else _flat(dt_bias, "dt_bias", H * K)
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
        L.call("gdn2_cuda_recurrent_fwd", ctypes.byref(dims), ctypes.byref(opts), ctypes.byref(a), _stream(q.device))
    return o.to(dtype=q.dtype)
