"""CPU row kernels for α = 1.5: one fused pass per query row, compiled by Numba (no grad).

The torch path of :mod:`sparsefinder.attention.sparse` spends most of its time between
operators: gathers, padding to width classes, ``index_add``, ``nonzero`` over whole chunks.
These kernels do the same work row by row in compiled loops, parallel over rows
(``numba.prange``), with nothing materialised but the result:

- :func:`sparse_rows`: attention of each query over its kept keys (``index``/``counts``):
  the kept scores, their exact α-entmax threshold and ``Σ p_j v_j``; work grows with the kept
  pairs;
- :func:`row_thresholds`: the exact α-entmax threshold of each row of a score matrix;
- :func:`select_rows`: the keys of each row whose score clears its threshold plus a margin,
  as the rows of a :class:`~sparsefinder.pattern.Pattern`;
- :func:`thresholded_rows`: both in one pass a row, over a chunk's approximate scores: the
  keys a row keeps stay in a buffer and are attended at once, no padded index is built between
  prediction and compute (415 tokens, a layer: 4.0–5.9 ms with the approximate scores, against
  5.3–8.0 for prediction then sparse compute); :func:`certified_thresholded_rows` is its certified form
  (the threshold predictor's route in a model under the distance objective);
- :func:`certified_rows`: exact attention from exact score rows and a predicted pattern (the
  threshold of the predicted keys starts the row's exact threshold; the support keys the pattern
  missed are added; recall 1 by construction), with the certified pattern's rows;
- :func:`certified_probabilities`: the same without a pattern to keep (the ``exact`` mode, the
  certified mode in a model): each row of exact scores becomes its α-entmax probabilities in place,
  then one vectorised pass writes ``((z − t) / 2)₊²`` (zeros outside the row's keys, so a band or padding
  needs no mask); the output is one matrix product with the values (accumulating ``Σ p v``
  key by key in the row kernel cost more: 512 tokens, exact attention 1.49 → 1.26× softmax's time);
- :func:`exact_attention`, :func:`thresholded_attention`, :func:`certified_thresholded_attention`: the ``exact``
  mode and the threshold predictor's routes in a model, by tasks of ``EXACT_TASK_QUERIES`` queries of one head that
  compute their own scores by BLAS products (Numba's ``np.dot``, BLAS held to one thread) and run the row passes
  above on them while they are in cache (4,096 tokens: the whole model 8–19 % faster than by chunks of torch
  products).

Thresholds are exact: Newton's method on ``√Σ (x − τ)₊² = 1`` rises monotonically from a lower
bound (method.md §1) and ends on the closed-form root of the keys above it (no sort). The square
root makes the function nearly linear far below the root, where Newton on ``Σ (x − τ)₊² = 1`` only
halves the distance each step: 3.4–4.7 steps a row instead of 4.3–6.8 on model rows of 415 keys.
Each step is one branch-free pass over the row (``max(x − τ, 0)``), which LLVM turns into SIMD
code: a handful of passes of a 512-key row cost less than one branchy pass did. The row maximum
Newton starts from is taken in 8 running maxima at once (LLVM vectorises that, not a single running
maximum). All thresholds are in score units: ``p_j = ((z_j − t) / 2)₊²`` sums to one. The Newton
steps sum in float32, the final pass in float64. Numba is a dependency; the kernels are compiled
once and cached on disk next to this module. Without Numba, or with ``SPARSEFINDER_CPU_KERNELS=0``,
callers keep the torch path. Hand-written (like the Triton kernel) because no library offers a
fused sparse α-entmax row kernel for CPUs: AdaSplash and the ``entmax`` package's Triton kernels
target GPUs.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

from ..config import EXACT_TASK_QUERIES
from ..kernels import available, set_threads, single_threaded_blas
from ..kernels import numba as _nb

__all__ = ["available", "certified_probabilities", "certified_rows", "certified_thresholded_attention",
           "certified_thresholded_rows", "entmax15_rows", "exact_attention", "row_thresholds", "select_rows", "sparse_rows",
           "thresholded_attention", "thresholded_rows", "warm_up"]


#: Rows per parallel task: scratch buffers are allocated once per block, not per row.
_BLOCK = 64
#: Reorder sums only: no inf/NaN assumptions (thresholds start from -inf lower bounds).
_FAST = {"reassoc", "contract", "arcp", "nsz"}
#: Newton steps at most per threshold (a few suffice: the ascent is quadratic once near the root).
_NEWTON_STEPS = 100
#: A float32 Newton step below this (half score units) ends the ascent.
_STEP = 1e-6


if _nb is not None:  # module-level definitions, so Numba caches the compiled code on disk
    _jit = functools.partial(_nb.njit, cache=True, nogil=True)

    @_jit(fastmath=_FAST)
    def row_max(z, c):  # max of z[:c] (c ≥ 1): a running max in each of 8 accumulators, which LLVM vectorises (one
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = z[0]  # running max it does not: 0.9 against 0.3 ns a key)
        full = c - c % 8
        for j in range(0, full, 8):
            a0 = z[j] if z[j] > a0 else a0
            a1 = z[j + 1] if z[j + 1] > a1 else a1
            a2 = z[j + 2] if z[j + 2] > a2 else a2
            a3 = z[j + 3] if z[j + 3] > a3 else a3
            a4 = z[j + 4] if z[j + 4] > a4 else a4
            a5 = z[j + 5] if z[j + 5] > a5 else a5
            a6 = z[j + 6] if z[j + 6] > a6 else a6
            a7 = z[j + 7] if z[j + 7] > a7 else a7
        top = max(max(max(a0, a1), max(a2, a3)), max(max(a4, a5), max(a6, a7)))
        for j in range(full, c):
            top = z[j] if z[j] > top else top
        return top

    @_jit(fastmath=_FAST)
    def threshold_from(z, c, lower):  # exact threshold of z[:c] (any order, c ≥ 1), given lower ≤ it (or -inf)
        zmax = row_max(z, c)  # -inf entries count as absent keys
        # Newton on f(τ) = √Σ (x − τ)₊² − 1 (a norm of convex functions: convex, decreasing; x = (z − max z)/2)
        # rises monotonically from a lower bound to the root. Each step is one branch-free pass over the
        # row, which the compiler vectorises, in float32 (8 or 16 lanes); once a step is below _STEP, τ is within about
        # _STEP of the root and one float64 pass gives the closed-form root of the keys above τ (a
        # key between τ and the root changes it by less than _STEP²).
        top = np.float32(zmax)
        half = np.float32(0.5)
        zero = np.float32(0.0)
        tau = np.float32(max((lower - zmax) * 0.5, -1.0))  # both are lower bounds: the best key alone has τ = −1
        for _ in range(_NEWTON_STEPS):
            s1 = zero
            s2 = zero
            for s in range(c):
                d = max((z[s] - top) * half - tau, zero)
                s1 += d
                s2 += d * d
            step = (s2 - np.float32(math.sqrt(s2))) / s1  # −f/f′ = (f + 1)·f/s1, f = √s2 − 1 (float32)
            if not step > _STEP:
                break
            tau += step
        t = np.float64(tau)
        s0 = 0.0
        s1d = 0.0
        s2d = 0.0
        for s in range(c):
            d = max((np.float64(z[s]) - np.float64(top)) * 0.5 - t, 0.0)
            s0 += 1.0 if d > 0.0 else 0.0
            s1d += d
            s2d += d * d
        disc = s1d * s1d - s0 * (s2d - 1.0)
        return np.float64(top) + 2.0 * (t + (s1d - math.sqrt(disc if disc > 0.0 else 0.0)) / s0)

    @_jit(fastmath=_FAST)
    def probability_row(z, r, f, nv, keys, c, buf, kept, added):  # row r of exact scores z (keys [f, nv) seen, the
        # others become 0) → its α-entmax probabilities in place, the threshold of the c predicted keys in keys (a lower
        # bound) starting the row's; kept[r]/added[r]: keys of the certified row (predicted and support), support keys
        # not predicted
        if nv <= f:
            z[r, :] = 0.0
            kept[r] = 0
            added[r] = 0
            return
        lower = -np.inf
        if c > 0:
            for s in range(c):
                buf[s] = z[r, keys[s]]
            lower = threshold_from(buf, c, -np.inf)
        row = z[r, f:nv]  # a view from the row's first key: this loop vectorises, one over z[r, f:nv] less so
        t = threshold_from(row, nv - f, lower)
        for j in range(f):
            z[r, j] = 0.0
        for j in range(nv, z.shape[1]):
            z[r, j] = 0.0
        k = 0
        for j in range(nv - f):  # branch-free, vectorised: p = ((z − t) / 2)₊²
            d = max((np.float64(row[j]) - t) * 0.5, 0.0)
            row[j] = np.float32(d * d)
            k += 1 if d > 0.0 else 0
        both = 0
        for s in range(c):
            both += 1 if z[r, keys[s]] > 0.0 else 0
        kept[r] = k + c - both
        added[r] = k - both

    @_jit(parallel=True, fastmath=_FAST)
    def probabilities(z, index, counts, first, nvalid, kept, added):  # z (R, m) → α-entmax rows, in place, seeded
        rows = z.shape[0]                                              # by predicted keys index/counts (R, w)/(R,)
        for b in _nb.prange((rows + _BLOCK - 1) // _BLOCK):
            buf = np.empty(max(index.shape[1], 1), np.float32)
            for r in range(b * _BLOCK, min(rows, (b + 1) * _BLOCK)):
                probability_row(z, r, first[r], nvalid[r], index[r], counts[r], buf, kept, added)

    @_jit
    def task_queries(task, chunks, c, n, lengths):  # task → (group g, its queries [s, end), [s, valid) of them valid)
        g = task // chunks
        s = (task % chunks) * c
        end = min(s + c, n)
        return g, s, end, min(end, lengths[g])

    @_jit
    def task_keys(s, valid, n, length, window):  # the key columns [lo, hi) of a task of queries [s, valid): their band,
        if window:                                # or all n (those past the sequence's length are never read)
            return max(0, s - window), min(length, valid + window)
        return 0, n

    @_jit
    def row_span(r, lo, hi, length, window):  # the keys [f, nv) query r sees, counted from the task's column lo
        if window:
            return max(lo, r - window) - lo, min(hi, r + window + 1) - lo
        return 0, length

    @_jit
    def key_block(kt, g, lo, hi, window):  # keys transposed (d, hi − lo), contiguous for BLAS: a copy of the band's
        if window:                          # columns (70 KB at W = 256), or group g's whole block as it is
            return np.ascontiguousarray(kt[g, :, lo:hi])
        return kt[g]

    @_jit(parallel=True, fastmath=_FAST)
    def exact_tasks(q, kt, v, lengths, window, c, out, support):  # q (G, n, d) scaled queries, kt (G, d, n) keys
        # transposed, v (G, n, dv), lengths (G,) valid tokens of group g, window W (0: every key) → out (G, n, dv),
        # support (G, n): per task (a group, c queries) one BLAS product gives the scores of the keys its queries may
        # see, each row becomes its α-entmax probabilities in place (probability_row), a second BLAS product weights
        # the values; the task's scores stay in the core's cache throughout
        groups, n, _ = q.shape
        chunks = (n + c - 1) // c
        none = np.empty(1, np.int64)
        for task in _nb.prange(groups * chunks):
            g, s, end, valid = task_queries(task, chunks, c, n, lengths)
            out[g, s:end] = 0.0  # queries [valid, end) are padding: zeros
            support[g, s:end] = 0
            if valid <= s:
                continue
            lo, hi = task_keys(s, valid, n, lengths[g], window)
            z = np.dot(q[g, s:valid], key_block(kt, g, lo, hi, window))  # (valid − s, hi − lo)
            buf = np.empty(1, np.float32)
            added = np.empty(valid - s, np.int64)  # nothing predicted: every support key, as support counts it
            for i in range(valid - s):
                f, nv = row_span(s + i, lo, hi, lengths[g], window)
                probability_row(z, i, f, nv, none, 0, buf, support[g, s:valid], added)
            out[g, s:valid] = np.dot(z, v[g, lo:hi])

    @_jit(parallel=True, fastmath=_FAST)
    def certified_thresholded(z, zt, first, nvalid, margins, kept, added):  # probabilities, each row seeded by the
        rows, m = z.shape  # keys whose approximate score zt (R, m) clears its threshold by margins (R,), as thresholded
        for b in _nb.prange((rows + _BLOCK - 1) // _BLOCK):
            keys = np.empty(max(m, 1), np.int32)
            buf = np.empty(max(m, 1), np.float32)
            for r in range(b * _BLOCK, min(rows, (b + 1) * _BLOCK)):
                f = first[r]
                nv = nvalid[r]
                c = 0
                if nv > f:
                    c = kept_keys(zt, r, f, nv, margins[r], keys)
                probability_row(z, r, f, nv, keys, c, buf, kept, added)

    @_jit(parallel=True, fastmath=_FAST)
    def thresholds(z, first, nvalid, margins, out, counts):  # z (R, n), first/nvalid (R,), margins (V, R)
        # → out (R,) thresholds, counts (V, R) keys clearing each margin
        for r in _nb.prange(z.shape[0]):
            f = first[r]
            nv = nvalid[r]
            t = np.float32(0.0)  # an empty row: fill compares the same
            if nv > f:
                t = np.float32(threshold_from(z[r, f:nv], nv - f, -np.inf))
            out[r] = t
            for v in range(margins.shape[0]):
                counts[v, r] = count_where(z[r], f, nv, t, margins[v, r])

    # The two tests of a key against a row's threshold and margin, in strict float semantics (no fastmath, which may
    # rewrite z − t ≥ margin as z ≥ t + margin): counting and listing always agree on the same pairs.
    @_jit
    def count_where(z, f, nv, t, margin):  # how many keys j of [f, nv) have z[j] − t ≥ margin (vectorised)
        c = 0
        for j in range(f, nv):
            c += 1 if z[j] - t >= margin else 0
        return c

    @_jit
    def keep_where(z, f, nv, t, margin, keys):  # those keys into keys (room for nv − f), their count returned
        c = 0
        for j in range(f, nv):
            keys[c] = j  # overwritten until a key qualifies: no branch on the comparison
            c += 1 if z[j] - t >= margin else 0
        return c

    @_jit(fastmath=_FAST)
    def kept_keys(zt, r, f, nv, margin, keys):  # the keys of row r (nv > f) whose approximate score clears its
        # threshold over zt[r, f:nv] by margin, into keys, their count returned: the pairs select_rows lists
        return keep_where(zt[r], f, nv, np.float32(threshold_from(zt[r, f:nv], nv - f, -np.inf)), margin, keys)

    @_jit(parallel=True)
    def fill(z, t, margin, first, nvalid, index):  # the keys j with z − t ≥ margin → index (R, w), as count_where
        rows, n = z.shape                          # counted them (w ≥ every count)
        for b in _nb.prange((rows + _BLOCK - 1) // _BLOCK):
            keys = np.empty(max(n, 1), np.int64)
            for r in range(b * _BLOCK, min(rows, (b + 1) * _BLOCK)):
                c = keep_where(z[r], first[r], nvalid[r], t[r], margin[r], keys)
                index[r, :c] = keys[:c]
                index[r, c:] = 0

    @_jit(fastmath=_FAST)
    def attend_row(q, r, k, v, g, keys, c, offset, scaling, z, support, out):  # out[r] += Σ p_j v_j over keys[:c]
        # (+ offset) of group g: the exact scores of those keys into z, their α-entmax threshold, then the support keys
        # listed (branch-free, their p in z, their keys in support) and their values weighted (a branch per key on
        # p > 0 instead cost more than the rest: about a third of the kept keys are in the support, unpredictably)
        for s in range(c):
            j = keys[s] + offset
            acc = np.float32(0.0)
            for e in range(q.shape[1]):
                acc += q[r, e] * k[g, j, e]
            z[s] = acc * scaling
        t = threshold_from(z, c, -np.inf)
        m = 0
        for s in range(c):
            half = max((z[s] - t) * np.float32(0.5), np.float32(0.0))
            z[m] = half * half  # m ≤ s: z[s] is read before any later write reaches it
            support[m] = keys[s] + offset
            m += 1 if half > 0.0 else 0
        for s in range(m):
            p = z[s]
            j = support[s]
            for e in range(v.shape[2]):
                out[r, e] += p * v[g, j, e]

    @_jit(parallel=True, fastmath=_FAST)
    def thresholded(zt, first, nvalid, margins, q, k, v, lo, rows_per_head, scaling, out, counts):
        # zt (R, m) approximate scores, row r seeing keys [first, nvalid), margins (R,): each row keeps the keys with
        # zt − t̃ ≥ margin (t̃ its threshold over zt) and attends over them; out (R, dv), counts (R,) kept keys
        rows, m = zt.shape
        for b in _nb.prange((rows + _BLOCK - 1) // _BLOCK):
            keys = np.empty(max(m, 1), np.int32)
            z = np.empty(max(m, 1), np.float32)
            support = np.empty(max(m, 1), np.int64)
            for r in range(b * _BLOCK, min(rows, (b + 1) * _BLOCK)):
                out[r, :] = 0.0
                f = first[r]
                nv = nvalid[r]
                c = 0
                if nv > f:
                    c = kept_keys(zt, r, f, nv, margins[r], keys)
                    if c > 0:
                        attend_row(q, r, k, v, r // rows_per_head, keys, c, lo, scaling, z, support, out)
                counts[r] = c

    @_jit(parallel=True, fastmath=_FAST)
    def thresholded_tasks(qp, kpt, q, k, v, lengths, window, margins, heads, c, scaling, out, counts):
        # qp (G, n, r) projected queries, kpt (G, r, n) projected keys transposed, q/k (G, n, d) exact queries and
        # keys, v (G, n, dv), margins (H,) of head g % heads → out (G, n, dv), counts (G, n) kept keys: per task (a
        # group, c queries) one BLAS product gives the approximate scores of the keys its queries may see, then each
        # row keeps and attends as thresholded does, the task's scores in cache
        groups, n, _ = q.shape
        chunks = (n + c - 1) // c
        for task in _nb.prange(groups * chunks):
            g, s, end, valid = task_queries(task, chunks, c, n, lengths)
            out[g, s:end] = 0.0  # queries [valid, end) are padding: zeros
            counts[g, s:end] = 0
            if valid <= s:
                continue
            lo, hi = task_keys(s, valid, n, lengths[g], window)
            zt = np.dot(qp[g, s:valid], key_block(kpt, g, lo, hi, window))  # (valid − s, hi − lo)
            keys = np.empty(hi - lo, np.int32)
            z = np.empty(hi - lo, np.float32)
            support = np.empty(hi - lo, np.int64)
            queries, outputs = q[g], out[g]
            for i in range(valid - s):
                f, nv = row_span(s + i, lo, hi, lengths[g], window)
                kept = kept_keys(zt, i, f, nv, margins[g % heads], keys)
                if kept > 0:
                    attend_row(queries, s + i, k, v, g, keys, kept, lo, scaling, z, support, outputs)
                counts[g, s + i] = kept

    @_jit(parallel=True, fastmath=_FAST)
    def certified_thresholded_tasks(qp, kpt, q, kt, v, lengths, window, margins, heads, c, out, kept, added):
        # thresholded_tasks' approximate scores and kept keys seeding exact_tasks' rows (q scaled, kt keys transposed):
        # per task both products, then each row's probabilities in place from the threshold of its kept keys
        # (probability_row), then the product with the values → out (G, n, dv), kept/added (G, n) the certified keys
        # and the support keys not kept
        groups, n, _ = q.shape
        chunks = (n + c - 1) // c
        for task in _nb.prange(groups * chunks):
            g, s, end, valid = task_queries(task, chunks, c, n, lengths)
            out[g, s:end] = 0.0  # queries [valid, end) are padding: zeros
            kept[g, s:end] = 0
            added[g, s:end] = 0
            if valid <= s:
                continue
            lo, hi = task_keys(s, valid, n, lengths[g], window)
            zt = np.dot(qp[g, s:valid], key_block(kpt, g, lo, hi, window))  # (valid − s, hi − lo) approximate
            z = np.dot(q[g, s:valid], key_block(kt, g, lo, hi, window))  # exact
            keys = np.empty(hi - lo, np.int32)
            buf = np.empty(hi - lo, np.float32)
            for i in range(valid - s):
                f, nv = row_span(s + i, lo, hi, lengths[g], window)
                predicted = kept_keys(zt, i, f, nv, margins[g % heads], keys)
                probability_row(z, i, f, nv, keys, predicted, buf, kept[g, s:valid], added[g, s:valid])
            out[g, s:valid] = np.dot(z, v[g, lo:hi])

    @_jit(parallel=True)
    def widen(kept, counts, index):  # int32 rows kept (R, ≥ w) → int64 index (R, w), zeros past counts
        for r in _nb.prange(index.shape[0]):
            c = counts[r]
            for s in range(c):
                index[r, s] = kept[r, s]
            index[r, c:] = 0

    @_jit(parallel=True, fastmath=_FAST)
    def sparse(q, k, v, index, counts, rows_per_head, scaling, out):  # q (R, d), k/v (BH, n, d) → out (R, dv)
        rows = q.shape[0]
        for b in _nb.prange((rows + _BLOCK - 1) // _BLOCK):
            z = np.empty(max(index.shape[1], 1), np.float32)
            support = np.empty(max(index.shape[1], 1), np.int64)
            for r in range(b * _BLOCK, min(rows, (b + 1) * _BLOCK)):
                out[r, :] = 0.0
                if counts[r] > 0:
                    attend_row(q, r, k, v, r // rows_per_head, index[r], counts[r], 0, scaling, z, support, out)

    @_jit(parallel=True, fastmath=_FAST)
    def certified(z, index, counts, first, nvalid, v, lo, rows_per_head, out, kept, kept_counts, added):
        rows, n = z.shape
        for b in _nb.prange((rows + _BLOCK - 1) // _BLOCK):
            buf = np.empty(max(index.shape[1], 1), np.float32)
            predicted = np.zeros(n, np.bool_)
            for r in range(b * _BLOCK, min(rows, (b + 1) * _BLOCK)):
                out[r, :] = 0.0
                kept_counts[r] = 0
                added[r] = 0
                f = first[r]
                nv = nvalid[r]
                if nv <= f:
                    continue
                g = r // rows_per_head
                c = counts[r]
                lower = -np.inf
                if c > 0:  # the threshold of the predicted keys is a lower bound of the row's
                    for s in range(c):
                        buf[s] = z[r, index[r, s]]
                    lower = threshold_from(buf, c, -np.inf)
                t = threshold_from(z[r, f:nv], nv - f, lower)
                for s in range(c):
                    predicted[index[r, s]] = True
                w = 0
                for j in range(f, nv):  # branch-free: the slot is overwritten unless the key is kept
                    support = z[r, j] > t
                    kept[r, w] = j
                    w += 1 if support or predicted[j] else 0
                    added[r] += 1 if support and not predicted[j] else 0
                for s in range(w):
                    j = kept[r, s]
                    half = (z[r, j] - t) * 0.5
                    if half > 0.0:
                        p = np.float32(half * half)
                        for e in range(v.shape[2]):
                            out[r, e] += p * v[g, lo + j, e]
                kept_counts[r] = w
                for s in range(c):
                    predicted[index[r, s]] = False


def _np(x: Tensor, dtype: torch.dtype) -> np.ndarray:
    return x.detach().to(dtype).contiguous().numpy()


def _firsts(first: Tensor | None, rows: int) -> np.ndarray:
    """Each row's first key as the kernels read it (``None``: every row starts at key 0)."""
    return np.zeros(rows, np.int64) if first is None else _np(first, torch.int64)


