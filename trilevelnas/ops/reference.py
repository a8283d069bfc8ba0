"""Pure-torch references: the executable specification of every op in :mod:`trilevelnas.ops`.

Tests and benchmarks compare the fused kernels with these functions. They are written for clarity
and for exact agreement with docs/ops.md "Definitions", not for speed; gradients come from autograd through the
closed forms. The relaxation references compute in float64 and return the input's dtype.
"""
from __future__ import annotations

import torch

__all__ = [
    "ONE_HOT_TOL",
    "sparsestmax",
    "sparsemax",
    "sparsestmax_packed",
    "sparsemax_packed",
    "softmax_packed",
    "order_penalty_packed",
    "sorted_sparsestmax_packed",
    "superconv2d",
]

# ---------------------------------------------------------------------------------------------
# Relaxations (sparsestmax family)
# ---------------------------------------------------------------------------------------------

#: A group is one-hot when ``c = r**2 + 1/K >= 1 - ONE_HOT_TOL`` (so that r equal to the
#: circumradius, rounded to float32, still gives one-hot).
ONE_HOT_TOL = 1e-6


def _group_radius(r, groups: int, device) -> torch.Tensor:
    if isinstance(r, torch.Tensor):
        return r.to(device=device, dtype=torch.float64).expand(groups).clone()
    return torch.full((groups,), float(r), dtype=torch.float64, device=device)


def _threshold(sb: torch.Tensor, valid: torch.Tensor, c: torch.Tensor, with_tau: bool):
    """Threshold ``T`` of docs/ops.md "Definitions" for rows ``sb`` sorted descending with ``sb[:, 0] == 0``.

    ``valid`` masks the real entries, ``c = r**2 + 1/K`` per row. Returns ``(T, circle)`` where
    ``circle`` says that the circle constraint is active (``T`` is one of the ``t_s``).
    """
    k = sb.shape[1]
    s = torch.arange(1, k + 1, dtype=sb.dtype, device=sb.device)
    zero = torch.zeros((), dtype=sb.dtype, device=sb.device)
    x = torch.where(valid, sb, zero)
    s1 = x.cumsum(1)
    s2 = (x * x).cumsum(1)
    m = s1 / s
    var = (s2 / s - m * m).clamp_min(0)
    neg_inf = torch.full((), float("-inf"), dtype=sb.dtype, device=sb.device)
    sc1 = s * c[:, None] - 1
    ok = valid & (sc1 > 0) & (var > 0)
    t = m - torch.sqrt(torch.where(ok, var, 1) / torch.where(ok, sc1, 1))
    t_max = torch.where(ok, t, neg_inf).amax(1)
    if not with_tau:
        return t_max, torch.ones_like(t_max, dtype=torch.bool)
    tau = torch.where(valid, (s1 - 1) / s, neg_inf).amax(1)
    return torch.maximum(tau, t_max), t_max > tau


