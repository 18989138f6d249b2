"""The Triton kernel of :mod:`sparsefinder.attention.triton_entmax` (imported only from there, lazily)."""

import triton
import triton.language as tl


@triton.jit
def sparse_entmax_fwd(q_ptr, k_ptr, v_ptr, idx_ptr, len_ptr, out_ptr, n, width, dim, scaling, alpha,
                      N_ITER: tl.constexpr, IS_15: tl.constexpr, BLOCK_W: tl.constexpr,
                      BLOCK_D: tl.constexpr):
    row = tl.program_id(0)  # h·n + i
    head = row // n
    offs_w = tl.arange(0, BLOCK_W)
    offs_d = tl.arange(0, BLOCK_D)
    length = tl.load(len_ptr + row)
    wmask = offs_w < length
    dmask = offs_d < dim
    idx = tl.load(idx_ptr + row * width + offs_w, mask=wmask, other=0)
    q = tl.load(q_ptr + row * dim + offs_d, mask=dmask, other=0.0).to(tl.float32)
    kv_off = (head * n + idx)[:, None] * dim + offs_d[None, :]
    kvmask = wmask[:, None] & dmask[None, :]
    keys = tl.load(k_ptr + kv_off, mask=kvmask, other=0.0).to(tl.float32)
    x = tl.sum(keys * q[None, :], 1) * scaling * (alpha - 1.0)
    x = tl.where(wmask, x, float("-inf"))
    x = x - tl.max(x, 0)
    lo = tl.zeros((), tl.float32) - 1.0  # f(lo) >= 0: the max entry alone gives 1
    hi = tl.zeros((), tl.float32)  # f(hi) = 0 - 1 < 0
    inv = 1.0 / (alpha - 1.0)
    for _ in range(N_ITER):
        mid = (lo + hi) * 0.5
        d = tl.maximum(x - mid, 0.0)
        if IS_15:
            f = tl.sum(d * d, 0) - 1.0
        else:
            f = tl.sum(tl.where(d > 0, tl.exp(tl.log(d) * inv), 0.0), 0) - 1.0
        lo = tl.where(f >= 0, mid, lo)
        hi = tl.where(f >= 0, hi, mid)
    tau = lo
    if IS_15:  # exact threshold on the support the bisection found
        supp = x > lo
        cnt = tl.sum(supp.to(tl.float32), 0)
        s1 = tl.sum(tl.where(supp, x, 0.0), 0)
        s2 = tl.sum(tl.where(supp, x * x, 0.0), 0)
        tau = (s1 - tl.sqrt(tl.maximum(s1 * s1 - cnt * (s2 - 1.0), 0.0))) / tl.maximum(cnt, 1.0)
    d = tl.maximum(x - tau, 0.0)
    if IS_15:
        p = d * d
    else:
        p = tl.where(d > 0, tl.exp(tl.log(d) * inv), 0.0)
    p = tl.where(wmask, p, 0.0)
    vals = tl.load(v_ptr + kv_off, mask=kvmask, other=0.0).to(tl.float32)
    out = tl.sum(p[:, None] * vals, 0)
    tl.store(out_ptr + row * dim + offs_d, out, mask=dmask)
