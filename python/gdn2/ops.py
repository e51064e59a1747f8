"""The fla-style entry points. Each takes numpy arrays (CPU, forward; the *_bwd functions give the
gradients) or torch tensors (CPU or CUDA, differentiable: gdn2/torch_ops.py), with the argument
names, layouts and return values of fla's ops (fla/ops/gdn2, fla/ops/kda, fla/ops/gated_delta_rule):
q, k [B,T,H,K]; v [B,T,HV,V] (HV a multiple of H: grouped value heads); states [N,HV,K,V] (or
[N,HV,V,K] with state_v_first=True). float64 inputs run the float64 reference (exact; what
gradcheck needs), other dtypes the fp32 kernels, outputs in q's dtype, final states in fp32 (fp64)."""
import os

import numpy as np

from . import _core

_IGNORED = ("safe_gate", "cu_seqlens_cpu", "inplace_final_state", "cp_context")


def _is_torch(x):
    return type(x).__module__.split(".")[0] == "torch"


def _opts(kwargs, state_v_first, return_intermediate_states, cu_seqlens):
    """fla's extra keyword arguments: accepted (and ignored where they only pick a kernel variant),
    refused with a clear message where gdn2 cannot honour them."""
    kwargs = dict(kwargs)
    if "transpose_state_layout" in kwargs:  # fla's deprecated name
        state_v_first = state_v_first or bool(kwargs.pop("transpose_state_layout"))
    if kwargs.pop("chunk_size", 64) != 64:
        raise ValueError("gdn2: chunk_size must be 64 (the kernels' chunk)")
    cu_cpu = kwargs.get("cu_seqlens_cpu")
    # fla's disable_recompute (keep the forward's intermediates for the backward): on CUDA the
    # keep_for_backward / reuse_forward reserve space; on the CPU the fp32 GDN-2 saved pair
    keep = bool(kwargs.pop("disable_recompute", False)) or os.environ.get("GDN2_CUDA_KEEP", "0") not in ("", "0")
    for name in _IGNORED:
        kwargs.pop(name, None)
    for name in ("ssm_state_indices", "num_accepted_tokens", "out"):
        if kwargs.pop(name, None) is not None:
            raise NotImplementedError("gdn2: %s is not supported (use gdn2.decode_step for a state pool with slots)" % name)
    if kwargs:
        raise TypeError("gdn2: unexpected keyword argument(s): %s" % ", ".join(sorted(kwargs)))
    if return_intermediate_states:
        raise NotImplementedError("gdn2: return_intermediate_states (fla's per-chunk states h [B,NT,H,K,V]) is not "
                                  "supported: the gdn2 kernels do not keep per-chunk states; run chunk by chunk "
                                  "with initial_state / output_final_state to get states at chosen positions")
    if cu_seqlens is None and cu_cpu is not None:
        cu_seqlens = cu_cpu
    elif cu_cpu is not None:
        cu_seqlens = cu_cpu  # the host copy: the C API reads cu_seqlens on the host
    return bool(state_v_first), cu_seqlens, keep


def _np_run(kind, impl, q, k, v, g, b, w, beta, scale, initial_state, output_final_state, l2, gate, A_log, dt_bias,
            lower_bound, cu_seqlens, state_v_first):
    h0 = initial_state
    if h0 is not None and state_v_first:
        h0 = np.swapaxes(np.asarray(h0), -1, -2)
    p = _core.Problem(kind, q, k, v, g, b=b, w=w, beta=beta, h0=h0, A_log=A_log, dt_bias=dt_bias, scale=scale,
                      qk_l2norm=l2, gate_in_kernel=gate, lower_bound=lower_bound, cu_seqlens=cu_seqlens)
    o, ht = p.forward(impl, want_ht=output_final_state)
    qdt = np.asarray(q).dtype
    if qdt.kind == "f" and o.dtype != qdt:
        o = o.astype(qdt)
    if ht is not None and state_v_first:
        ht = np.ascontiguousarray(np.swapaxes(ht, -1, -2))
    return o, ht