def _sparsestmax_rows(x: torch.Tensor, lengths: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Sparsestmax of each row of ``x`` [G, Kmax] (float64) over its first ``lengths[g]`` entries.

    Entries beyond a row's length are ignored and come out 0.
    """
    g, k = x.shape
    if g == 0 or k == 0:
        return x * 0
    pos = torch.arange(k, device=x.device)
    valid = pos[None, :] < lengths[:, None]
    lengths_f = lengths.clamp_min(1).to(x.dtype)
    c = r * r + 1 / lengths_f
    neg_inf = torch.full((), float("-inf"), dtype=x.dtype, device=x.device)
    xm = torch.where(valid, x, neg_inf)
    # Shift by the maximum; the stable descending sort orders ties by index.
    b = torch.where(valid, xm - xm.amax(1, keepdim=True).detach().nan_to_num(0, 0, 0), neg_inf)
    sb, perm = torch.sort(b, dim=1, descending=True, stable=True)
    svalid = pos[None, :] < lengths[:, None]

    t_main, _ = _threshold(sb, svalid, c, with_tau=True)
    p_main = torch.relu(torch.where(svalid, sb, neg_inf) - t_main[:, None])

    # Ties at the top (s_t elements equal to the maximum, s_t * c > 1): the projection is not
    # unique; take the limit of the problem with the tied entries perturbed by -eps * (rank),
    # i.e. solve it on the rank vector -(0, 1, ..., s_t - 1) (differentiable in the values).
    n_top = ((sb == 0) & svalid).sum(1)
    tied = (n_top >= 2) & (n_top.to(x.dtype) * c > 1)
    in_top = pos[None, :] < n_top[:, None]
    sb_tie = torch.where(in_top, -pos.to(x.dtype)[None, :] + (sb - sb.detach()), neg_inf)
    t_tie, _ = _threshold(torch.where(in_top, sb_tie, 0), in_top, c, with_tau=False)
    t_tie = torch.where(tied, t_tie, 0)
    p_tie = torch.relu(sb_tie - t_tie[:, None])

    one_hot = c >= 1 - ONE_HOT_TOL
    p_one = (pos[None, :] == 0).to(x.dtype) + 0 * sb.nan_to_num(0, 0, 0)

    p = torch.where(one_hot[:, None], p_one, torch.where(tied[:, None], p_tie, p_main))
    p = torch.where(svalid, p, 0)
    q_sorted = p / p.sum(1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    return torch.zeros_like(q_sorted).scatter(1, perm, q_sorted)


def _pad(values: torch.Tensor, offsets: torch.Tensor):
    """Gather packed groups into a padded [G, Kmax] matrix; returns (matrix, lengths, index, mask)."""
    lengths = offsets[1:] - offsets[:-1]
    g = lengths.numel()
    k = int(lengths.max()) if g > 0 else 0
    pos = torch.arange(k, device=values.device)
    mask = pos[None, :] < lengths[:, None]
    index = (offsets[:-1, None] + pos[None, :]).clamp(0, max(values.numel() - 1, 0))
    if values.numel() == 0:
        return values.new_zeros((g, k)), lengths, index, mask
    return torch.where(mask, values[index], 0), lengths, index, mask


def _unpad(padded: torch.Tensor, values: torch.Tensor, index: torch.Tensor, mask: torch.Tensor):
    out = values.new_zeros(values.shape, dtype=padded.dtype)
    return out.index_put((index[mask],), padded[mask])


def sparsestmax_packed(values: torch.Tensor, offsets: torch.Tensor, r) -> torch.Tensor:
    """Sparsestmax (paper Eq. 2, docs/ops.md "Definitions") of each group ``values[offsets[g]:offsets[g+1]]``.

    ``r`` (float or [G] tensor) is the absolute radius. Empty groups are allowed.
    """
    padded, lengths, index, mask = _pad(values.to(torch.float64), offsets)
    q = _sparsestmax_rows(padded, lengths, _group_radius(r, lengths.numel(), values.device))
    return _unpad(q, values.to(torch.float64), index, mask).to(values.dtype)


def sparsemax_packed(values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Sparsemax (Euclidean projection onto the simplex) of each packed group."""
    return sparsestmax_packed(values, offsets, 0.0)


def softmax_packed(values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Softmax of each packed group."""
    padded, lengths, index, mask = _pad(values.to(torch.float64), offsets)
    filled = torch.where(mask, padded, float("-inf"))
    filled = torch.where((lengths > 0)[:, None], filled, 0)
    q = torch.softmax(filled, dim=1)
    return _unpad(q, values.to(torch.float64), index, mask).to(values.dtype)


def order_penalty_packed(q: torch.Tensor, offsets: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
    """Per-group ordering penalty of forest-structured weights ``q`` (docs/ops.md): a [G] tensor.

    Group g is ``q[offsets[g]:offsets[g+1]]``; ``parent[i]`` is the index of i's parent within its
    own group (-1 for a root, smaller than i's own index otherwise). Returns
    ``out[g] = sum over non-root i of g of max(0, q[i] - q[parent(i)])`` (0 iff q does not increase
    along any edge; empty groups and groups of roots give 0), in float64 then cast to ``q.dtype``.
    Differentiable in ``q`` by autograd: an edge with ``q_child > q_parent`` contributes +1 to the
    child's and -1 to the parent's derivative; a tie (``q_child == q_parent``) contributes 0.
    """
    return _order_penalty64(q, offsets, parent).to(q.dtype)


def _order_penalty64(q: torch.Tensor, offsets: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
    """:func:`order_penalty_packed` in float64 (no final cast)."""
    lengths = offsets[1:] - offsets[:-1]
    groups = lengths.numel()
    q64 = q.to(torch.float64)
    group = torch.repeat_interleave(torch.arange(groups, device=q.device), lengths)
    child = torch.nonzero(parent >= 0).reshape(-1)
    par = parent[child] + offsets[:-1][group[child]]
    diff = q64[child] - q64[par]
    # where(), not a clamp, so that a tie's derivative is 0 by construction
    hinge = torch.where(diff > 0, diff, torch.zeros_like(diff))
    return torch.zeros(groups, dtype=torch.float64, device=q.device).index_add(0, group[child], hinge)


def sorted_sparsestmax_packed(values, offsets, parent, r, lam):
    """Sorted sparsestmax (paper Eq. 3, as defined in docs/ops.md) of every packed forest group.

    Returns ``(q, penalty)``: ``q = sparsestmax_packed(values, offsets, r)`` (``lam`` does not
    change it) and ``penalty = lam_g * order_penalty_packed(q, offsets, parent)`` per group ([G],
    ``values.dtype``), the ordering term the caller adds to the architecture loss. ``lam`` is a
    float or a [G] tensor.
    """
    groups = offsets.numel() - 1
    q = sparsestmax_packed(values, offsets, r)
    lam_g = _group_radius(lam, groups, values.device)
    penalty = lam_g * _order_penalty64(q, offsets, parent)
    return q, penalty.to(values.dtype)


def _rows_call(fn, x: torch.Tensor, dim: int, *args):
    moved = x.movedim(dim, -1)
    shape = moved.shape
    k = shape[-1] if len(shape) else 1
    rows = moved.reshape(-1, k)
    return fn(rows, *args).reshape(shape).movedim(-1, dim)


def sparsestmax(x: torch.Tensor, r, dim: int = -1) -> torch.Tensor:
    """Sparsestmax along ``dim``; ``r`` is a float or a tensor broadcast over the other dims."""
    moved_shape = x.movedim(dim, -1).shape[:-1]
    if isinstance(r, torch.Tensor):
        r = r.to(torch.float64).expand(moved_shape).reshape(-1)

    def rows(x2, r_):
        lengths = torch.full((x2.shape[0],), x2.shape[1], dtype=torch.int64, device=x2.device)
        q = _sparsestmax_rows(x2.to(torch.float64), lengths, _group_radius(r_, x2.shape[0], x2.device))
        return q.to(x2.dtype)

    return _rows_call(rows, x, dim, r)


def sparsemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Sparsemax along ``dim``."""
    return sparsestmax(x, 0.0, dim)

# ---------------------------------------------------------------------------------------------
# (other ops' references go below, in their own sections)
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Superkernel convolution (superconv2d)
# ---------------------------------------------------------------------------------------------

def superconv2d(x, weight, bias=None, in_width=None, out_width=None, stride=1, padding=0, groups=1,
                activation="none", negative_slope=0.2, scale=None, accumulate=None):
    """Convolution with the leading ``[out_width, in_width]`` block of a superkernel.

    ``conv = F.conv2d(x[:, :in_width], weight[:out_width, :in_width], bias[:out_width], stride,
    padding)`` (depthwise, ``groups == C_in == C_out``: the first ``w`` channels, groups ``w``).
    Returns ``[N, C_out, H', W']``: channels ``[:out_width]`` are ``accumulate + scale * act(conv)``,
    the others ``accumulate`` (zeros when it is None). Built from differentiable torch ops.
    """
    import torch.nn.functional as F

    c_in, c_out = x.shape[1], weight.shape[0]
    in_width = c_in if in_width is None else int(in_width)
    out_width = c_out if out_width is None else int(out_width)
    if groups == 1:
        w, conv_groups = weight[:out_width, :in_width], 1
    else:
        if in_width != out_width:
            raise ValueError("superconv2d: depthwise convolution needs in_width == out_width")
        w, conv_groups = weight[:out_width], out_width
    b = None if bias is None else bias[:out_width]
    conv = F.conv2d(x[:, :in_width], w, b, stride=stride, padding=padding, groups=conv_groups)
    if activation == "relu":
        conv = F.relu(conv)
    elif activation == "leaky_relu":
        conv = F.leaky_relu(conv, negative_slope)
    elif activation != "none":
        raise ValueError(f"superconv2d: unknown activation {activation!r}")
    if scale is not None:
        conv = conv * scale
    out = F.pad(conv, (0, 0, 0, 0, 0, c_out - out_width))
    return out if accumulate is None else accumulate + out
