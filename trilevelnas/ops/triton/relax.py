"""Triton kernels of the relaxation ops and the forest ordering penalty (forward and backward), one
program per group.

A group is processed in chunks of ``BLOCK`` elements, so any group size works without knowing the
largest group on the host (no synchronisation). The sorting of docs/ops.md "Definitions" is replaced by ranks
computed pairwise (element j precedes i when ``b_j > b_i`` or ``b_j == b_i and j < i``), which
gives each element the prefix sums ``S1, S2`` of its own position in the sorted order: O(K^2 / BLOCK)
work per group, fine for the small groups these relaxations act on. The ordering penalty's backward
finds each node's children the same way (pairwise, no atomics: deterministic). Arithmetic is in
float32 (float64 for float64 inputs). The launchers take and return torch tensors; ``trilevelnas.ops.relax`` registers
them as the ``trilevelnas::<op>_triton`` ops. Importing this module defines the kernels: with
``TRITON_INTERPRET=1`` set beforehand they run on CPU tensors (the tests do this).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..reference import ONE_HOT_TOL  # kernels/common.cuh kOneHotTol on the C++ side


@triton.jit
def _bounds(g, off_ptr, row_k, HAS_OFFSETS: tl.constexpr):
    if HAS_OFFSETS:
        start = tl.load(off_ptr + g)
        end = tl.load(off_ptr + g + 1)
    else:
        start = g.to(tl.int64) * row_k
        end = start + row_k
    return start, (end - start).to(tl.int32)


@triton.jit
def _load_b(x_ptr, start, idx, mask, mx, CDT: tl.constexpr):
    """Shifted inputs ``x - mx`` of one chunk; -inf where masked."""
    v = tl.load(x_ptr + start + idx, mask=mask, other=0.0).to(CDT)
    return tl.where(mask, v - mx, float("-inf"))


@triton.jit
def _tied_rank(x_ptr, start, k, i, mx, CDT: tl.constexpr, BLOCK: tl.constexpr):
    """Number of elements j < i equal to the maximum (the rank of i within the tied block)."""
    ar = tl.arange(0, BLOCK)
    rank = tl.zeros([BLOCK], dtype=tl.int32)
    for j0 in range(0, k, BLOCK):
        j = j0 + ar
        bj = _load_b(x_ptr, start, j, j < k, mx, CDT)
        hit = (bj[None, :] == 0) & (j[None, :] < i[:, None])
        rank += tl.sum(hit.to(tl.int32), axis=1)
    return rank


@triton.jit
def _unnormalised(x_ptr, start, k, i, mi, mx, tie, one_hot, first, t_tie, thr, CDT: tl.constexpr,
                  BLOCK: tl.constexpr):
    """The projection's unnormalised weights p at indices ``i`` (q = p / sum(p)): the tie-broken
    limit for tied maxima, one-hot at ``first``, or relu(b - threshold)."""
    bi = _load_b(x_ptr, start, i, mi, mx, CDT)
    if tie:
        rt = _tied_rank(x_ptr, start, k, i, mx, CDT, BLOCK).to(CDT)
        p = tl.where(bi == 0, tl.maximum(-rt - t_tie, 0.0), 0.0)
    elif one_hot:
        p = tl.where(i == first, 1.0, 0.0).to(CDT)
    else:
        p = tl.maximum(bi - thr, 0.0)
    return p


@triton.jit
def _sparsestmax_fwd_kernel(x_ptr, off_ptr, rad_ptr, rad_scalar, out_ptr, gain_ptr, row_k, TOL: tl.constexpr,
                            HAS_OFFSETS: tl.constexpr, HAS_RADIUS: tl.constexpr, CDT: tl.constexpr,
                            BLOCK: tl.constexpr):
    g = tl.program_id(0)
    start, k = _bounds(g, off_ptr, row_k, HAS_OFFSETS)
    ar = tl.arange(0, BLOCK)
    if HAS_RADIUS:
        r = tl.load(rad_ptr + g).to(CDT)
    else:
        r = tl.zeros([], CDT) + rad_scalar

    mx = tl.full([], float("-inf"), CDT)
    for i0 in range(0, k, BLOCK):
        i = i0 + ar
        mx = tl.maximum(mx, tl.max(_load_b(x_ptr, start, i, i < k, 0.0, CDT), axis=0))

    kf = k.to(CDT)
    c = r * r + 1.0 / tl.maximum(kf, 1.0)
    tau = tl.full([], float("-inf"), CDT)
    tmax = tl.full([], float("-inf"), CDT)
    n_top = 0
    first = k
    for i0 in range(0, k, BLOCK):
        i = i0 + ar
        mi = i < k
        bi = _load_b(x_ptr, start, i, mi, mx, CDT)
        rank = tl.zeros([BLOCK], dtype=tl.int32)
        s1 = tl.zeros([BLOCK], dtype=CDT)
        s2 = tl.zeros([BLOCK], dtype=CDT)
        for j0 in range(0, k, BLOCK):
            j = j0 + ar
            mj = j < k
            bj = _load_b(x_ptr, start, j, mj, mx, CDT)
            before = mj[None, :] & ((bj[None, :] > bi[:, None]) | ((bj[None, :] == bi[:, None]) & (j[None, :] < i[:, None])))
            bjz = tl.where(mj, bj, 0.0)
            rank += tl.sum(before.to(tl.int32), axis=1)
            s1 += tl.sum(tl.where(before, bjz[None, :], 0.0), axis=1)
            s2 += tl.sum(tl.where(before, (bjz * bjz)[None, :], 0.0), axis=1)
        biz = tl.where(mi, bi, 0.0)
        s = (rank + 1).to(CDT)
        s1 += biz
        s2 += biz * biz
        m = s1 / s
        var = tl.maximum(s2 / s - m * m, 0.0)
        sc1 = s * c - 1.0
        ok = mi & (sc1 > 0) & (var > 0)
        t = m - tl.sqrt(tl.where(ok, var, 1.0) / tl.where(ok, sc1, 1.0))
        tau = tl.maximum(tau, tl.max(tl.where(mi, (s1 - 1.0) / s, float("-inf")), axis=0))
        tmax = tl.maximum(tmax, tl.max(tl.where(ok, t, float("-inf")), axis=0))
        top = mi & (bi == 0)
        n_top += tl.sum(top.to(tl.int32), axis=0)
        first = tl.minimum(first, tl.min(tl.where(top, i, k), axis=0))

    one_hot = (k <= 1) | (c >= 1.0 - TOL)
    tie = (n_top >= 2) & (n_top.to(CDT) * c > 1.0) & (k > 1) & (c < 1.0 - TOL)
    # tie rule: the largest t_s (2 <= s <= n_top) of the rank vector -(0, 1, ..., n_top - 1)
    t_tie = tl.full([], float("-inf"), CDT)
    for s0 in range(0, n_top, BLOCK):
        sf = (s0 + ar + 2).to(CDT)
        sc1 = sf * c - 1.0
        ok = (s0 + ar + 2 <= n_top) & (sc1 > 0)
        cand = -(sf - 1.0) / 2.0 - tl.sqrt((sf * sf - 1.0) / 12.0 / tl.where(ok, sc1, 1.0))
        t_tie = tl.maximum(t_tie, tl.max(tl.where(ok, cand, float("-inf")), axis=0))
    thr = tl.maximum(tau, tmax)

    z = tl.zeros([], CDT)
    for i0 in range(0, k, BLOCK):
        i = i0 + ar
        mi = i < k
        p = _unnormalised(x_ptr, start, k, i, mi, mx, tie, one_hot, first, t_tie, thr, CDT, BLOCK)
        z += tl.sum(tl.where(mi, p, 0.0), axis=0)
    inv_z = 1.0 / tl.where(z > 0, z, 1.0)
    for i0 in range(0, k, BLOCK):
        i = i0 + ar
        mi = i < k
        p = _unnormalised(x_ptr, start, k, i, mi, mx, tie, one_hot, first, t_tie, thr, CDT, BLOCK)
        tl.store(out_ptr + start + i, (p * inv_z).to(out_ptr.dtype.element_ty), mask=mi)
    circle = tie | ((k > 1) & (c < 1.0 - TOL) & (tmax > tau))
    tl.store(gain_ptr + g, tl.where(circle, inv_z, 0.0).to(gain_ptr.dtype.element_ty))


@triton.jit
def _sparsestmax_bwd_kernel(g_ptr, q_ptr, gain_ptr, off_ptr, dx_ptr, row_k, HAS_OFFSETS: tl.constexpr,
                            CDT: tl.constexpr, BLOCK: tl.constexpr):
    gid = tl.program_id(0)
    start, k = _bounds(gid, off_ptr, row_k, HAS_OFFSETS)
    ar = tl.arange(0, BLOCK)
    cnt = tl.zeros([], CDT)
    sg = tl.zeros([], CDT)
    sq = tl.zeros([], CDT)
    sqq = tl.zeros([], CDT)
    sqg = tl.zeros([], CDT)
    for i0 in range(0, k, BLOCK):
        i = i0 + ar
        mi = i < k
        q = tl.load(q_ptr + start + i, mask=mi, other=0.0).to(CDT)
        gr = tl.load(g_ptr + start + i, mask=mi, other=0.0).to(CDT)
        on = q > 0
        cnt += tl.sum(on.to(CDT), axis=0)
        sg += tl.sum(tl.where(on, gr, 0.0), axis=0)
        sq += tl.sum(q, axis=0)
        sqq += tl.sum(q * q, axis=0)
        sqg += tl.sum(q * gr, axis=0)
    gain = tl.load(gain_ptr + gid).to(CDT)
    inv_s = 1.0 / tl.maximum(cnt, 1.0)
    gmean = sg * inv_s
    ee = tl.maximum(sqq - 2.0 * inv_s * sq + inv_s, 0.0)  # sum over the support of (q - 1/s)^2
    eg = sqg - inv_s * sg
    proj = tl.where((gain > 0) & (ee > 0), eg / tl.where(ee > 0, ee, 1.0), 0.0)
    scale = tl.where(gain > 0, gain, 1.0)
    for i0 in range(0, k, BLOCK):
        i = i0 + ar
        mi = i < k
        q = tl.load(q_ptr + start + i, mask=mi, other=0.0).to(CDT)
        gr = tl.load(g_ptr + start + i, mask=mi, other=0.0).to(CDT)
        d = tl.where(q > 0, scale * (gr - gmean - (q - inv_s) * proj), 0.0)
        tl.store(dx_ptr + start + i, d.to(dx_ptr.dtype.element_ty), mask=mi)


@triton.jit
def _softmax_fwd_kernel(x_ptr, off_ptr, out_ptr, CDT: tl.constexpr, BLOCK: tl.constexpr):
    g = tl.program_id(0)
    start, k = _bounds(g, off_ptr, 0, True)
    ar = tl.arange(0, BLOCK)
    mx = tl.full([], float("-inf"), CDT)
    for i0 in range(0, k, BLOCK):
        i = i0 + ar
        v = tl.load(x_ptr + start + i, mask=i < k, other=float("-inf")).to(CDT)
        mx = tl.maximum(mx, tl.max(v, axis=0))
    z = tl.zeros([], CDT)
    for i0 in range(0, k, BLOCK):
        i = i0 + ar
        v = tl.load(x_ptr + start + i, mask=i < k, other=float("-inf")).to(CDT)
        z += tl.sum(tl.where(i < k, tl.exp(v - mx), 0.0), axis=0)
    for i0 in range(0, k, BLOCK):
        i = i0 + ar
        v = tl.load(x_ptr + start + i, mask=i < k, other=0.0).to(CDT)
        tl.store(out_ptr + start + i, (tl.exp(v - mx) / z).to(out_ptr.dtype.element_ty), mask=i < k)


@triton.jit
def _softmax_bwd_kernel(g_ptr, y_ptr, off_ptr, dx_ptr, CDT: tl.constexpr, BLOCK: tl.constexpr):
    gid = tl.program_id(0)
    start, k = _bounds(gid, off_ptr, 0, True)
    ar = tl.arange(0, BLOCK)
    dot = tl.zeros([], CDT)
    for i0 in range(0, k, BLOCK):
        i = i0 + ar
        y = tl.load(y_ptr + start + i, mask=i < k, other=0.0).to(CDT)
        gr = tl.load(g_ptr + start + i, mask=i < k, other=0.0).to(CDT)
        dot += tl.sum(y * gr, axis=0)
    for i0 in range(0, k, BLOCK):
        i = i0 + ar
        y = tl.load(y_ptr + start + i, mask=i < k, other=0.0).to(CDT)
        gr = tl.load(g_ptr + start + i, mask=i < k, other=0.0).to(CDT)
        tl.store(dx_ptr + start + i, (y * (gr - dot)).to(dx_ptr.dtype.element_ty), mask=i < k)


@triton.jit
def _edge(q_ptr, par_ptr, start, i, k, CDT: tl.constexpr):
    """For the nodes ``i`` of a group of size ``k``: whether each has a parent ``p`` (0 <= p < i),
    its weight ``q_i`` (0 beyond the group) and its parent's ``q_p`` (0 without one)."""
    mi = i < k
    p = tl.load(par_ptr + start + i, mask=mi, other=-1)
    edge = mi & (p >= 0) & (p < i)
    qi = tl.load(q_ptr + start + i, mask=mi, other=0.0).to(CDT)
    qp = tl.load(q_ptr + start + p, mask=edge, other=0.0).to(CDT)
    return edge, qi, qp


