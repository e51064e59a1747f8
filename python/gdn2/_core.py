"""The CPU ops on numpy arrays: shape checks (the C library trusts the pointers it gets, so every
size is checked here first), dtype policy (float64 inputs run the float64 reference, anything else
the fp32 kernels) and the calls. Used by the numpy API (gdn2/ops.py) and by the torch functions for
CPU tensors (gdn2/torch_ops.py)."""
import collections
import ctypes

import numpy as np

from . import _lib as L

Grads = collections.namedtuple("Grads", "dq dk dv dg db dw dA_log ddt_bias dh0")
Grads.__doc__ = ("Gradients of the inputs: dq dk dv dg db dw (db / dw are None and dg, for kind 'kda' / 'gdn', "
                 "is that of g; dbeta is in db for those kinds), dA_log / ddt_bias (None without the gate in "
                 "kernel), dh0 (None without an initial state).")


def _ptr(a):
    return None if a is None else a.ctypes.data


def _arr(x, name, dtype, ndim=None):
    """x as a C-contiguous array of dtype (a copy only when needed)."""
    if x is None:
        return None
    a = np.ascontiguousarray(np.asarray(x), dtype=dtype)
    if ndim is not None and a.ndim != ndim:
        raise ValueError("gdn2: %s must have %d dimensions, got shape %s" % (name, ndim, tuple(a.shape)))
    return a


def _expect(a, name, shape):
    if a is not None and tuple(a.shape) != tuple(shape):
        raise ValueError("gdn2: %s has shape %s, expected %s" % (name, tuple(a.shape), tuple(shape)))


