"""How firmly the search made each decision: the logit margin between the top two candidates.

A decision is one α slot (4 candidate operations), one γ slot (the width set) or the tree's node
(β over all nodes). Its margin is ``top1 − top2`` of the logits; a margin within
``UNDECIDED_FACTOR × ARCH_INIT_STD`` (3× the initial noise) means the choice is no better
than the initialisation's coin toss, and is reported as undecided.
"""
from __future__ import annotations

import torch

from ..arch import OP_NAMES
from .network import ARCH_INIT_STD

__all__ = ["UNDECIDED_FACTOR", "undecided_threshold", "logit_margins", "OneHotTracker", "decision_report"]

UNDECIDED_FACTOR = 3.0


def undecided_threshold() -> float:
    """Margins below this are undecided (3× the std of the architecture parameters' initial noise)."""
    return UNDECIDED_FACTOR * ARCH_INIT_STD


def _margin(logits: torch.Tensor) -> torch.Tensor:
    """``top1 − top2`` along the last dimension (0 for a single candidate)."""
    if logits.shape[-1] < 2:
        return torch.zeros(logits.shape[:-1], dtype=logits.dtype)
    top = logits.topk(2, dim=-1).values
    return top[..., 0] - top[..., 1]


def logit_margins(net) -> dict[str, torch.Tensor]:
    """``{"alpha": [n_cells, 5], "gamma": [n_cells, 4], "node": [] (tree only)}`` margins (float64, CPU)."""
    with torch.no_grad():
        out = {"alpha": _margin(net.alpha.detach().double().cpu()),
               "gamma": _margin(net.gamma.detach().double().cpu())}
        if net.beta is not None and net.topology.name == "tree":
            out["node"] = _margin(net.beta.detach().double().cpu().reshape(-1))
    return out


class OneHotTracker:
    """The logit margin of every sparse decision at the first step its relaxed weights were one-hot.

    ``update(net, step)`` after each architecture step; ``state()`` / ``load(state)`` are plain
    (lists of floats, None until one-hot) so that a resumed run reports the same margins.
    """

    def __init__(self):
        self.alpha: list | None = None
        self.node: float | None = None
        self.step_alpha: list | None = None
        self.step_node: int | None = None

    def update(self, net, step: int, margins: dict | None = None) -> None:
        """Record the decisions that are one-hot at ``step`` for the first time; ``margins`` is
        :func:`logit_margins` of ``net`` if the caller has it already."""
        weights = net.relaxed_weights()
        margins = logit_margins(net) if margins is None else margins
        one_hot = (weights["alpha"].max(-1).values >= 1.0 - 1e-6).cpu()
        if self.alpha is None:
            self.alpha = [[None] * one_hot.shape[1] for _ in range(one_hot.shape[0])]
            self.step_alpha = [[None] * one_hot.shape[1] for _ in range(one_hot.shape[0])]
        for i, j in one_hot.nonzero().tolist():
            if self.alpha[i][j] is None:
                self.alpha[i][j] = float(margins["alpha"][i, j])
                self.step_alpha[i][j] = step
        if "node" in margins and self.node is None and float(weights["beta"].max()) >= 1.0 - 1e-6:
            self.node = float(margins["node"])
            self.step_node = step

    def state(self) -> dict:
        return {"alpha": self.alpha, "node": self.node, "step_alpha": self.step_alpha, "step_node": self.step_node}

    def load(self, state: dict | None) -> None:
        state = state or {}
        self.alpha, self.node = state.get("alpha"), state.get("node")
        self.step_alpha, self.step_node = state.get("step_alpha"), state.get("step_node")


def decision_report(net, arch, tracker: OneHotTracker | None = None) -> dict:
    """Margins of all decisions at the end (and at one-hot), and how many of those that the derived
    architecture ``arch`` uses are undecided.

    Returns plain values: ``{"threshold", "node": {"end", "at_one_hot"}, "alpha": {"end",
    "at_one_hot"}, "gamma": {"end"}, "used": n, "undecided": k, "undecided_fraction", "min_margin",
    "by_budget": b}`` (``b``: the used decisions that are not the supernet's argmax, made by a FLOPs
    target's derivation; their margins are those of the argmax they overrode).
    """
    m = logit_margins(net)
    thr = undecided_threshold()
    route = net.topology.route(arch.path)
    cells = sorted({k for s, k in route[:len(arch.path)] if s == 0})
    used = []
    for c in cells:
        used += [float(v) for v in m["alpha"][c].tolist()] + [float(v) for v in m["gamma"][c].tolist()]
    by_budget = _not_argmax(net, arch, [k for s, k in route[:len(arch.path)] if s == 0])
    report = {
        "threshold": thr,
        "alpha": {"end": m["alpha"].tolist(), "at_one_hot": tracker.alpha if tracker else None},
        "gamma": {"end": m["gamma"].tolist()},
    }
    if "node" in m:
        report["node"] = {"end": float(m["node"]), "at_one_hot": tracker.node if tracker else None}
        used.append(float(m["node"]))
    undecided = sum(1 for v in used if v < thr)
    report.update({"used": len(used), "undecided": undecided,
                   "undecided_fraction": undecided / len(used) if used else 0.0,
                   "min_margin": min(used) if used else None, "by_budget": by_budget})
    return report


def _not_argmax(net, arch, modules: list[int]) -> int:
    """How many of the decisions ``arch`` uses differ from the supernet's own choice (argmax of
    the logits, the node of ``net.derive()``): those a FLOPs target's derivation made instead."""
    alpha, gamma = net.alpha.detach().cpu().argmax(-1), net.gamma.detach().cpu().argmax(-1)
    count = 0
    for c, cell in zip(modules, arch.cells):
        for s, (op, width) in enumerate(cell):
            count += op != OP_NAMES[int(alpha[c, s])]
            if s < gamma.shape[1]:
                count += width != int(net.widths[int(gamma[c, s])])
    if net.beta is not None and net.topology.name == "tree":
        count += list(net.derive().path) != list(arch.path)
    return int(count)