def _by_group(x: Tensor) -> np.ndarray:
    """``(B, H, …)`` → float32, contiguous, ``(B·H, …)``: a task kernel's view of a layer's tensor, one group a head."""
    return _np(x, torch.float32).reshape(-1, *x.shape[2:])


def _group_lengths(lengths: Tensor, heads: int) -> np.ndarray:
    """Each group's valid tokens ``(B·H,)`` from each sequence's ``(B,)``."""
    return _np(lengths.repeat_interleave(heads), torch.int64)


def sparse_rows(q: Tensor, k: Tensor, v: Tensor, index: Tensor, counts: Tensor, scaling: float) -> Tensor:
    """Sparse α-entmax (α = 1.5) attention: ``q`` ``(B, H, n, d)``, ``k``/``v`` ``(B, H, n, d)``,
    ``index`` ``(B, H, n, w)`` and ``counts`` ``(B, H, n)`` → output ``(B, H, n, dv)`` (zeros for empty rows)."""
    set_threads()
    batch, heads, n, d = q.shape
    out = np.empty((batch * heads * n, v.shape[-1]), np.float32)
    sparse(_np(q, torch.float32).reshape(-1, d), _np(k, torch.float32).reshape(batch * heads, -1, d),
           _np(v, torch.float32).reshape(batch * heads, -1, v.shape[-1]),
           _np(index, torch.int64).reshape(batch * heads * n, -1), _np(counts, torch.int64).reshape(-1),
           n, float(scaling), out)
    return torch.from_numpy(out).view(batch, heads, n, -1).to(q.dtype)


