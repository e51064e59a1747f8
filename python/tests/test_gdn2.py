"""Tests of the gdn2 Python package on the CPU: numpy always, torch when importable. Plain script
(no pytest): one line per check, "PASS ..." / "FAIL ...", then "N passed, N failed, 0 skipped";
exit status 1 when a check failed. tests/test_python.c runs it in the C suite (`make test`).
The library: GDN2_LIBRARY, else the package's copy, else build/libgdn2.so."""
import os
import sys
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ctypes  # noqa: E402
import numpy as np  # noqa: E402

import gdn2  # noqa: E402

n_pass = n_fail = 0


def check(ok, msg):
    global n_pass, n_fail
    print("%s %s" % ("PASS" if ok else "FAIL", msg), flush=True)
    if ok:
        n_pass += 1
    else:
        n_fail += 1


def rel(x, ref):
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    den = np.sqrt((ref ** 2).sum())
    num = np.sqrt(((x - ref) ** 2).sum())
    return num / den if den else num


def raises(exc, fn, *a, **kw):
    try:
        fn(*a, **kw)
    except exc as e:
        return str(e)
    except Exception as e:  # noqa: BLE001
        return None if not isinstance(e, exc) else str(e)
    return None


def inputs(rng, B, T, H, HV, K, V, N=None, dtype=np.float64):
    N = B if N is None else N
    q, k = rng.standard_normal((2, B, T, H, K))
    v = rng.standard_normal((B, T, HV, V))
    g = -rng.random((B, T, H, K)) * 0.5
    b = rng.random((B, T, H, K))
    w = rng.random((B, T, HV, V))
    h0 = rng.standard_normal((N, HV, K, V)) * 0.3
    return [x.astype(dtype) for x in (q, k, v, g, b, w, h0)]


def naive(q, k, v, g, b, w, h0, scale=None, l2=False, gate=False, A_log=None, dt_bias=None, lb=None):
    """Independent float64 recurrence in numpy (the README's formula), B sequences."""
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    G = HV // H
    scale = K ** -0.5 if scale is None else scale
    A_log = np.zeros(H) if A_log is None else A_log
    dt_bias = np.zeros(H * K) if dt_bias is None else dt_bias.reshape(-1)
    o = np.zeros((B, T, HV, V))
    S = np.array(h0, np.float64).copy() if h0 is not None else np.zeros((B, HV, K, V))
    for bb in range(B):
        for t in range(T):
            for hv in range(HV):
                h = hv // G
                qq, kk = q[bb, t, h].copy(), k[bb, t, h].copy()
                if l2:
                    qq /= np.sqrt((qq ** 2).sum() + 1e-6)
                    kk /= np.sqrt((kk ** 2).sum() + 1e-6)
                gg = g[bb, t, h]
                if gate:
                    a, u = np.exp(A_log[h]), gg + dt_bias[h * K:(h + 1) * K]
                    gg = lb / (1 + np.exp(-a * u)) if lb else -a * np.log1p(np.exp(u))
                St = np.exp(gg)[:, None] * S[bb, hv]
                St = St - np.outer(kk, (b[bb, t, h] * kk) @ St) + np.outer(kk, w[bb, t, hv] * v[bb, t, hv])
                S[bb, hv] = St
                o[bb, t, hv] = scale * St.T @ qq
    return o, S


