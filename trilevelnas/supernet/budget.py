"""FLOPs targets (docs/supernet.md, "FLOPs target"): the GFLOPs a supernet's space can reach, a
target checked against them, and the derivation of a network within a target's band."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..arch import OP_NAMES, Architecture
from ..complexity import arch_cost
from ..errors import ConfigError
from ..space import width_set
from .config import SupernetConfig
from .flops import FixedCosts, cell_cost_range, op_tables
from .network import TOPOLOGY_CLASSES

__all__ = ["gflops_range", "check_flops_target", "derive_within", "FLOPS_TOLERANCE", "DERIVE_BAND"]

#: How far (relative) from a FLOPs target a derived network may cost.
FLOPS_TOLERANCE = 0.10
#: The relative band around the target that :func:`derive_within` aims for when it must choose.
DERIVE_BAND = 0.05


def gflops_range(config: SupernetConfig, lr_size=(256, 256)) -> tuple[float, float]:
    """``(least, largest)`` GFLOPs at an LR input of ``lr_size`` of the networks the supernet of
    ``config`` can derive (every path, op and width), with the FLOPs convention of
    :func:`trilevelnas.complexity.profile`. Builds no network."""
    topo = TOPOLOGY_CLASSES[config.topology](config)
    low, high = cell_cost_range(op_tables(width_set(config.channels)))
    costs = FixedCosts.of(config.backbone, config.channels, config.scale, lr_size)
    n = max(topo.n_cells, 1)
    lo, hi = topo.flops_range(torch.full((n,), low, dtype=torch.float64),
                              torch.full((n,), high, dtype=torch.float64), costs)
    return lo / 1e9, hi / 1e9


def check_flops_target(config: SupernetConfig, target: float, name: str = "loss.flops_target") -> tuple[float, float]:
    """The space's GFLOPs range (:func:`gflops_range`); a ``target`` outside it raises
    :class:`ConfigError` naming ``name`` and the range."""
    lo, hi = gflops_range(config)
    if not lo <= target <= hi:
        raise ConfigError(f"{name} = {target:g} GFLOPs is outside what this search space can derive "
                          f"({lo:.3g} to {hi:.3g} GFLOPs at a 256x256 LR input)")
    return lo, hi


def _log_softmax(t: torch.Tensor) -> np.ndarray:
    return torch.log_softmax(t.detach().double().cpu(), dim=-1).numpy()


def _cell_choices(la: np.ndarray, lg: np.ndarray, gflops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every choice of one cell: its log probability and its GFLOPs, flat arrays over the index
    ``(k0, j0, k1, j1, k2, j2, k3, j3, k4)`` (op ``k`` and inner width index ``j`` of each slot,
    C order; the cell's ends are the last width, C). ``la`` [5, K] and ``lg`` [4, W] the log
    probabilities of the ops and inner widths, ``gflops`` [K, W, W] each op's cost from width i
    to j at the cell's resolution."""
    K, W = gflops.shape[0], gflops.shape[1]
    shape = (K, W) * 4 + (K,)
    score = np.zeros(shape)
    cost = np.zeros(shape)
    for s in range(5):
        view = [1] * 9
        view[2 * s] = K
        score = score + la[s].reshape(view)
        if s < 4:
            view = [1] * 9
            view[2 * s + 1] = W
            score = score + lg[s].reshape(view)
        i = gflops[:, -1, :] if s == 0 else gflops.transpose(1, 0, 2) if s < 4 else gflops[:, :, -1].T
        view = [1] * 9
        if s == 0:
            view[0], view[1] = K, W  # [k0, j0]
        elif s < 4:
            view[2 * s - 1], view[2 * s], view[2 * s + 1] = W, K, W  # [j_{s-1}, k_s, j_s]
        else:
            view[7], view[8] = W, K  # [j3, k4]
        cost = cost + i.reshape(view)
    return score.reshape(-1), cost.reshape(-1)


def _cell_of(index: int, K: int, W: int) -> list[tuple[int, int]]:
    """``[(op, width index)] * 5`` of flat choice ``index`` of :func:`_cell_choices`."""
    digits = np.unravel_index(index, (K, W) * 4 + (K,))
    return [(int(digits[2 * s]), int(digits[2 * s + 1]) if s < 4 else W - 1) for s in range(5)]