def select_rows(z: Tensor, nvalid: Tensor, margins: list[Tensor], first: Tensor | None = None
                ) -> list[tuple[Tensor, Tensor]]:
    """Per-query thresholds and the keys that clear them by a margin, for each of several margins.

    ``z`` ``(R, n)`` are scores; each row may see the keys ``first ≤ j < nvalid`` (``(R,)`` each,
    ``first`` 0 by default: a banded row starts later); ``t`` is the exact α-entmax (α = 1.5) threshold of
    each row over them. For each margin ``(R,)`` in ``margins`` those keys with ``z_j − t ≥ margin`` as
    ``index`` ``(R, w)`` (increasing keys, zero padded, ``w`` the widest row, ≥ 1) and ``counts`` ``(R,)``:
    a counting pass, then the index at its final width. Entries outside a row's keys are never read.
    """
    set_threads()
    rows = z.shape[0]
    zz, nv = _np(z, torch.float32), _np(nvalid, torch.int64)
    starts = _firsts(first, rows)
    stacked = np.stack([_np(m, torch.float32) for m in margins]) if margins else np.zeros((0, rows), np.float32)
    t = np.empty(rows, np.float32)
    counts = np.empty((len(margins), rows), np.int64)
    thresholds(zz, starts, nv, stacked, t, counts)
    out = []
    for v in range(len(margins)):
        index = np.empty((rows, max(int(counts[v].max()) if rows else 0, 1)), np.int64)
        fill(zz, t, stacked[v], starts, nv, index)
        out.append((torch.from_numpy(index), torch.from_numpy(counts[v])))
    return out


