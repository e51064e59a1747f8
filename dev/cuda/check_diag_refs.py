"""Algebra check (float64, numpy) of the reference-row scheme of intra_vjp_tc with diag_tc on
(src/cuda/chunk_device.cuh): blocked sums with per-block reference rows, the diagonal blocks
included (row sums at ref 16t, column sums at ref 16t+15 after moving the later blocks' sums there),
against the direct per-element sums. The fragment layout is not modelled (it is the validated
off-diagonal code's); this checks the exponents and the rescaling. Prints max relative errors
(expect ~1e-15).  python3 dev/cuda/check_diag_refs.py"""
import numpy as np

rng = np.random.default_rng(0)
C, K, scale = 64, 8, 0.3
G = np.cumsum(-rng.uniform(0.01, 0.5, (C, K)) / np.log(2), axis=0)  # log2 cumulative decay
G -= G[31]
q, k, b = rng.standard_normal((C, K)), rng.standard_normal((C, K)), rng.uniform(0, 1, (C, K))
dAqk, dT = np.tril(rng.standard_normal((C, C))), np.tril(rng.standard_normal((C, C)), -1)

# direct: dq_in_r = scale sum_{s<=r} dAqk_rs k_s 2^(G_r-G_s); E'_r likewise with dT (s < r);
# dkt_s = scale sum_{r2>=s} dAqk_r2,s q_r2 2^(G_r2-G_s) + sum_{r2>s} dT_r2,s b_r2 k_r2 2^(G_r2-G_s)
F = 2.0 ** (G[:, None, :] - G[None, :, :])  # F[r, s] = 2^(G_r - G_s)
dq = scale * np.einsum("rs,sd,rsd->rd", dAqk, k, F)
ep = np.einsum("rs,sd,rsd->rd", dT, k, F)
dkt = scale * np.einsum("rs,rd,rsd->sd", dAqk, q, F) + np.einsum("rs,rd,rsd->sd", dT, b * k, F)

dq2, ep2, dkt2 = np.zeros((C, K)), np.zeros((C, K)), np.zeros((C, K))
for t in range(4):
    rb, R = 16 * t, slice(16 * t, 16 * t + 16)
    cq, ce, ckq, ckb = (np.zeros((16, K)) for _ in range(4))
    for j in range(t + 1):  # earlier blocks (clamped factor <= 1) and the diagonal (factor >= 1)
        S = slice(16 * j, 16 * j + 16)
        e = G[rb] - G[S]
        Bk = k[S] * 2.0 ** (e if j == t else np.minimum(e, 0))
        cq += dAqk[R, S] @ Bk
        ce += dT[R, S] @ Bk
    for i in range(t + 1, 4):  # later blocks at ref 16(t+1)
        S = slice(16 * i, 16 * i + 16)
        x = 2.0 ** np.minimum(G[S] - G[rb + 16], 0)
        ckq += dAqk[S, R].T @ (q[S] * x)
        ckb += dT[S, R].T @ (b[S] * k[S] * x)
    if t < 3:  # move them to ref 16t+15
        mv = 2.0 ** (G[rb + 16] - G[rb + 15])
        ckq, ckb = ckq * mv, ckb * mv
    x = 2.0 ** (G[R] - G[rb + 15])  # the diagonal block's column sums
    ckq += dAqk[R, R].T @ (q[R] * x)
    ckb += dT[R, R].T @ (b[R] * k[R] * x)
    xa, yd = 2.0 ** np.minimum(G[R] - G[rb], 0), 2.0 ** np.minimum(G[rb + 15] - G[R], 0)
    dq2[R], ep2[R], dkt2[R] = scale * xa * cq, xa * ce, scale * yd * ckq + yd * ckb

for name, a, c in (("dq_in", dq, dq2), ("E'", ep, ep2), ("dkt", dkt, dkt2)):
    print(f"{name:6s} max|blocked - direct| / max|direct| = {np.abs(a - c).max() / np.abs(a).max():.2e}")