def _run(kind, impl, q, k, v, g, b, w, beta, scale, initial_state, output_final_state, l2, gate, A_log, dt_bias,
         lower_bound, cu_seqlens, state_v_first, return_intermediate_states, kwargs):
    state_v_first, cu_seqlens, keep = _opts(kwargs, state_v_first, return_intermediate_states, cu_seqlens)
    if _is_torch(q):
        from . import torch_ops
        return torch_ops.run(kind, impl, q, k, v, g, b, w, beta, scale, initial_state, output_final_state, l2, gate,
                             A_log, dt_bias, lower_bound, cu_seqlens, state_v_first, keep)
    return _np_run(kind, impl, q, k, v, g, b, w, beta, scale, initial_state, output_final_state, l2, gate, A_log,
                   dt_bias, lower_bound, cu_seqlens, state_v_first)


# ---- GDN-2 ------------------------------------------------------------------------------------
def chunk_gdn2(q, k, v, g, b, w, scale=None, initial_state=None, output_final_state=False,
               use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False, A_log=None, dt_bias=None, lower_bound=None,
               cu_seqlens=None, state_v_first=False, return_intermediate_states=False, **kwargs):
    """Chunkwise GDN-2: S_t = (I - k_t (b_t*k_t)^T) Diag(exp(g_t)) S_{t-1} + k_t (w_t*v_t)^T,
    o_t = scale * S_t^T q_t. g, b [B,T,H,K], w [B,T,HV,V]; with use_gate_in_kernel g is the raw
    pre-activation and g_eff = -exp(A_log[h]) * softplus(g + dt_bias) (lower_bound < 0:
    lower_bound * sigmoid(exp(A_log) * (g + dt_bias))); A_log [H] and dt_bias [H*K] (or [H,K]) are
    optional (absent = zero). Returns (o [B,T,HV,V], final_state [N,HV,K,V] or None)."""
    return _run("gdn2", "chunk", q, k, v, g, b, w, None, scale, initial_state, output_final_state,
                use_qk_l2norm_in_kernel, use_gate_in_kernel, A_log, dt_bias, lower_bound, cu_seqlens, state_v_first,
                return_intermediate_states, kwargs)


def fused_recurrent_gdn2(q, k, v, g, b, w, A_log=None, dt_bias=None, scale=None, initial_state=None,
                         output_final_state=False, use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False,
                         lower_bound=None, state_v_first=False, cu_seqlens=None, **kwargs):
    """Token-serial GDN-2 (the decode semantics over whole sequences), fla's fused_recurrent_gdn2.
    torch: differentiable (the backward is the chunk kernels' gradient of the same function)."""
    return _run("gdn2", "recurrent", q, k, v, g, b, w, None, scale, initial_state, output_final_state,
                use_qk_l2norm_in_kernel, use_gate_in_kernel, A_log, dt_bias, lower_bound, cu_seqlens, state_v_first,
                False, kwargs)


# ---- KDA (b = w = beta) and Gated DeltaNet (KDA with a scalar decay g [B,T,H]) ------------------
def _beta_pre(beta, use_beta_sigmoid_in_kernel, allow_neg_eigval):
    if use_beta_sigmoid_in_kernel:
        beta = beta.sigmoid() if _is_torch(beta) else 1.0 / (1.0 + np.exp(-np.asarray(beta)))
    if allow_neg_eigval:
        beta = beta * 2
    return beta


def chunk_kda(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
              use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False, use_beta_sigmoid_in_kernel=False,
              allow_neg_eigval=False, lower_bound=None, state_v_first=False, cu_seqlens=None, A_log=None,
              dt_bias=None, return_intermediate_states=False, **kwargs):
    """Chunkwise KDA (fla's chunk_kda): g [B,T,H,K], beta [B,T,H]."""
    beta = _beta_pre(beta, use_beta_sigmoid_in_kernel, allow_neg_eigval)
    return _run("kda", "chunk", q, k, v, g, None, None, beta, scale, initial_state, output_final_state,
                use_qk_l2norm_in_kernel, use_gate_in_kernel, A_log, dt_bias, lower_bound, cu_seqlens, state_v_first,
                return_intermediate_states, kwargs)