def thresholded_rows(z: Tensor, first: Tensor | None, nvalid: Tensor, margins: Tensor, q: Tensor, k: Tensor,
                     v: Tensor, lo: int, rows_per_head: int, scaling: float) -> tuple[Tensor, Tensor]:
    """Prediction and sparse attention in one pass a row: :func:`select_rows` of one margin, then :func:`sparse_rows`
    on the kept keys, with no index built between them (the keys of a row stay in a buffer of the row's task).

    ``z`` ``(R, m)`` approximate scores, each row seeing keys ``first ≤ j < nvalid`` (``first`` ``None``: 0; the
    other entries are never read), ``margins`` ``(R,)``; ``q`` ``(R, d)`` the rows' exact queries, ``k``/``v``
    ``(G, ≥ lo + m, d)`` keys and values of row group ``r // rows_per_head``, key ``j`` of ``z`` reading ``lo + j``.
    Returns the output ``(R, dv)`` (zeros for rows that keep nothing) and the kept keys per row ``(R,)``: the same
    pairs and output as :func:`select_rows` then :func:`sparse_rows`.
    """
    set_threads()
    rows = z.shape[0]
    out = np.empty((rows, v.shape[-1]), np.float32)
    counts = np.empty(rows, np.int64)
    starts = _firsts(first, rows)
    thresholded(_np(z, torch.float32), starts, _np(nvalid, torch.int64), _np(margins, torch.float32),
                _np(q, torch.float32), _np(k, torch.float32), _np(v, torch.float32), lo, rows_per_head,
                float(scaling), out, counts)
    return torch.from_numpy(out), torch.from_numpy(counts)