def test_numpy():
    rng = np.random.default_rng(1)
    check(gdn2.version() == "0.1.0" and gdn2.version_number() == 100 and gdn2.__version__ == gdn2.version(),
          "version %s (%d), library %s" % (gdn2.version(), gdn2.version_number(), gdn2.library_path))

    # the float64 path against an independent numpy recurrence
    q, k, v, g, b, w, h0 = inputs(rng, 2, 11, 2, 4, 8, 6)
    A, dtb = rng.standard_normal(2) * 0.3, rng.standard_normal(2 * 8) * 0.3
    for name, kw, nk in (("plain", {}, {}),
                         ("l2norm+gate", dict(use_qk_l2norm_in_kernel=True, use_gate_in_kernel=True, A_log=A,
                                              dt_bias=dtb), dict(l2=True, gate=True, A_log=A, dt_bias=dtb)),
                         ("gate lower_bound, no A_log/dt_bias", dict(use_gate_in_kernel=True, lower_bound=-2.0,
                                                                     use_qk_l2norm_in_kernel=True),
                          dict(gate=True, lb=-2.0, l2=True))):
        gg = g if not kw.get("use_gate_in_kernel") else np.tanh(g * 3)
        o, ht = gdn2.chunk_gdn2(q, k, v, gg, b, w, initial_state=h0, output_final_state=True, **kw)
        on, sn = naive(q, k, v, gg, b, w, h0, **nk)
        check(o.dtype == np.float64 and rel(o, on) < 1e-12 and rel(ht, sn) < 1e-12,
              "float64 chunk_gdn2 (reference) = numpy recurrence, %s: o %.1e, ht %.1e" % (name, rel(o, on), rel(ht, sn)))

    # fp32 kernels against the float64 reference: GVA, h0, gate, varlen, recurrent
    cases = [("GVA h0", (1, 130, 2, 4, 16, 8), {}),
             ("gate A_log dt_bias [H,K]", (2, 70, 2, 2, 16, 16),
              dict(use_gate_in_kernel=True, A_log=rng.standard_normal(2) * 0.3,
                   dt_bias=rng.standard_normal((2, 16)) * 0.3)),
             ("gate without A_log / dt_bias", (1, 65, 1, 1, 8, 8), dict(use_gate_in_kernel=True)),
             ("l2norm scale", (1, 40, 2, 2, 32, 16), dict(use_qk_l2norm_in_kernel=True, scale=0.5))]
    for name, (B, T, H, HV, K, V), kw in cases:
        q, k, v, g, b, w, h0 = inputs(rng, B, T, H, HV, K, V)
        if not kw.get("use_qk_l2norm_in_kernel"):
            k = k / np.linalg.norm(k, axis=-1, keepdims=True)
        if kw.get("use_gate_in_kernel"):
            g = rng.standard_normal(g.shape)
        o64, h64 = gdn2.chunk_gdn2(q, k, v, g, b, w, initial_state=h0, output_final_state=True, **kw)
        f = [x.astype(np.float32) for x in (q, k, v, g, b, w, h0)]
        o, ht = gdn2.chunk_gdn2(*f[:6], initial_state=f[6], output_final_state=True, **kw)
        orc, hrc = gdn2.fused_recurrent_gdn2(*f[:6], initial_state=f[6], output_final_state=True, **kw)
        check(o.dtype == np.float32 and ht.dtype == np.float32 and rel(o, o64) < 1e-5 and rel(ht, h64) < 1e-5
              and rel(orc, o64) < 1e-5 and rel(hrc, h64) < 1e-5,
              "fp32 chunk / recurrent vs float64, %s: o %.1e / %.1e, ht %.1e / %.1e"
              % (name, rel(o, o64), rel(orc, o64), rel(ht, h64), rel(hrc, h64)))
        do = rng.standard_normal(o.shape)
        dht = rng.standard_normal(ht.shape)
        g64 = gdn2.chunk_gdn2_bwd(q, k, v, g, b, w, do, dht, initial_state=h0, **kw)
        g32 = gdn2.chunk_gdn2_bwd(*f[:6], do.astype(np.float32), dht.astype(np.float32), initial_state=f[6], **kw)
        worst = max(rel(a, r) for a, r in zip(g32, g64) if r is not None)
        check(worst < 1e-4, "fp32 chunk backward vs float64, %s: worst gradient %.1e" % (name, worst))
    # absent A_log / dt_bias = zeros
    q, k, v, g, b, w, h0 = inputs(rng, 1, 20, 2, 2, 8, 8)
    g = rng.standard_normal(g.shape)
    o1, _ = gdn2.chunk_gdn2(q, k, v, g, b, w, use_gate_in_kernel=True, use_qk_l2norm_in_kernel=True)
    o2, _ = gdn2.chunk_gdn2(q, k, v, g, b, w, use_gate_in_kernel=True, use_qk_l2norm_in_kernel=True,
                            A_log=np.zeros(2), dt_bias=np.zeros(16))
    gr1 = gdn2.chunk_gdn2_bwd(q, k, v, g, b, w, np.ones_like(o1), use_gate_in_kernel=True, use_qk_l2norm_in_kernel=True)
    check(np.array_equal(o1, o2) and gr1.dA_log.shape == (2,) and gr1.ddt_bias.shape == (16,),
          "A_log / dt_bias absent with the gate in kernel = zeros (and their gradients still come back)")

    # finite differences of the float64 backward (one random direction)
    q, k, v, g, b, w, h0 = inputs(rng, 1, 7, 1, 2, 4, 3)
    kw = dict(use_qk_l2norm_in_kernel=True, initial_state=h0)
    do = rng.standard_normal((1, 7, 2, 3))
    gr = gdn2.chunk_gdn2_bwd(q, k, v, g, b, w, do, **kw)
    xs = [q, k, v, g, b, w]
    dirs = [rng.standard_normal(x.shape) for x in xs]
    eps = 1e-6
    fp = gdn2.chunk_gdn2(*[x + eps * d for x, d in zip(xs, dirs)], **kw)[0]
    fm = gdn2.chunk_gdn2(*[x - eps * d for x, d in zip(xs, dirs)], **kw)[0]
    fd = ((fp - fm) * do).sum() / (2 * eps)
    an = sum((gx * d).sum() for gx, d in zip(gr[:6], dirs))
    check(abs(fd - an) < 1e-6 * max(1, abs(an)), "float64 backward = finite differences: %.9f vs %.9f" % (an, fd))

    # varlen and state_v_first
    q, k, v, g, b, w, _ = inputs(rng, 1, 100, 2, 2, 8, 8)
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    cu = np.array([0, 30, 31, 100])
    h0 = rng.standard_normal((3, 2, 8, 8))
    o, ht = gdn2.chunk_gdn2(*[x.astype(np.float32) for x in (q, k, v, g, b, w)], initial_state=h0.astype(np.float32),
                            output_final_state=True, cu_seqlens=cu)
    ok = True
    for i in range(3):
        s, e = cu[i], cu[i + 1]
        oi, hi = gdn2.chunk_gdn2(*[x[:, s:e] for x in (q, k, v, g, b, w)], initial_state=h0[i:i + 1],
                                 output_final_state=True)
        ok = ok and rel(o[:, s:e], oi) < 1e-5 and rel(ht[i:i + 1], hi) < 1e-5
    check(ok, "cu_seqlens [0,30,31,100]: each packed sequence equals its own call")
    ov, hv = gdn2.chunk_gdn2(q, k, v, g, b, w, initial_state=np.swapaxes(h0[:1], -1, -2), output_final_state=True,
                             state_v_first=True)
    ok_, hk = gdn2.chunk_gdn2(q, k, v, g, b, w, initial_state=h0[:1], output_final_state=True)
    check(np.array_equal(ov, ok_) and np.array_equal(hv, np.swapaxes(hk, -1, -2)),
          "state_v_first: states [N,HV,V,K] in and out")

    # KDA and GDN entry points (fp32 C collapse kernels) against the float64 expansion
    q, k, v, g, b, w, h0 = inputs(rng, 2, 50, 2, 4, 8, 8)
    beta = rng.random((2, 50, 2))
    gs = -rng.random((2, 50, 2))
    for name, fn, fr, gg in (("chunk_kda", gdn2.chunk_kda, gdn2.fused_recurrent_kda, g),
                             ("chunk_gated_delta_rule", gdn2.chunk_gated_delta_rule, None, gs)):
        o64, h64 = fn(q, k, v, gg, beta, initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=True)
        f = [x.astype(np.float32) for x in (q, k, v, gg, beta, h0)]
        o32, h32 = fn(*f[:5], initial_state=f[5], output_final_state=True, use_qk_l2norm_in_kernel=True)
        bx = np.broadcast_to(beta[..., None], g.shape)
        wx = np.broadcast_to(np.repeat(beta, 2, axis=2)[..., None], v.shape)
        gx = gg if gg.ndim == 4 else np.broadcast_to(gg[..., None], g.shape)
        oref, _ = gdn2.chunk_gdn2(q, k, v, gx, bx, wx, initial_state=h0, use_qk_l2norm_in_kernel=True)
        msg = "o %.1e, ht %.1e, float64 = GDN-2 with b = w = beta %.1e" % (rel(o32, o64), rel(h32, h64), rel(o64, oref))
        ok = rel(o32, o64) < 1e-5 and rel(h32, h64) < 1e-5 and rel(o64, oref) < 1e-12
        if fr is not None:
            orc, _ = fr(*f[:5], initial_state=f[5], use_qk_l2norm_in_kernel=True)
            ok = ok and rel(orc, o64) < 1e-5
            msg += ", recurrent %.1e" % rel(orc, o64)
        check(ok, "%s fp32 vs float64: %s" % (name, msg))
        bwd = gdn2.chunk_kda_bwd if fn is gdn2.chunk_kda else gdn2.chunk_gated_delta_rule_bwd
        do = rng.standard_normal(o64.shape)
        a = bwd(*f[:5], do.astype(np.float32), initial_state=f[5], use_qk_l2norm_in_kernel=True)
        r = bwd(q, k, v, gg, beta, do, initial_state=h0, use_qk_l2norm_in_kernel=True)
        worst = max(rel(x, y) for x, y in zip(a, r) if y is not None)
        check(worst < 1e-4 and a.db.shape == beta.shape and a.dg.shape == gg.shape,
              "%s backward fp32 vs float64: worst %.1e (dbeta %s, dg %s)" % (name, worst, a.db.shape, a.dg.shape))
    o1, _ = gdn2.fused_recurrent_gated_delta_rule(*[x.astype(np.float32) for x in (q, k, v)], g=gs.astype(np.float32),
                                                  beta=beta.astype(np.float32), initial_state=h0.astype(np.float32))
    o2, _ = gdn2.chunk_gated_delta_rule(q, k, v, gs, beta, initial_state=h0)
    check(rel(o1, o2) < 1e-5, "fused_recurrent_gated_delta_rule (g scalar) vs chunk float64: %.1e" % rel(o1, o2))

    # decode steps on a state pool (slots permuted, one row skipped) = the recurrent form
    B, T, H, HV, K, V = 3, 6, 2, 2, 8, 8
    q, k, v, g, b, w, h0 = [x.astype(np.float32) for x in inputs(rng, B, T, H, HV, K, V)]
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    pool = np.zeros((5, HV, K, V), np.float32)
    slots = np.array([4, -1, 1], np.int32)
    pool[4], pool[1] = h0[0], h0[2]
    outs = [gdn2.decode_step(q[:, t], k[:, t], v[:, t], g[:, t], b[:, t], w[:, t], pool, slots) for t in range(T)]
    od = np.stack(outs, 1)
    orf, hrf = gdn2.chunk_gdn2(q, k, v, g, b, w, initial_state=h0, output_final_state=True)
    check(rel(od[0], orf[0]) < 1e-5 and rel(od[2], orf[2]) < 1e-5 and not od[1].any() and rel(pool[4], hrf[0]) < 1e-5
          and rel(pool[1], hrf[2]) < 1e-5 and not pool[0].any(),
          "decode_step on a pool with slots [4,-1,1]: o and states = the chunk form (%.1e), skipped row zero"
          % rel(od[0], orf[0]))
    poolb = np.zeros((5, HV, K, V), np.uint16)
    for i, j in ((4, 0), (1, 2)):  # h0 rounded to bf16 (truncation: exact enough for this check)
        poolb[i] = (h0[j].view(np.uint32) >> 16).astype(np.uint16)
    for t in range(T):
        ob = gdn2.decode_step(q[:, t], k[:, t], v[:, t], g[:, t], b[:, t], w[:, t], poolb, np.array([4, -1, 1], np.int32))
    pool32 = (poolb.astype(np.uint32) << 16).view(np.float32)
    check(rel(ob[[0, 2]], outs[-1][[0, 2]]) < 2e-2 and rel(pool32[[4, 1]], pool[[4, 1]]) < 2e-2,
          "decode_step with a bf16 (uint16) state pool: o %.1e, states %.1e from the fp32 pool"
          % (rel(ob[[0, 2]], outs[-1][[0, 2]]), rel(pool32[[4, 1]], pool[[4, 1]])))

    # speculative verify: T = 4 drafts per row, snapshots into pool slots, commit by re-pointing
    Td = 4
    pv = np.zeros((12, HV, K, V), np.float32)
    pv[4], pv[1] = h0[0], h0[2]
    src = pv.copy()
    snap = np.array([[0, 2, 3, 5], [-7, -7, -7, -7], [6, 7, 8, 9]], np.int32)  # row 1 skipped: not read
    ov = gdn2.decode_verify(q[:, :Td], k[:, :Td], v[:, :Td], g[:, :Td], b[:, :Td], w[:, :Td], pv, slots, snap)
    hr = [gdn2.chunk_gdn2(q[:, :a], k[:, :a], v[:, :a], g[:, :a], b[:, :a], w[:, :a], initial_state=h0,
                          output_final_state=True)[1] for a in range(1, Td + 1)]
    es = max(rel(pv[snap[r, a]], hr[a][r]) for r in (0, 2) for a in range(Td))
    check(ov.shape == (B, Td, HV, V) and rel(ov[[0, 2]], od[[0, 2], :Td]) < 1e-5 and es < 1e-5 and not ov[1].any()
          and np.array_equal(pv[[4, 1]], src[[4, 1]]),
          "decode_verify T=4 with snap_slots: o = the decode steps, snapshot a = the chunk form over a tokens (%.1e), "
          "source slots unchanged, skipped row zero" % es)
    # accept 2 drafts of row 0 (re-point to snap[0,1]) and none of row 2 (keep slot 1), then decode
    # steps from there: row 0 tokens 2..5, row 2 tokens 0..3
    cur = np.array([snap[0, 1], -1, 1], np.int32)
    for t in range(2, T):
        tt = [t, 0, t - 2]
        gdn2.decode_step(q[[0, 1, 2], tt], k[[0, 1, 2], tt], v[[0, 1, 2], tt], g[[0, 1, 2], tt], b[[0, 1, 2], tt],
                         w[[0, 1, 2], tt], pv, cur)
    check(rel(pv[cur[0]], hrf[0]) < 1e-5 and rel(pv[1], hr[3][2]) < 1e-5,
          "decode_verify commit: row 0 accepts 2 (then 4 steps), row 2 accepts 0 (then 4 steps): final states = the "
          "chunk form (%.1e, %.1e)" % (rel(pv[cur[0]], hrf[0]), rel(pv[1], hr[3][2])))
    m = raises(gdn2.Gdn2ArgumentError, gdn2.decode_verify, q[:, :Td], k[:, :Td], v[:, :Td], g[:, :Td], b[:, :Td],
               w[:, :Td], pv, slots, np.array([[0, 2, 3, 4], [0, 0, 0, 0], [6, 7, 8, 9]], np.int32))
    check(m is not None and "snap_slots[0,3]=4 is also slots[0]" in m, "decode_verify: snapshot slot = a source slot: %s" % m)

    # errors: the C library's message as an exception; refusals
    q, k, v, g, b, w, h0 = inputs(rng, 1, 5, 1, 1, 4, 4)
    m = raises(gdn2.Gdn2ArgumentError, gdn2.chunk_gdn2, q, k, v, -g, b, w)
    check(m is not None and "log-decay" in m and "g[" in m, "positive g: Gdn2ArgumentError: %s" % m)
    m = raises(ValueError, gdn2.chunk_gdn2, q, k, v, g[..., :3], b, w)
    check(m is not None and "g has shape" in m, "bad shape: ValueError: %s" % m)
    m = raises(NotImplementedError, gdn2.chunk_gdn2, q, k, v, g, b, w, return_intermediate_states=True)
    check(m is not None and "per-chunk" in m, "return_intermediate_states refused: %s" % (m or "")[:80])
    m = raises(TypeError, gdn2.chunk_gdn2, q, k, v, g, b, w, no_such_option=1)
    check(m is not None and "no_such_option" in m, "unknown keyword: TypeError: %s" % m)
    m = raises(ValueError, gdn2.chunk_gdn2, q, k, v, g, b, w, chunk_size=32)
    check(m is not None, "chunk_size != 64 refused: %s" % m)
    o1, _ = gdn2.chunk_gdn2(q, k, v, g, b, w)
    o2, _ = gdn2.chunk_gdn2(q, k, v, g, b, w, disable_recompute=True, safe_gate=True)
    check(np.array_equal(o1, o2), "fla's disable_recompute / safe_gate accepted on the CPU (same result)")
    m = raises(gdn2.Gdn2Error, gdn2.chunk_gdn2, np.full_like(q, np.nan), k, v, g, b, w)
    check(m is not None and "nan" in m, "NaN input: %s" % m)