@triton.jit
def _order_penalty_fwd_kernel(q_ptr, off_ptr, par_ptr, out_ptr, CDT: tl.constexpr, BLOCK: tl.constexpr):
    """out[g] = sum over the edges (i, p) of group g of max(0, q_i - q_p); p is i's parent when
    0 <= p < i (any other parent counts as a root)."""
    g = tl.program_id(0)
    start, k = _bounds(g, off_ptr, 0, True)
    ar = tl.arange(0, BLOCK)
    total = tl.zeros([], CDT)
    for i0 in range(0, k, BLOCK):
        edge, qi, qp = _edge(q_ptr, par_ptr, start, i0 + ar, k, CDT)
        d = qi - qp
        total += tl.sum(tl.where(edge & (d > 0), d, 0.0), axis=0)
    tl.store(out_ptr + g, total.to(out_ptr.dtype.element_ty))


@triton.jit
def _order_penalty_bwd_kernel(g_ptr, q_ptr, off_ptr, par_ptr, dq_ptr, CDT: tl.constexpr, BLOCK: tl.constexpr):
    """dq_i = grad[g] * ([q_i > q_parent(i)] - #{children c of i: q_c > q_i}); ties count 0."""
    gid = tl.program_id(0)
    start, k = _bounds(gid, off_ptr, 0, True)
    ar = tl.arange(0, BLOCK)
    gr = tl.load(g_ptr + gid).to(CDT)
    for i0 in range(0, k, BLOCK):
        i = i0 + ar
        mi = i < k
        edge, qi, qp = _edge(q_ptr, par_ptr, start, i, k, CDT)
        slope = tl.where(edge & (qi > qp), 1, 0).to(tl.int32)
        for j0 in range(0, k, BLOCK):
            j = j0 + ar
            mj = j < k
            pj = tl.load(par_ptr + start + j, mask=mj, other=-1)
            qj = tl.load(q_ptr + start + j, mask=mj, other=0.0).to(CDT)
            rises = (mj[None, :] & (pj[None, :] == i[:, None]) & (i[:, None] < j[None, :])
                     & (qj[None, :] > qi[:, None]))  # j is a child of i weighing more than i
            slope -= tl.sum(rises.to(tl.int32), axis=1)
        tl.store(dq_ptr + start + i, (gr * slope.to(CDT)).to(dq_ptr.dtype.element_ty), mask=mi)


