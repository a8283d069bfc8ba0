"""The supernet's configuration (docs/supernet.md)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from ..errors import UserError

TOPOLOGIES = ("tree", "trellis", "fixed")
SHARES = ("ordinal", "none")
LEVEL_RELAXATIONS = {
    "op": ("softmax", "sparsemax", "sparsestmax"),
    "edge": ("softmax", "sparsemax", "sparsestmax"),
    "node": ("softmax", "sparsemax", "sparsestmax", "sorted_sparsestmax"),
}
DEFAULT_RELAXATIONS = {"op": "sparsestmax", "edge": "sparsestmax", "node": "sorted_sparsestmax"}
#: The paper's λ (Table 4's middle row) for the tree's ordering term.
DEFAULT_ORDER_LAMBDA = 0.01


@dataclass
class SupernetConfig:
    """What to build. Defaults follow the paper (backbone B tree, C = 64, 5 RiR + 2 ups, ×4).

    - ``backbone``: ``"A"`` (nearest ×2 up steps, ``scale == 2**n_up``) or ``"B"`` (conv steps,
      PixelShuffle head).
    - ``topology``: ``"tree"`` (paper), ``"trellis"`` (Auto-DeepLab baseline), ``"fixed"`` (bilevel
      baseline: only α, γ on ``fixed_path``; default ``[0]*n_rir + [1]*n_up``).
    - ``share``: ``"ordinal"`` (the k-th RiR / m-th up of any path share weights, α and γ) or
      ``"none"`` (one module per tree node / trellis edge). Ignored by ``"fixed"``.
    - ``relaxations``: per level, ``op`` (α: softmax | sparsemax | sparsestmax), ``edge`` (trellis
      edges, same choices) and ``node`` (the tree's node weights; also sorted_sparsestmax).
    - ``order_lambda``: λ of the tree's ordering term ``λ·Σ_edges max(0, q_child − q_parent)``
      (docs/ops.md), added to the architecture loss with any node relaxation. None (default):
      0.01 (the paper's) for the tree, 0 otherwise; λ > 0 with the trellis or the fixed path, which
      have no root-to-node paths to order, is an error. ``sparse_execution``: skip zero-weight work.
    - ``gumbel_tau``: temperature of the width sampler.
    - ``checkpoint``: recompute each cell call in the backward pass instead of storing its
      activations (only cell inputs are kept): about 1/3 more compute, a fraction of the memory;
      what makes a dense paper-size step (83 nodes, C = 64) fit in CPU memory. Batched node
      groups are then recomputed in chunks of at most ``checkpoint_rows`` samples, which bounds
      the peak memory of the recomputation.
    """

    backbone: str = "B"
    topology: str = "tree"
    channels: int = 64
    n_rir: int = 5
    n_up: int = 2
    share: str = "ordinal"
    relaxations: dict = field(default_factory=lambda: dict(DEFAULT_RELAXATIONS))
    order_lambda: float | None = None
    sparse_execution: bool = True
    scale: int = 4
    fixed_path: list | None = None
    gumbel_tau: float = 1.0
    checkpoint: bool = False
    checkpoint_rows: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.relaxations, Mapping):
            raise UserError(f"relaxations={self.relaxations!r}: expected a mapping level -> name")
        unknown = set(self.relaxations) - set(LEVEL_RELAXATIONS)
        if unknown:
            raise UserError(f"relaxations: unknown level(s) {sorted(unknown)} "
                            f"(levels: {', '.join(LEVEL_RELAXATIONS)})")
        self.relaxations = {**DEFAULT_RELAXATIONS, **dict(self.relaxations)}
        self.validate()

    def validate(self) -> None:
        """Raise :class:`UserError` naming the first inconsistent field."""
        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        if self.backbone not in ("A", "B"):
            raise UserError(f"backbone={self.backbone!r}: expected 'A' or 'B'")
        if self.topology not in TOPOLOGIES:
            raise UserError(f"topology={self.topology!r}: expected one of {', '.join(TOPOLOGIES)}")
        if self.share not in SHARES:
            raise UserError(f"share={self.share!r}: expected one of {', '.join(SHARES)}")
        if not is_int(self.channels) or self.channels < 8 or self.channels % 8:
            raise UserError(f"channels={self.channels!r}: expected a positive multiple of 8")
        if not is_int(self.n_rir) or self.n_rir < 0:
            raise UserError(f"n_rir={self.n_rir!r}: expected an integer >= 0")
        if not is_int(self.n_up) or self.n_up < 0:
            raise UserError(f"n_up={self.n_up!r}: expected an integer >= 0")
        if not is_int(self.scale) or self.scale < 2:
            raise UserError(f"scale={self.scale!r}: expected an integer >= 2")
        if self.backbone == "A" and self.scale != 2 ** self.n_up:
            raise UserError(f"scale={self.scale} with backbone A needs n_up = log2(scale) "
                            f"(got n_up={self.n_up}): every path is completed to ×{self.scale} by ×2 ups")
        for level, name in self.relaxations.items():
            if name not in LEVEL_RELAXATIONS[level]:
                raise UserError(f"relaxations[{level!r}]={name!r}: expected one of "
                                f"{', '.join(LEVEL_RELAXATIONS[level])}")
        if self.order_lambda is None:
            self.order_lambda = DEFAULT_ORDER_LAMBDA if self.topology == "tree" else 0.0
        if (not isinstance(self.order_lambda, (int, float)) or isinstance(self.order_lambda, bool)
                or not math.isfinite(self.order_lambda) or self.order_lambda < 0):
            raise UserError(f"order_lambda={self.order_lambda!r}: expected a finite number >= 0")
        if self.order_lambda > 0 and self.topology != "tree":
            raise UserError(f"order_lambda={self.order_lambda}: the ordering term orders the tree's "
                            f"root-to-node paths; the {self.topology} topology has none (set it to 0)")
        if not isinstance(self.gumbel_tau, (int, float)) or self.gumbel_tau <= 0:
            raise UserError(f"gumbel_tau={self.gumbel_tau!r}: expected a positive number")
        if not isinstance(self.checkpoint_rows, int) or self.checkpoint_rows < 1:
            raise UserError(f"checkpoint_rows={self.checkpoint_rows!r}: expected a positive integer")
        if self.fixed_path is not None:
            p = self.fixed_path
            if not isinstance(p, (list, tuple)) or any(not is_int(s) or s not in (0, 1) for s in p):
                raise UserError(f"fixed_path={p!r}: expected a list of 0 (RiR) / 1 (up or conv)")
            if self.backbone == "A" and sum(p) > self.n_up:
                raise UserError(f"fixed_path={list(p)} has {sum(p)} ups; backbone A at scale "
                                f"{self.scale} takes at most {self.n_up}")
            self.fixed_path = list(p)
        if self.topology == "tree" and self.n_rir + self.n_up > 12:
            raise UserError(f"n_rir={self.n_rir}, n_up={self.n_up}: the tree would be too large")

    @property
    def path(self) -> list[int]:
        """The fixed topology's path: ``fixed_path`` or ``[0]*n_rir + [1]*n_up``."""
        if not isinstance(self.checkpoint_rows, int) or self.checkpoint_rows < 1:
            raise UserError(f"checkpoint_rows={self.checkpoint_rows!r}: expected a positive integer")
        if self.fixed_path is not None:
            return list(self.fixed_path)
        return [0] * self.n_rir + [1] * self.n_up

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SupernetConfig":
        """From a JSON-like mapping. Besides the field names, accepts ``relaxation`` (α and trellis
        edges) and ``node_relaxation`` (the tree's nodes) as the search config writes them."""
        data = dict(data)
        relax = dict(data.pop("relaxations", None) or {})
        if "relaxation" in data:
            r = data.pop("relaxation")
            relax.setdefault("op", r)
            relax.setdefault("edge", r)
        if "node_relaxation" in data:
            relax.setdefault("node", data.pop("node_relaxation"))
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"supernet config: unknown field(s) {unknown} (known: {sorted(names)})")
        return cls(relaxations=relax, **data)