def test_torch(torch):
    rng = np.random.default_rng(2)
    tt = lambda x, dt=torch.float64: torch.tensor(x, dtype=dt, requires_grad=True)  # noqa: E731
    # fp32 CPU tensors = the numpy path, autograd = chunk_gdn2_bwd
    q, k, v, g, b, w, h0 = inputs(rng, 1, 70, 2, 4, 16, 8, dtype=np.float32)
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    T = [torch.tensor(x, requires_grad=True) for x in (q, k, v, g, b, w, h0)]
    o, ht = gdn2.chunk_gdn2(*T[:6], initial_state=T[6], output_final_state=True)
    on, hn = gdn2.chunk_gdn2(q, k, v, g, b, w, initial_state=h0, output_final_state=True)
    do, dht = rng.standard_normal(on.shape).astype(np.float32), rng.standard_normal(hn.shape).astype(np.float32)
    (o * torch.from_numpy(do)).sum().backward(retain_graph=True)
    (ht * torch.from_numpy(dht)).sum().backward()
    gn = gdn2.chunk_gdn2_bwd(q, k, v, g, b, w, do, dht, initial_state=h0)
    worst = max(rel(t.grad.numpy(), r) for t, r in zip(T, [gn.dq, gn.dk, gn.dv, gn.dg, gn.db, gn.dw, gn.dh0]))
    check(isinstance(o, torch.Tensor) and o.dtype == torch.float32 and np.array_equal(o.detach().numpy(), on)
          and worst < 1e-6, "torch fp32 CPU: forward = numpy, autograd grads = chunk_gdn2_bwd (worst %.1e)" % worst)
    # disable_recompute=True on CPU tensors: the fp32 saved pair (gdn2_chunk_fwd_save / bwd_saved), at K = V =
    # 64 where it also keeps the WY factors; the same gradients as the recomputing backward (~1e-7); the
    # saved buffer is dropped after one backward (a second one, retain_graph, recomputes: the same again)
    qs, ks, vs, gs, bs, ws, h0s = inputs(rng, 2, 150, 2, 2, 64, 64, dtype=np.float32)
    ks /= np.linalg.norm(ks, axis=-1, keepdims=True)
    dos = rng.standard_normal(vs.shape).astype(np.float32)
    G, seen, call0 = [], [], gdn2._lib.call
    gdn2._lib.call = lambda name, *a: (seen.append(name), call0(name, *a))[1]  # which C entry points ran
    for keep in (False, True):
        Ts = [torch.tensor(x, requires_grad=True) for x in (qs, ks, vs, gs, bs, ws, h0s)]
        os_, _ = gdn2.chunk_gdn2(*Ts[:6], initial_state=Ts[6], disable_recompute=keep)
        (os_ * torch.from_numpy(dos)).sum().backward(retain_graph=True)
        G.append([t.grad.clone().numpy() for t in Ts])
        if keep:
            for t in Ts:
                t.grad = None
            (os_ * torch.from_numpy(dos)).sum().backward()
            G.append([t.grad.numpy() for t in Ts])
    gdn2._lib.call = call0
    check(seen.count("gdn2_chunk_fwd_save") == 1 and seen.count("gdn2_chunk_bwd_saved") == 1 and
          seen.count("gdn2_chunk_bwd") == 2, "torch CPU keep: one saving forward, one saved backward, the other two "
          "backwards recompute (%s)" % ", ".join(seen))
    wk = max(rel(a, r) for a, r in zip(G[1], G[0]))
    w2 = max(rel(a, r) for a, r in zip(G[2], G[0]))
    check(wk < 1e-6 and w2 < 1e-6, "torch fp32 CPU, disable_recompute=True (the saved pair): grads vs recomputing "
          "%.1e, a second backward %.1e (< 1e-6)" % (wk, w2))
    xb = [t.detach().to(torch.bfloat16) for t in T[:6]]
    ob, _ = gdn2.chunk_gdn2(*xb)
    o32, _ = gdn2.chunk_gdn2(*[x.float().numpy() for x in xb])
    check(ob.dtype == torch.bfloat16 and rel(ob.float().numpy(), o32) < 1e-2,
          "torch bf16 CPU inputs: bf16 output (computed in fp32), %.1e" % rel(ob.float().numpy(), o32))

    gc = torch.autograd.gradcheck
    q, k, v, g, b, w, h0 = inputs(rng, 1, 9, 1, 2, 4, 3)
    Q, K_, Vv, G, Bb, W, H0 = (tt(x) for x in (q, k, v, g, b, w, h0))
    both = lambda f: (lambda *a: tuple(f(*a)))  # noqa: E731
    ok = gc(both(lambda q_, k_, v_, g_, b_, w_, h_: gdn2.chunk_gdn2(q_, k_, v_, g_, b_, w_, initial_state=h_,
                                                                      output_final_state=True,
                                                                      use_qk_l2norm_in_kernel=True)),
            (Q, K_, Vv, G, Bb, W, H0))
    check(ok, "gradcheck chunk_gdn2 (float64: q k v g b w h0, o and final state, l2norm)")
    A, Dt, Graw = tt(rng.standard_normal(1) * 0.3), tt(rng.standard_normal((1, 4)) * 0.3), tt(rng.standard_normal(g.shape))
    ok = gc(both(lambda g_, A_, D_: gdn2.chunk_gdn2(Q, K_, Vv, g_, Bb, W, use_gate_in_kernel=True, A_log=A_,
                                                    dt_bias=D_, output_final_state=True, use_qk_l2norm_in_kernel=True)),
            (Graw, A, Dt))
    ok2 = gc(lambda g_: gdn2.chunk_gdn2(Q, K_, Vv, g_, Bb, W, use_gate_in_kernel=True, lower_bound=-3.0,
                                        use_qk_l2norm_in_kernel=True)[0], (Graw,))
    check(ok and ok2, "gradcheck gate in kernel (g, A_log, dt_bias [H,K]); lower_bound without A_log / dt_bias")
    beta = tt(rng.random((1, 9, 1)))
    gs = tt(-rng.random((1, 9, 1)))
    ok = gc(both(lambda q_, be, g_: gdn2.chunk_kda(q_, K_, Vv, g_, be, initial_state=H0, output_final_state=True,
                                                    use_qk_l2norm_in_kernel=True)), (Q, beta, G))
    ok2 = gc(lambda q_, be, g_: gdn2.chunk_gated_delta_rule(q_, K_, Vv, g_, be, use_qk_l2norm_in_kernel=True)[0],
             (Q, beta, gs))
    ok3 = gc(lambda q_, be: gdn2.fused_recurrent_kda(q_, K_, Vv, G, be, use_qk_l2norm_in_kernel=True)[0], (Q, beta))
    check(ok and ok2 and ok3, "gradcheck chunk_kda, chunk_gated_delta_rule, fused_recurrent_kda (beta, g, q)")
    q, k, v, g, b, w, _ = inputs(rng, 1, 12, 1, 1, 4, 3)
    h0 = rng.standard_normal((2, 1, 3, 4))
    cu = torch.tensor([0, 5, 12])
    args = [tt(x) for x in (q, k, v, g, b, w, h0)]
    ok = gc(both(lambda q_, g_, w_, h_: gdn2.chunk_gdn2(q_, args[1], args[2], g_, args[4], w_, initial_state=h_,
                                                        output_final_state=True, cu_seqlens=cu, state_v_first=True,
                                                        use_qk_l2norm_in_kernel=True)),
            (args[0], args[3], args[5], args[6]))
    check(ok, "gradcheck varlen (cu_seqlens [0,5,12]) with state_v_first states")
    # decode step on torch tensors (CPU pool updated in place)
    q, k, v, g, b, w, h0 = [torch.tensor(x, dtype=torch.float32) for x in inputs(rng, 2, 3, 1, 1, 4, 4)]
    pool = torch.zeros(3, 1, 4, 4)
    for t in range(3):
        od = gdn2.decode_step(q[:, t], k[:, t], v[:, t], g[:, t], b[:, t], w[:, t], pool, torch.tensor([2, 0]))
    orc, hrc = gdn2.fused_recurrent_gdn2(q, k, v, g, b, w, output_final_state=True)
    check(rel(od.numpy(), orc[:, -1].numpy()) < 1e-5 and rel(pool[[2, 0]].numpy(), hrc.numpy()) < 1e-5,
          "torch decode_step: in-place pool = fused_recurrent_gdn2 final states")