# ---------------------------------------------------------------------------------------------
# Launchers


def _cdt(t: torch.Tensor):
    return tl.float64 if t.dtype == torch.float64 else tl.float32


def _gain_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _block(k: int | None) -> int:
    """Chunk size: the row length rounded up to a power of two, within [16, 64]; 32 for packed."""
    if k is None:
        return 32
    return min(64, max(16, triton.next_power_of_2(max(k, 1))))


def sparsestmax_packed_fwd(values, offsets, radius, radius_scalar):
    """(out, gain) of sparsestmax over packed groups."""
    values = values.contiguous()
    groups = offsets.numel() - 1
    out = torch.empty_like(values)
    gain = torch.empty(groups, dtype=_gain_dtype(values), device=values.device)
    if groups == 0:
        return out, gain
    _sparsestmax_fwd_kernel[(groups,)](
        values, offsets.contiguous(), radius.contiguous() if radius is not None else gain, float(radius_scalar),
        out, gain, 0, TOL=ONE_HOT_TOL, HAS_OFFSETS=True, HAS_RADIUS=radius is not None, CDT=_cdt(values),
        BLOCK=_block(None))
    return out, gain


def sparsestmax_rows_fwd(x, radius, radius_scalar):
    """(out, gain) of sparsestmax over the last dimension of ``x``."""
    x = x.contiguous()
    k = x.shape[-1]
    rows = x.numel() // k if k > 0 else 0
    out = torch.empty_like(x)
    gain = torch.zeros(x.shape[:-1], dtype=_gain_dtype(x), device=x.device)
    if rows == 0:
        return out, gain
    _sparsestmax_fwd_kernel[(rows,)](
        x, x, radius.contiguous() if radius is not None else gain, float(radius_scalar), out, gain, k,
        TOL=ONE_HOT_TOL, HAS_OFFSETS=False, HAS_RADIUS=radius is not None, CDT=_cdt(x), BLOCK=_block(k))
    return out, gain