class Problem:
    """One call's inputs, checked and converted. kind: 'gdn2' (b [B,T,H,K], w [B,T,HV,V]), 'kda'
    (beta [B,T,H]) or 'gdn' (beta [B,T,H], g [B,T,H])."""

    def __init__(self, kind, q, k, v, g, b=None, w=None, beta=None, h0=None, A_log=None, dt_bias=None, scale=None,
                 qk_l2norm=False, gate_in_kernel=False, lower_bound=None, cu_seqlens=None, f64=None):
        if f64 is None:
            f64 = np.asarray(q).dtype == np.float64
        self.f64 = bool(f64)
        dt = np.float64 if self.f64 else np.float32
        self.dtype = dt
        self.kind = kind
        self.q = _arr(q, "q", dt, 4)
        B, T, H, K = self.q.shape
        self.k = _arr(k, "k", dt, 4)
        self.v = _arr(v, "v", dt, 4)
        _expect(self.k, "k", (B, T, H, K))
        if self.v.shape[:2] != (B, T):
            raise ValueError("gdn2: v has shape %s, expected [B=%d, T=%d, HV, V]" % (tuple(self.v.shape), B, T))
        HV, V = self.v.shape[2], self.v.shape[3]
        if HV % H:
            raise ValueError("gdn2: the value heads HV=%d (v.shape[2]) must be a multiple of the key heads H=%d" % (HV, H))
        self.g = _arr(g, "g", dt)
        self.b = self.w = self.beta = None
        if kind == "gdn2":
            if b is None or w is None:
                raise ValueError("gdn2: b and w are required")
            self.b, self.w = _arr(b, "b", dt), _arr(w, "w", dt)
            _expect(self.g, "g", (B, T, H, K))
            _expect(self.b, "b", (B, T, H, K))
            _expect(self.w, "w", (B, T, HV, V))
        else:
            if beta is None:
                raise ValueError("gdn2: beta [B,T,H] is required")
            self.beta = _arr(beta, "beta", dt)
            _expect(self.beta, "beta", (B, T, H))
            _expect(self.g, "g", (B, T, H, K) if kind == "kda" else (B, T, H))
        self.cu = None
        N = B
        if cu_seqlens is not None:
            self.cu = np.ascontiguousarray(np.asarray(cu_seqlens), dtype=np.int64)
            if self.cu.ndim != 1 or self.cu.size < 2:
                raise ValueError("gdn2: cu_seqlens must be a 1-D array [N+1], got shape %s" % (tuple(self.cu.shape),))
            if B != 1:
                raise ValueError("gdn2: the batch size is expected to be 1 rather than %d when using cu_seqlens" % B)
            N = self.cu.size - 1
        self.N = N
        self.h0 = _arr(h0, "initial_state", dt)
        _expect(self.h0, "initial_state", (N, HV, K, V))
        self.A_log = _arr(A_log, "A_log", dt)
        self.dt_bias = _arr(dt_bias, "dt_bias", dt)
        if gate_in_kernel:
            if self.A_log is not None:
                self.A_log = self.A_log.reshape(-1)
                _expect(self.A_log, "A_log", (H,))
            if self.dt_bias is not None:
                self.dt_bias = self.dt_bias.reshape(-1)
                _expect(self.dt_bias, "dt_bias (flattened)", (H * K,))
        else:
            self.A_log = self.dt_bias = None
        self.dims = L.Dims(B, T, H, HV, K, V)
        self.opts = L.Opts()
        self.opts.scale = 0.0 if scale is None else float(scale)
        if scale is not None and self.opts.scale == 0.0:
            raise ValueError("gdn2: scale = 0 is not supported (None means K^-1/2)")
        self.opts.qk_l2norm = int(bool(qk_l2norm))
        self.opts.gate_in_kernel = int(bool(gate_in_kernel))
        self.opts.lower_bound = 0.0 if lower_bound is None else float(lower_bound)
        if self.cu is not None:
            self.opts.cu_seqlens = self.cu.ctypes.data
            self.opts.n_seqs = self.cu.size - 1
        self.shape_o = (B, T, HV, V)
        self.shape_h = (N, HV, K, V)

    # -- helpers for the float64 path of the collapse kinds: expand beta (and g) to GDN-2 tensors
    def _expanded(self):
        B, T, H, HV, K, V = (self.dims.B, self.dims.T, self.dims.H, self.dims.HV, self.dims.K, self.dims.V)
        if self.kind == "gdn2":
            return self.g, self.b, self.w
        G = HV // H
        b = np.ascontiguousarray(np.broadcast_to(self.beta[..., None], (B, T, H, K)))
        w = np.ascontiguousarray(np.broadcast_to(np.repeat(self.beta, G, axis=2)[..., None], (B, T, HV, V)))
        g = self.g if self.kind == "kda" else np.ascontiguousarray(np.broadcast_to(self.g[..., None], (B, T, H, K)))
        return g, b, w

    def _fwd_struct(self, o, ht, g=None, b=None, w=None):
        t = L.FwdTensors()
        t.q, t.k, t.v = _ptr(self.q), _ptr(self.k), _ptr(self.v)
        t.g = _ptr(self.g if g is None else g)
        t.b = _ptr(self.b if b is None else b)
        t.w = _ptr(self.w if w is None else w)
        t.h0, t.A_log, t.dt_bias = _ptr(self.h0), _ptr(self.A_log), _ptr(self.dt_bias)
        t.o, t.ht = _ptr(o), _ptr(ht)
        return t

    def can_save(self):
        """The fp32 GDN-2 chunk kernels have a saved pair (gdn2_chunk_fwd_save / gdn2_chunk_bwd_saved);
        float64 and the KDA / GDN entry points recompute."""
        return not self.f64 and self.kind == "gdn2"

    def forward(self, impl="chunk", want_ht=True, save=False):
        """(o [B,T,HV,V], ht [N,HV,K,V] or None) in the problem's dtype. save (can_save(), impl
        chunk): also self.saved, what backward() then reads instead of recomputing (keep mode)."""
        if impl not in ("chunk", "recurrent"):
            raise ValueError("gdn2: impl must be 'chunk' or 'recurrent', got %r" % (impl,))
        o = np.empty(self.shape_o, self.dtype)
        ht = np.empty(self.shape_h, self.dtype) if want_ht else None
        d, op = ctypes.byref(self.dims), ctypes.byref(self.opts)
        if self.f64:
            g, b, w = self._expanded()
            t = self._fwd_struct(o, ht, g, b, w)
            L.call("gdn2_ref_fwd", d, op, ctypes.byref(t))
        elif self.kind == "gdn2" and save and impl == "chunk":
            t = self._fwd_struct(o, ht)
            n = L.lib.gdn2_chunk_saved_size(d, op)
            self.saved = np.empty((max(n, 1),), np.uint8)
            L.call("gdn2_chunk_fwd_save", d, op, ctypes.byref(t), _ptr(self.saved), n)
        elif self.kind == "gdn2":
            t = self._fwd_struct(o, ht)
            L.call("gdn2_chunk_fwd" if impl == "chunk" else "gdn2_recurrent_fwd", d, op, ctypes.byref(t))
        else:
            t = self._fwd_struct(o, ht)
            L.call("gdn2_%s_%s_fwd" % (self.kind, impl), d, op, ctypes.byref(t), _ptr(self.beta))
        return o, ht

    def backward(self, do, dht=None):
        """Grads of every input for upstream gradients do [B,T,HV,V] (and dht [N,HV,K,V] or None)."""
        do = _arr(do, "do", self.dtype)
        _expect(do, "do", self.shape_o)
        dht = _arr(dht, "dht", self.dtype)
        _expect(dht, "dht", self.shape_h)
        B, T, H, HV, K, V = (self.dims.B, self.dims.T, self.dims.H, self.dims.HV, self.dims.K, self.dims.V)
        dt = self.dtype
        dq, dk = np.empty(self.q.shape, dt), np.empty(self.k.shape, dt)
        dv = np.empty(self.v.shape, dt)
        dbfull = np.empty((B, T, H, K), dt)
        dwfull = np.empty((B, T, HV, V), dt)
        gate = bool(self.opts.gate_in_kernel)
        dA = np.empty((H,), dt) if gate else None
        ddt = np.empty((H * K,), dt) if gate else None
        dh0 = np.empty(self.shape_h, dt) if self.h0 is not None else None
        d, op = ctypes.byref(self.dims), ctypes.byref(self.opts)
        gr = L.BwdTensors()
        gr.d_o, gr.dht = _ptr(do), _ptr(dht)
        gr.dq, gr.dk, gr.dv = _ptr(dq), _ptr(dk), _ptr(dv)
        gr.db, gr.dw, gr.dh0, gr.dA_log, gr.ddt_bias = _ptr(dbfull), _ptr(dwfull), _ptr(dh0), _ptr(dA), _ptr(ddt)
        if self.f64 or self.kind == "gdn2":
            g, b, w = self._expanded()
            dgfull = np.empty((B, T, H, K), dt)
            gr.dg = _ptr(dgfull)
            t = self._fwd_struct(None, None, g, b, w)
            saved = getattr(self, "saved", None)
            if saved is not None and not self.f64:  # a saving forward ran on these inputs: read, then drop
                self.saved = None
                L.call("gdn2_chunk_bwd_saved", d, op, ctypes.byref(t), ctypes.byref(gr), _ptr(saved), saved.nbytes)
            else:
                L.call("gdn2_ref_bwd" if self.f64 else "gdn2_chunk_bwd", d, op, ctypes.byref(t), ctypes.byref(gr))
            if self.kind == "gdn2":
                return Grads(dq, dk, dv, dgfull, dbfull, dwfull, dA, ddt, dh0)
            G = HV // H
            dbeta = dbfull.sum(-1) + dwfull.sum(-1).reshape(B, T, H, G).sum(-1)
            dg = dgfull if self.kind == "kda" else dgfull.sum(-1)
            return Grads(dq, dk, dv, dg, dbeta, None, dA, ddt, dh0)
        dg = np.empty(self.g.shape, dt)
        gr.dg = _ptr(dg)
        dbeta = np.empty(self.beta.shape, dt)
        t = self._fwd_struct(None, None)
        L.call("gdn2_%s_chunk_bwd" % self.kind, d, op, ctypes.byref(t), _ptr(self.beta), ctypes.byref(gr), _ptr(dbeta))
        return Grads(dq, dk, dv, dg, dbeta, None, dA, ddt, dh0)