def fused_recurrent_kda(q, k, v, g, beta, A_log=None, dt_bias=None, scale=None, initial_state=None,
                        output_final_state=False, use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False,
                        use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False, lower_bound=None,
                        state_v_first=False, cu_seqlens=None, **kwargs):
    """Token-serial KDA (fla's fused_recurrent_kda)."""
    beta = _beta_pre(beta, use_beta_sigmoid_in_kernel, allow_neg_eigval)
    return _run("kda", "recurrent", q, k, v, g, None, None, beta, scale, initial_state, output_final_state,
                use_qk_l2norm_in_kernel, use_gate_in_kernel, A_log, dt_bias, lower_bound, cu_seqlens, state_v_first,
                False, kwargs)


def chunk_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
                           use_qk_l2norm_in_kernel=False, cu_seqlens=None, state_v_first=False, **kwargs):
    """Chunkwise Gated DeltaNet (fla's chunk_gated_delta_rule): g [B,T,H] (scalar log-decay per
    head), beta [B,T,H]. The gate in kernel is not supported for this form."""
    if kwargs.pop("use_gate_in_kernel", False):
        raise NotImplementedError("gdn2: use_gate_in_kernel is not supported for Gated DeltaNet (scalar decay): "
                                  "compute the decay outside")
    return _run("gdn", "chunk", q, k, v, g, None, None, beta, scale, initial_state, output_final_state,
                use_qk_l2norm_in_kernel, False, None, None, None, cu_seqlens, state_v_first, False, kwargs)


def fused_recurrent_gated_delta_rule(q, k, v, g=None, gk=None, gv=None, beta=None, scale=None, initial_state=None,
                                     output_final_state=False, use_qk_l2norm_in_kernel=False, cu_seqlens=None,
                                     state_v_first=False, **kwargs):
    """Token-serial Gated DeltaNet (fla's fused_recurrent_gated_delta_rule): g [B,T,H] (scalar
    decay) or gk [B,T,H,K] (per-channel: KDA); gv is not supported; beta [B,T,H] (None: ones)."""
    if gv is not None:
        raise NotImplementedError("gdn2: gv (a value-side decay) is not supported")
    if (g is None) == (gk is None):
        raise ValueError("gdn2: pass exactly one of g [B,T,H] and gk [B,T,H,K]")
    if kwargs.pop("use_beta_sigmoid_in_kernel", False) or kwargs.pop("allow_neg_eigval", False):
        raise NotImplementedError("gdn2: use_beta_sigmoid_in_kernel / allow_neg_eigval: apply them to beta outside")
    if beta is None:
        beta = (q.new_ones(q.shape[:3]) if _is_torch(q) else np.ones(np.shape(q)[:3], np.asarray(q).dtype))
    kind, gg = ("gdn", g) if g is not None else ("kda", gk)
    return _run(kind, "recurrent", q, k, v, gg, None, None, beta, scale, initial_state, output_final_state,
                use_qk_l2norm_in_kernel, False, None, None, None, cu_seqlens, state_v_first, False, kwargs)


# ---- numpy backward ---------------------------------------------------------------------------
def _np_bwd(kind, q, k, v, g, b, w, beta, do, dht, scale, initial_state, l2, gate, A_log, dt_bias, lower_bound,
            cu_seqlens, state_v_first):
    h0 = initial_state
    if h0 is not None and state_v_first:
        h0 = np.swapaxes(np.asarray(h0), -1, -2)
    if dht is not None and state_v_first:
        dht = np.swapaxes(np.asarray(dht), -1, -2)
    p = _core.Problem(kind, q, k, v, g, b=b, w=w, beta=beta, h0=h0, A_log=A_log, dt_bias=dt_bias, scale=scale,
                      qk_l2norm=l2, gate_in_kernel=gate, lower_bound=lower_bound, cu_seqlens=cu_seqlens)
    gr = p.backward(do, dht)
    if gr.dh0 is not None and state_v_first:
        gr = gr._replace(dh0=np.ascontiguousarray(np.swapaxes(gr.dh0, -1, -2)))
    return gr