def sparsestmax_packed_bwd(grad, out, gain, offsets):
    groups = offsets.numel() - 1
    dx = torch.empty_like(out)
    if groups > 0:
        _sparsestmax_bwd_kernel[(groups,)](grad.contiguous(), out.contiguous(), gain.contiguous(),
                                           offsets.contiguous(), dx, 0, HAS_OFFSETS=True, CDT=_cdt(out),
                                           BLOCK=_block(None))
    return dx


def sparsestmax_rows_bwd(grad, out, gain):
    k = out.shape[-1]
    rows = out.numel() // k if k > 0 else 0
    dx = torch.empty_like(out)
    if rows > 0:
        _sparsestmax_bwd_kernel[(rows,)](grad.contiguous(), out.contiguous(), gain.contiguous(), gain, dx, k,
                                         HAS_OFFSETS=False, CDT=_cdt(out), BLOCK=_block(k))
    return dx


def softmax_packed_fwd(values, offsets):
    groups = offsets.numel() - 1
    out = torch.empty_like(values)
    if groups > 0:
        _softmax_fwd_kernel[(groups,)](values.contiguous(), offsets.contiguous(), out, CDT=_cdt(values),
                                       BLOCK=_block(None))
    return out


def softmax_packed_bwd(grad, out, offsets):
    groups = offsets.numel() - 1
    dx = torch.empty_like(out)
    if groups > 0:
        _softmax_bwd_kernel[(groups,)](grad.contiguous(), out.contiguous(), offsets.contiguous(), dx,
                                       CDT=_cdt(out), BLOCK=_block(None))
    return dx


def order_penalty_packed_fwd(q, offsets, parent):
    """Per-group ordering penalty [G] (``q``'s dtype) of packed forest groups."""
    groups = offsets.numel() - 1
    out = torch.empty(groups, dtype=q.dtype, device=q.device)
    if groups > 0:
        _order_penalty_fwd_kernel[(groups,)](q.contiguous(), offsets.contiguous(), parent.contiguous(), out,
                                             CDT=_cdt(q), BLOCK=_block(None))
    return out


def order_penalty_packed_bwd(grad, q, offsets, parent):
    """Gradient of the ordering penalty w.r.t. ``q`` for the per-group upstream gradient ``grad`` [G]."""
    groups = offsets.numel() - 1
    dq = torch.empty_like(q)
    if groups > 0:
        _order_penalty_bwd_kernel[(groups,)](grad.contiguous(), q.contiguous(), offsets.contiguous(),
                                             parent.contiguous(), dq, CDT=_cdt(q), BLOCK=_block(None))
    return dq