def decode_step_np(q, k, v, g, b, w, state_pool, slots, A_log=None, dt_bias=None, scale=None, qk_l2norm=False,
                   gate_in_kernel=False, lower_bound=None, out=None):
    """One decode step on numpy arrays; state_pool ([n_slots,HV,K,V] float32, or uint16 bf16 bit
    patterns) is updated in place and must be C-contiguous."""
    return _decode_np(None, q, k, v, g, b, w, state_pool, slots, None, A_log, dt_bias, scale, qk_l2norm,
                      gate_in_kernel, lower_bound, out)


def decode_verify_np(q, k, v, g, b, w, state_pool, slots, snap_slots=None, A_log=None, dt_bias=None, scale=None,
                     qk_l2norm=False, gate_in_kernel=False, lower_bound=None):
    """T tokens per sequence in one call (gdn2_decode_verify): q, k, g, b [n,T,H,K], v, w [n,T,HV,V].
    snap_slots [n,T] int32: the state after token t of row i goes to state_pool[snap_slots[i,t]] and
    state_pool[slots[i]] is left as it was; None: updated in place. Returns o [n,T,HV,V]."""
    q = _arr(q, "q", np.float32, 4)
    return _decode_np(q.shape[1], q, k, v, g, b, w, state_pool, slots, snap_slots, A_log, dt_bias, scale, qk_l2norm,
                      gate_in_kernel, lower_bound, None)