def chunk_gdn2_bwd(q, k, v, g, b, w, do, dht=None, scale=None, initial_state=None, use_qk_l2norm_in_kernel=False,
                   use_gate_in_kernel=False, A_log=None, dt_bias=None, lower_bound=None, cu_seqlens=None,
                   state_v_first=False):
    """numpy: the gradients of chunk_gdn2's (o, final_state) for upstream do (and dht): a
    gdn2.Grads(dq, dk, dv, dg, db, dw, dA_log, ddt_bias, dh0). dg is w.r.t. the g passed (the raw
    pre-activation with the gate in kernel); dA_log / ddt_bias with the gate in kernel, else None."""
    return _np_bwd("gdn2", q, k, v, g, b, w, None, do, dht, scale, initial_state, use_qk_l2norm_in_kernel,
                   use_gate_in_kernel, A_log, dt_bias, lower_bound, cu_seqlens, state_v_first)


def chunk_kda_bwd(q, k, v, g, beta, do, dht=None, scale=None, initial_state=None, use_qk_l2norm_in_kernel=False,
                  use_gate_in_kernel=False, A_log=None, dt_bias=None, lower_bound=None, cu_seqlens=None,
                  state_v_first=False):
    """numpy: gradients of chunk_kda (dbeta [B,T,H] in the db field, dw None)."""
    return _np_bwd("kda", q, k, v, g, None, None, beta, do, dht, scale, initial_state, use_qk_l2norm_in_kernel,
                   use_gate_in_kernel, A_log, dt_bias, lower_bound, cu_seqlens, state_v_first)


def chunk_gated_delta_rule_bwd(q, k, v, g, beta, do, dht=None, scale=None, initial_state=None,
                               use_qk_l2norm_in_kernel=False, cu_seqlens=None, state_v_first=False):
    """numpy: gradients of chunk_gated_delta_rule (dg [B,T,H], dbeta in the db field)."""
    return _np_bwd("gdn", q, k, v, g, None, None, beta, do, dht, scale, initial_state, use_qk_l2norm_in_kernel,
                   False, None, None, None, cu_seqlens, state_v_first)


# ---- decode step on a state pool -------------------------------------------------------------
def decode_step(q, k, v, g, b, w, state_pool, slots, A_log=None, dt_bias=None, scale=None,
                use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False, lower_bound=None):
    """One token for n sequences: q, k, g, b [n,H,K], v, w [n,HV,V]. Row i reads and updates in
    place state_pool[slots[i]] ([n_slots,HV,K,V]: float32, or bf16 — numpy uint16 bit patterns /
    torch.bfloat16); slots[i] < 0 skips the row (its o is zero). Returns o [n,HV,V]. Not
    differentiable. torch CUDA tensors run gdn2_cuda_recurrent_fwd on the current stream."""
    if _is_torch(q):
        from . import torch_ops
        return torch_ops.decode_step(q, k, v, g, b, w, state_pool, slots, A_log, dt_bias, scale,
                                     use_qk_l2norm_in_kernel, use_gate_in_kernel, lower_bound)
    return _core.decode_step_np(q, k, v, g, b, w, state_pool, slots, A_log, dt_bias, scale, use_qk_l2norm_in_kernel,
                                use_gate_in_kernel, lower_bound)


def decode_verify(q, k, v, g, b, w, state_pool, slots, snap_slots=None, A_log=None, dt_bias=None, scale=None,
                  use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False, lower_bound=None):
    """Speculative verify: T draft tokens for n sequences in one call (numpy only), q, k, g, b
    [n,T,H,K], v, w [n,T,HV,V]. Row i starts from state_pool[slots[i]]. With snap_slots ([n,T]
    int32) the state after token t goes to state_pool[snap_slots[i,t]] and state_pool[slots[i]] is
    not written: accepting a drafts is re-pointing the sequence to snap_slots[i,a-1] (a = 0: keep
    slots[i]); no state copy. The snapshot slots must be distinct and not among slots
    (Gdn2ArgumentError otherwise). Without snap_slots the pool is updated in place (T decode steps).
    Returns o [n,T,HV,V]."""
    if _is_torch(q):
        raise NotImplementedError("gdn2: decode_verify takes numpy arrays (torch tensors: gdn2_cuda_recurrent_fwd "
                                  "with snap_slots through the C API)")
    return _core.decode_verify_np(q, k, v, g, b, w, state_pool, slots, snap_slots, A_log, dt_bias, scale,
                                  use_qk_l2norm_in_kernel, use_gate_in_kernel, lower_bound)
