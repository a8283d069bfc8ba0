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


def _best_cell(la: np.ndarray, lg: np.ndarray, gflops: np.ndarray, lam: float):
    """The cell maximising ``score − lam · GFLOPs``: ``la`` [5, K] and ``lg`` [4, W] the log
    probabilities of the ops and inner widths, ``gflops`` [K, W, W] each op's cost from width i to
    j at the cell's resolution. A max-plus chain over the widths (the cell's ends are the last
    width, C). Returns ``([(op, width index)] * 5, gflops, score)``."""
    K, W = gflops.shape[0], gflops.shape[1]
    value = np.full(W, -math.inf)
    value[-1] = 0.0
    back = []
    for s in range(5):
        gain = la[s][:, None, None] - lam * gflops
        if s < 4:
            gain = gain + lg[s][None, None, :]
        cand = (value[None, :, None] + gain).reshape(K * W, W)
        arg = cand.argmax(0)
        value = cand[arg, np.arange(W)]
        back.append(arg)
    choice, j = [], W - 1
    for s in range(4, -1, -1):
        k, i = divmod(int(back[s][j]), W)
        choice.append((k, j))
        j = i
    choice.reverse()
    ins = [W - 1] + [w for _, w in choice[:-1]]
    cost = sum(float(gflops[k, i, j]) for (k, j), i in zip(choice, ins))
    score = sum(float(la[s, k]) for s, (k, _) in enumerate(choice)) + sum(
        float(lg[s, j]) for s, (_, j) in enumerate(choice[:4]))
    return choice, cost, score


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


def _solve(net, path: list[int], path_score: float, lam: float, tables: np.ndarray,
           cache: dict) -> tuple[Architecture, float, float]:
    """On ``path``, the cells maximising ``log probability − lam · GFLOPs``: the architecture, its
    GFLOPs and its log probability (``path_score`` plus the cells')."""
    cfg = net.config
    la, lg = cache.setdefault("la", _log_softmax(net.alpha)), cache.setdefault("lg", _log_softmax(net.gamma))
    cells, score, b = [], path_score, 0
    for step, m in net.topology.route(path)[:len(path)]:
        if step == 1:
            b += 1
            continue
        pixels = 256 * 256 * (4 ** b if cfg.backbone == "A" else 1)
        choice, _, cell_score = _best_cell(la[m], lg[m], tables * (pixels / 1e9), lam)
        cells.append([[OP_NAMES[k], int(net.widths[j])] for k, j in choice[:4]]
                     + [[OP_NAMES[choice[4][0]], cfg.channels]])
        score += cell_score
    arch = Architecture(backbone=cfg.backbone, path=path, cells=cells, channels=cfg.channels, scale=cfg.scale)
    return arch, arch_cost(arch)["gflops"], score


def _along_path(net, path, path_score, target, tables, cache, steps: int = 40) -> list:
    """The solutions of :func:`_solve` on ``path`` met while λ is bracketed and bisected until the
    cost crosses ``target``."""
    seen = [_solve(net, path, path_score, 0.0, tables, cache)]
    sign = 1.0 if seen[0][1] > target else -1.0
    lo, hi = 0.0, sign
    for _ in range(steps):
        seen.append(_solve(net, path, path_score, hi, tables, cache))
        if sign * (seen[-1][1] - target) <= 0:
            break
        lo, hi = hi, hi * 4
    else:
        return seen  # the path cannot reach the target
    for _ in range(steps):
        mid = (lo + hi) / 2
        seen.append(_solve(net, path, path_score, mid, tables, cache))
        if sign * (seen[-1][1] - target) > 0:
            lo = mid
        else:
            hi = mid
    return seen


def derive_within(net, target: float, band: float = DERIVE_BAND, tolerance: float = FLOPS_TOLERANCE) -> Architecture:
    """The derived architecture of supernet ``net`` whose GFLOPs (256x256 LR) lie near ``target``
    (docs/supernet.md, "FLOPs target").

    The plain derivation (``net.derive()``) when it lies within ±``tolerance``. Otherwise, on each
    candidate path (every tree node; the trellis's and the fixed path), the cells maximising
    ``log probability − λ·GFLOPs`` (the log-softmax of the chosen logits) with λ bisected to the
    target; of these, the most probable within ±``band``, or where none is, the closest to the target.
    """
    arch = net.derive()
    gflops = arch_cost(arch)["gflops"]
    if abs(gflops / target - 1.0) <= tolerance:
        return arch
    tables = net._op_tables.detach().cpu().double().numpy()
    cache: dict = {}
    seen = [(arch, gflops, -math.inf)]
    for path, path_score in _candidate_paths(net):
        seen += _along_path(net, path, path_score, target, tables, cache)
    inside = [s for s in seen if abs(s[1] / target - 1.0) <= band]
    if inside:
        return max(inside, key=lambda s: s[2])[0]
    return min(seen, key=lambda s: abs(s[1] / target - 1.0))[0]