def _decode_np(T, q, k, v, g, b, w, state_pool, slots, snap_slots, A_log, dt_bias, scale, qk_l2norm, gate_in_kernel,
               lower_bound, out):
    """decode_step_np (T None: [n,...] without a time axis) and decode_verify_np ([n,T,...])."""
    nd = 3 if T is None else 4
    tt = () if T is None else (T,)
    q = _arr(q, "q", np.float32, nd)
    n, H, K = q.shape[0], q.shape[-2], q.shape[-1]
    v = _arr(v, "v", np.float32, nd)
    if v.shape[:nd - 2] != (n,) + tt:
        raise ValueError("gdn2: v has shape %s, expected [n=%d, %sHV, V]" % (tuple(v.shape), n,
                                                                           "" if T is None else "T=%d, " % T))
    HV, V = v.shape[-2], v.shape[-1]
    if HV % H:
        raise ValueError("gdn2: the value heads HV=%d must be a multiple of the key heads H=%d" % (HV, H))
    k, g, b, w = (_arr(x, nm, np.float32) for x, nm in ((k, "k"), (g, "g"), (b, "b"), (w, "w")))
    for a, nm, s in ((k, "k", (n,) + tt + (H, K)), (g, "g", (n,) + tt + (H, K)), (b, "b", (n,) + tt + (H, K)),
                     (w, "w", (n,) + tt + (HV, V))):
        _expect(a, nm, s)
    if not isinstance(state_pool, np.ndarray) or not state_pool.flags.c_contiguous or not state_pool.flags.writeable:
        raise ValueError("gdn2: state_pool must be a writeable C-contiguous numpy array (it is updated in place)")
    if state_pool.dtype == np.float32:
        sdt = L.GDN2_STATE_F32
    elif state_pool.dtype == np.uint16:
        sdt = L.GDN2_STATE_BF16
    else:
        raise ValueError("gdn2: state_pool dtype must be float32 or uint16 (bf16 bit patterns), got %s" % state_pool.dtype)
    if state_pool.ndim != 4 or tuple(state_pool.shape[1:]) != (HV, K, V):
        raise ValueError("gdn2: state_pool has shape %s, expected [n_slots, HV=%d, K=%d, V=%d]"
                         % (tuple(state_pool.shape), HV, K, V))
    slots = np.ascontiguousarray(np.asarray(slots), dtype=np.int32)
    _expect(slots, "slots", (n,))
    if slots.size and int(slots.max()) >= state_pool.shape[0]:
        raise ValueError("gdn2: slot %d out of range (n_slots = %d)" % (int(slots.max()), state_pool.shape[0]))
    if snap_slots is not None:  # the library checks the values (range, distinct) and names the index
        snap_slots = np.ascontiguousarray(np.asarray(snap_slots), dtype=np.int32)
        _expect(snap_slots, "snap_slots", (n, T))
    A_log = _arr(A_log, "A_log", np.float32) if gate_in_kernel else None
    dt_bias = _arr(dt_bias, "dt_bias", np.float32) if gate_in_kernel else None
    if A_log is not None:
        _expect(A_log.reshape(-1), "A_log", (H,))
    if dt_bias is not None:
        _expect(dt_bias.reshape(-1), "dt_bias (flattened)", (H * K,))
    oshape = (n,) + tt + (HV, V)
    o = np.empty(oshape, np.float32) if out is None else out
    if o.shape != oshape or o.dtype != np.float32 or not o.flags.c_contiguous:
        raise ValueError("gdn2: out must be a C-contiguous float32 array %s" % (list(oshape),))
    dims = L.Dims(n, 1 if T is None else T, H, HV, K, V)
    opts = L.Opts()
    opts.scale = 0.0 if scale is None else float(scale)
    opts.qk_l2norm, opts.gate_in_kernel = int(bool(qk_l2norm)), int(bool(gate_in_kernel))
    opts.lower_bound = 0.0 if lower_bound is None else float(lower_bound)
    t = L.DecodeTensors()
    t.q, t.k, t.v, t.g, t.b, t.w = (_ptr(x) for x in (q, k, v, g, b, w))
    t.A_log, t.dt_bias, t.o = _ptr(A_log), _ptr(dt_bias), _ptr(o)
    t.state_pool, t.n_slots, t.slots, t.state_dtype = state_pool.ctypes.data, state_pool.shape[0], _ptr(slots), sdt
    if T is None:
        L.call("gdn2_decode_step", ctypes.byref(dims), ctypes.byref(opts), ctypes.byref(t))
    else:
        L.call("gdn2_decode_verify", ctypes.byref(dims), ctypes.byref(opts), ctypes.byref(t), _ptr(snap_slots))
    return o