def thresholded_attention(qp: Tensor, kp: Tensor, q: Tensor, k: Tensor, v: Tensor, lengths: Tensor, margins: Tensor,
                          scaling: float, window: int = 0) -> tuple[Tensor, Tensor]:
    """The threshold predictor's fused route by tasks of ``EXACT_TASK_QUERIES`` queries of one head, as
    :func:`exact_attention` runs the ``exact`` mode: the task's approximate scores ``q'·k'`` by one matrix product
    (BLAS), then :func:`thresholded_rows`' pass a row (each query keeps the keys whose approximate score clears its
    threshold by its head's margin, and attends over them).

    ``qp``/``kp`` ``(B, H, n, r)`` projected queries and keys, ``q``/``k``/``v`` ``(B, H, n, d)``, ``lengths``
    ``(B,)``, ``margins`` ``(H,)``, each query seeing the valid keys within ``±window`` (0: every key). Returns the
    output ``(B, H, n, dv)`` (zeros at padded queries and queries that keep nothing) and the kept keys per query
    ``(B, H, n)``: the pairs of :func:`select_rows` and the output of :func:`sparse_rows` on them, up to the float
    rounding of the approximate scores' product."""
    set_threads()
    batch, heads, n, _ = q.shape
    out = np.empty((batch * heads, n, v.shape[-1]), np.float32)
    counts = np.empty((batch * heads, n), np.int64)
    with single_threaded_blas():
        thresholded_tasks(_by_group(qp), _by_group(kp.transpose(-1, -2)), _by_group(q), _by_group(k), _by_group(v),
                          _group_lengths(lengths, heads), window, _np(margins, torch.float32), heads,
                          EXACT_TASK_QUERIES, float(scaling), out, counts)
    return torch.from_numpy(out).view(batch, heads, n, -1), torch.from_numpy(counts).view(batch, heads, n)