def test_struct_layouts():
    """The ctypes structs against the C compiler's sizes: GDN2_C_SIZES="name=size,..." (tests/test_python.c
    sets it from sizeof); a field added on one side only is caught here, on the CPU."""
    spec = os.environ.get("GDN2_C_SIZES")
    if not spec:
        print("note: GDN2_C_SIZES not set (tests/test_python.c sets it): struct sizes not compared")
        return
    from gdn2 import _lib as L
    py = {"gdn2_dims": L.Dims, "gdn2_opts": L.Opts, "gdn2_fwd_tensors": L.FwdTensors,
          "gdn2_bwd_tensors": L.BwdTensors, "gdn2_decode_tensors": L.DecodeTensors,
          "gdn2_cuda_fwd_args": L.CudaFwdArgs, "gdn2_cuda_bwd_args": L.CudaBwdArgs,
          "gdn2_cuda_recurrent_args": L.CudaRecurrentArgs}
    for item in spec.split(","):
        name, size = item.split("=")
        got = ctypes.sizeof(py[name])
        check(got == int(size), "ctypes struct of %s: %d bytes, C: %s" % (name, got, size))


def main():
    try:
        test_struct_layouts()
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        check(False, "struct layout check raised")
    try:
        test_numpy()
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        check(False, "numpy tests raised")
    try:
        import torch
    except ImportError:
        torch = None
    if torch is None and os.environ.get("CI") == "true":
        # CI installs Debian's python3-torch (.ci/run): there the autograd wiring must be tested
        check(False, "torch is not importable under CI (apt-get install python3-torch): the torch tests did not run")
    elif torch is None:
        print("note: torch is not importable: the torch tests were not run (torch is optional; not counted)")
    else:
        print("torch %s" % torch.__version__)
        try:
            test_torch(torch)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            check(False, "torch tests raised")
    print("%d passed, %d failed, 0 skipped" % (n_pass, n_fail))
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