def _front(score: np.ndarray, cost: np.ndarray, step: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The most probable choice in each cost bucket ``[b·step, (b+1)·step)``, ``b < n``: its
    score (−inf where empty) and its flat index."""
    bucket = np.floor(cost / step).astype(np.int64)
    keep = bucket < n
    bucket, score, index = bucket[keep], score[keep], np.nonzero(keep)[0]
    order = np.lexsort((score, bucket))
    bucket, score, index = bucket[order], score[order], index[order]
    last = np.r_[np.nonzero(np.diff(bucket))[0], len(bucket) - 1] if len(bucket) else np.zeros(0, np.int64)
    best, arg = np.full(n, -math.inf), np.zeros(n, np.int64)
    best[bucket[last]], arg[bucket[last]] = score[last], index[last]
    return best, arg


def _max_plus(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``out[t] = max_i a[i] + b[t − i]`` over buckets, and the maximising ``i``."""
    n = len(a)
    out, arg = np.full(n, -math.inf), np.zeros(n, np.int64)
    for i in np.nonzero(np.isfinite(a))[0]:
        cand = a[i] + b[:n - i]
        better = cand > out[i:]
        out[i:][better] = cand[better]
        arg[i:][better] = i
    return out, arg


def _candidate_paths(net) -> list[tuple[list[int], float]]:
    """``(path, log probability)`` of the paths the budget may choose among: every tree node
    (log-softmax of β), else the topology's own path (the trellis's max-product path)."""
    topo = net.topology
    if topo.name == "tree":
        lb = _log_softmax(net.beta.reshape(-1))
        return [(list(s), float(lb[i])) for i, s in enumerate(topo.seqs)]
    with torch.no_grad():
        _, net_w = net._relax_levels()
    host = None if net_w is None else net_w.detach().cpu().numpy()
    return [(topo.derive_path(type("Host", (), {"net_host": host})()), 0.0)]


#: Cost buckets of the cells' budget on a path (:func:`_along_path`): its resolution is 1/2000 of
#: the largest cost considered, so the buckets' rounding stays far inside the ±5% band.
N_BUCKETS = 2000


def _along_path(net, path: list[int], path_score: float, target: float, band: float, tables: np.ndarray,
                cache: dict, tolerance: float = FLOPS_TOLERANCE) -> list:
    """On ``path``, ``(architecture, GFLOPs, log probability)`` of the most probable cells (the
    log-softmax of the chosen logits, plus ``path_score``) whose total cost lies within ±``band``
    of ``target``, and of the cells whose cost lies closest to ``target``: at most two entries;
    one, of log probability ``path_score``, when ``path`` has no cells (its cost is its own).
    Every choice of every cell is scored (exact max-plus over cost buckets of 1/:data:`N_BUCKETS`
    of the budget)."""
    cfg = net.config
    la, lg = cache.setdefault("la", _log_softmax(net.alpha)), cache.setdefault("lg", _log_softmax(net.gamma))
    K, W = tables.shape[0], tables.shape[1]
    cells, b = [], 0  # (module, GFLOPs table) of each cell on the path
    for step, m in net.topology.route(path)[:len(path)]:
        if step == 1:
            b += 1
            continue
        pixels = 256 * 256 * (4 ** b if cfg.backbone == "A" else 1)
        cells.append((m, pixels))

    def build(choices: list) -> Architecture:
        body = [[[OP_NAMES[k], int(net.widths[j])] for k, j in c[:4]] + [[OP_NAMES[c[4][0]], cfg.channels]]
                for c in choices]
        return Architecture(backbone=cfg.backbone, path=path, cells=body, channels=cfg.channels, scale=cfg.scale)

    ref = build([[(0, W - 1)] * 5 for _ in cells])  # conv1x1 at C everywhere: the fixed cost by difference
    ref_gflops = arch_cost(ref)["gflops"]
    fixed = ref_gflops - sum(5 * tables[0, -1, -1] * px / 1e9 for _, px in cells)
    if not cells:
        return [(ref, fixed, path_score)]
    budget = target * (1.0 + tolerance) - fixed
    if budget <= 0:
        return [(ref, ref_gflops, -math.inf)]
    step = budget / N_BUCKETS
    total, backs, choices = None, [], []  # backs[c - 1]: the prefix's bucket at cell c's max-plus
    for m, px in cells:
        if (m, px) not in cache:
            cache[m, px] = _cell_choices(la[m], lg[m], tables * (px / 1e9))
        front, arg = _front(*cache[m, px], step, N_BUCKETS)
        choices.append(arg)
        if total is None:
            total = front
        else:
            total, back = _max_plus(total, front)
            backs.append(back)
    finite = np.nonzero(np.isfinite(total))[0]
    if not len(finite):  # every choice exceeds the budget: the cheapest is the closest
        low = [int(np.argmin(cache[(m, px)][1])) for m, px in cells]
        arch = build([_cell_of(i, K, W) for i in low])
        return [(arch, arch_cost(arch)["gflops"], -math.inf)]
    mid = (finite + 0.5) * step + fixed  # each bucket's cost
    picks = [int(finite[np.argmin(np.abs(mid / target - 1.0))])]
    low, high = finite * step + fixed, (finite + len(cells)) * step + fixed  # the bucket sums' true costs lie between
    inside = finite[(low >= target * (1.0 - band)) & (high <= target * (1.0 + band))]
    if len(inside):
        picks.append(int(inside[np.argmax(total[inside])]))
    out = []
    for t in picks:
        idx = []
        for c in range(len(cells) - 1, 0, -1):  # walk the max-plus back from the last cell
            prefix = int(backs[c - 1][t])
            idx.append(int(choices[c][t - prefix]))
            t = prefix
        idx.append(int(choices[0][t]))
        idx.reverse()
        arch = build([_cell_of(i, K, W) for i in idx])
        score = path_score + sum(float(cache[m, px][0][i]) for (m, px), i in zip(cells, idx))
        out.append((arch, arch_cost(arch)["gflops"], score))
    return out


def derive_within(net, target: float, band: float = DERIVE_BAND, tolerance: float = FLOPS_TOLERANCE) -> Architecture:
    """The derived architecture of supernet ``net`` whose GFLOPs (256x256 LR) lie near ``target``
    (docs/supernet.md, "FLOPs target").

    The plain derivation (``net.derive()``) when it lies within ±``tolerance``. Otherwise the
    search's node is kept when it can meet the target: on the plain derivation's path, the most
    probable cells (the log-softmax of the chosen logits, :func:`_along_path`) whose network lies
    within ±``band``, else the closest within ±``tolerance``. Only where that path cannot are the
    other candidate paths considered (every tree node; the trellis's and the fixed path): of the
    solutions on every path, the most probable within ±``band`` (path log probability included),
    or where none is, the closest to the target.
    """
    arch = net.derive()
    gflops = arch_cost(arch)["gflops"]
    if abs(gflops / target - 1.0) <= tolerance:
        return arch
    tables = net._op_tables.detach().cpu().double().numpy()
    cache: dict = {}
    paths = _candidate_paths(net)
    own = next(p for p in paths if p[0] == list(arch.path))
    found = _along_path(net, own[0], own[1], target, band, tables, cache)
    inside = [s for s in found if abs(s[1] / target - 1.0) <= band]
    if inside:
        return max(inside, key=lambda s: s[2])[0]
    near = [s for s in found if abs(s[1] / target - 1.0) <= tolerance]
    if near:
        return min(near, key=lambda s: abs(s[1] / target - 1.0))[0]
    seen = [(arch, gflops, -math.inf), *found]
    for path, path_score in paths:
        if path != own[0]:
            seen += _along_path(net, path, path_score, target, band, tables, cache)
    inside = [s for s in seen if abs(s[1] / target - 1.0) <= band]
    if inside:
        return max(inside, key=lambda s: s[2])[0]
    return min(seen, key=lambda s: abs(s[1] / target - 1.0))[0]