def certified_thresholded_attention(qp: Tensor, kp: Tensor, q: Tensor, k: Tensor, v: Tensor, lengths: Tensor,
                                    margins: Tensor, scaling: float, window: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """The threshold predictor's certified route by tasks (as :func:`thresholded_attention`): per task the approximate
    and the exact scores (two BLAS products), each row's exact α-entmax probabilities in place from the threshold of
    the keys it keeps (:func:`certified_thresholded_rows`), then one product with the values.

    Arguments as :func:`thresholded_attention`. Returns the output ``(B, H, n, dv)`` (dense α-entmax over each query's
    valid keys within the band; zeros at padded queries), the certified keys (kept plus support) and the support keys
    not kept per query, ``(B, H, n)`` each."""
    set_threads()
    batch, heads, n, _ = q.shape
    out = np.empty((batch * heads, n, v.shape[-1]), np.float32)
    kept, added = np.empty((batch * heads, n), np.int64), np.empty((batch * heads, n), np.int64)
    with single_threaded_blas():
        certified_thresholded_tasks(_by_group(qp), _by_group(kp.transpose(-1, -2)), _by_group(q * scaling),
                                    _by_group(k.transpose(-1, -2)), _by_group(v), _group_lengths(lengths, heads), window,
                                    _np(margins, torch.float32), heads, EXACT_TASK_QUERIES, out, kept, added)
    return (torch.from_numpy(out).view(batch, heads, n, -1), torch.from_numpy(kept).view(batch, heads, n),
            torch.from_numpy(added).view(batch, heads, n))


def row_thresholds(z: Tensor, nvalid: Tensor) -> Tensor:
    """Exact α-entmax (α = 1.5) threshold of each row of ``z`` ``(R, n)`` over its first ``nvalid`` ``(R,)``
    entries (0 for empty rows), float32 ``(R,)``."""
    set_threads()
    rows = z.shape[0]
    t = np.empty(rows, np.float32)
    thresholds(_np(z, torch.float32), np.zeros(rows, np.int64), _np(nvalid, torch.int64),
               np.zeros((0, rows), np.float32), t, np.empty((0, rows), np.int64))
    return torch.from_numpy(t)


def certified_rows(z: Tensor, index: Tensor, counts: Tensor, nvalid: Tensor, v: Tensor,
                   rows_per_head: int, first: Tensor | None = None, lo: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Exact α-entmax (α = 1.5) attention of rows of exact scores ``z`` ``(R, n)`` seeded by predicted keys, and the
    certified pattern's rows.

    ``index``/``counts`` ``(R, w)``/``(R,)`` are the predicted keys (a row with none keeps its exact
    support: the exact route of dense α-entmax), each row may see the keys ``first ≤ j < nvalid``
    (``(R,)`` each; ``first`` 0 by default: a banded row starts later), ``v`` ``(G, ≥ lo + n, dv)`` the values
    of row group ``r // rows_per_head``, key ``j`` of ``z`` reading value ``lo + j`` (a chunk's key range within a
    layer's values). Returns the output ``(R, dv)``, the certified keys (predicted plus added) as ``index``
    ``(R, w')`` and ``counts`` ``(R,)``, and the keys added per row ``(R,)``. Without a pattern to keep,
    :func:`certified_probabilities` is the faster route.
    """
    set_threads()
    rows, n = z.shape
    out = np.empty((rows, v.shape[-1]), np.float32)
    kept = np.empty((rows, n), np.int32)  # each row's certified keys in its first kept_counts slots
    kept_counts = np.empty(rows, np.int64)
    added = np.empty(rows, np.int64)
    starts = _firsts(first, rows)
    certified(_np(z, torch.float32), _np(index, torch.int64), _np(counts, torch.int64), starts,
              _np(nvalid, torch.int64), _np(v, torch.float32), lo, rows_per_head, out, kept, kept_counts, added)
    certified_index = np.empty((rows, max(int(kept_counts.max()) if rows else 0, 1)), np.int64)
    widen(kept, kept_counts, certified_index)
    return torch.from_numpy(out), torch.from_numpy(certified_index), torch.from_numpy(kept_counts), \
        torch.from_numpy(added)


def certified_probabilities(z: Tensor, index: Tensor, counts: Tensor, nvalid: Tensor, first: Tensor | None = None
                            ) -> tuple[Tensor, Tensor]:
    """Exact α-entmax (α = 1.5) probabilities of score rows, in place, seeded by predicted keys.

    ``z`` ``(R, m)`` float32, contiguous: exact scores, row ``r`` seeing keys ``first ≤ j < nvalid`` (its band within
    the range, cut at its sequence's length), overwritten with each row's probabilities (zeros off its support and
    outside its keys; rows with no key become zeros); ``index``/``counts`` ``(R, w)``/``(R,)`` predicted
    keys (their threshold starts the row's). The attention output is then one matrix product with the values. Returns
    the certified pattern's keys per row (predicted plus support) and the support keys not predicted, ``(R,)`` each.
    """
    set_threads()
    rows = z.shape[0]
    kept, added = np.empty(rows, np.int64), np.empty(rows, np.int64)
    starts = _firsts(first, rows)
    probabilities(z.numpy(), _np(index, torch.int64), _np(counts, torch.int64), starts, _np(nvalid, torch.int64), kept,
                  added)
    return torch.from_numpy(kept), torch.from_numpy(added)


def exact_attention(q: Tensor, k: Tensor, v: Tensor, lengths: Tensor, scaling: float, window: int = 0
                    ) -> tuple[Tensor, Tensor]:
    """Exact α-entmax (α = 1.5) attention of ``q``/``k``/``v`` ``(B, H, n, d)`` over each sequence's ``lengths`` ``(B,)``
    valid keys (within ``±window`` of each query when ``window`` > 0), by tasks of ``EXACT_TASK_QUERIES`` queries of
    one head: their scores by one matrix product (BLAS, called from the task's thread), each row's probabilities in
    place, their product with the values. Returns the output ``(B, H, n, dv)`` (zeros at padded queries) and each
    query's support size ``(B, H, n)``: what :func:`certified_probabilities` then one product with the values give,
    with no chunk's scores leaving the cache."""
    set_threads()
    batch, heads, n, _ = q.shape
    out = np.empty((batch * heads, n, v.shape[-1]), np.float32)
    support = np.empty((batch * heads, n), np.int64)
    with single_threaded_blas():
        exact_tasks(_by_group(q * scaling), _by_group(k.transpose(-1, -2)), _by_group(v), _group_lengths(lengths, heads),
                    window, EXACT_TASK_QUERIES, out, support)
    return torch.from_numpy(out).view(batch, heads, n, -1), torch.from_numpy(support).view(batch, heads, n)


def certified_thresholded_rows(z: Tensor, zt: Tensor, first: Tensor | None, nvalid: Tensor, margins: Tensor
                               ) -> tuple[Tensor, Tensor]:
    """:func:`certified_probabilities` seeded by the keys of :func:`thresholded_rows`, found in the same pass a row.

    ``z`` ``(R, m)`` float32, contiguous: exact scores, overwritten with the rows' α-entmax probabilities (zeros
    outside a row's keys ``first ≤ j < nvalid``); ``zt`` ``(R, m)`` approximate scores and ``margins`` ``(R,)``: the
    keys whose ``zt`` clears the row's threshold by its margin are the predicted keys (the pairs of :func:`select_rows`
    with one margin). Returns the certified pattern's keys per row (predicted plus support) and the support keys not
    predicted, ``(R,)`` each: those of :func:`certified_probabilities` given the predicted keys.
    """
    set_threads()
    rows = z.shape[0]
    kept, added = np.empty(rows, np.int64), np.empty(rows, np.int64)
    starts = _firsts(first, rows)
    certified_thresholded(z.numpy(), _np(zt, torch.float32), starts, _np(nvalid, torch.int64),
                          _np(margins, torch.float32), kept, added)
    return torch.from_numpy(kept), torch.from_numpy(added)


class _Entmax15Rows(torch.autograd.Function):
    """α = 1.5 entmax along the last axis: thresholds by :func:`row_thresholds`, the closed-form backward."""

    @staticmethod
    def forward(ctx, scores: Tensor) -> Tensor:  # noqa: D102 - see entmax15_rows
        n = scores.shape[-1]
        z = scores.detach().clamp(min=torch.finfo(scores.dtype).min)  # -inf keys get 0, as in entmax15
        rows = z.numel() // max(n, 1)
        t = row_thresholds(z.reshape(rows, n), torch.full((rows,), n, dtype=torch.long)).view(*z.shape[:-1], 1)
        p = ((z - t.to(z)) * 0.5).clamp(min=0).square()
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: D102 - the entmax package's Entmax15Function.backward
        (p,) = ctx.saved_tensors
        s = p.sqrt()
        return s * (grad - (grad * s).sum(-1, keepdim=True) / s.sum(-1, keepdim=True))


def entmax15_rows(scores: Tensor) -> Tensor:
    """α-entmax (α = 1.5) of float32 CPU ``scores`` along the last axis, same shape, differentiable.

    The forward pass finds each row's threshold with the compiled kernel (no sort of the row); the
    backward pass is the closed form of the ``entmax`` package (``s = √p``, ``∇z = s·(g − Σ g·s / Σ s)``).
    Used where dense α-entmax is trained (``adapt``): rows of 128 keys are sorted in full otherwise.
    """
    return _Entmax15Rows.apply(scores)


def warm_up() -> None:
    """Compile every kernel now (or load it from Numba's cache), on tiny inputs, not on first use."""
    if not available():
        return
    q = torch.zeros(1, 1, 2, 2)
    index, counts = torch.zeros(1, 1, 2, 1, dtype=torch.long), torch.ones(1, 1, 2, dtype=torch.long)
    z, nvalid = torch.zeros(2, 2), torch.full((2,), 2)
    sparse_rows(q, q, q, index, counts, 1.0)
    thresholded_rows(z, None, nvalid, torch.zeros(2), q.view(2, 2), q.view(1, 2, 2), q.view(1, 2, 2), 0, 2, 1.0)
    select_rows(z, nvalid, [torch.zeros(2)])
    certified_rows(z, index.view(2, 1), counts.view(2), nvalid, q.view(1, 2, 2), 2)
    certified_probabilities(z.clone(), index.view(2, 1), counts.view(2), nvalid)
    certified_thresholded_rows(z.clone(), z, None, nvalid, torch.zeros(2))
    exact_attention(q, q, q, torch.tensor([2]), 1.0)
    thresholded_attention(q, q, q, q, q, torch.tensor([2]), torch.zeros(1), 1.0)
    certified_thresholded_attention(q, q, q, q, q, torch.tensor([2]), torch.zeros(1), 1.0)
