"""The supernet's configuration (docs/supernet.md): one declared rule per field (:mod:`trilevelnas.settings`).

The run configuration's ``supernet`` section (:mod:`trilevelnas.training.config`) is derived from
these fields, so a field added here is a run setting too, checked by the same rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import ConfigError
from ..settings import (boolean, check_value, choice, declared_rules, integer, list_of, mapping, number,
                        setting)

TOPOLOGIES = ("tree", "trellis", "fixed")
SHARES = ("ordinal", "none")
LEVEL_RELAXATIONS = {
    "op": ("softmax", "sparsemax", "sparsestmax"),
    "edge": ("softmax", "sparsemax", "sparsestmax"),
    "node": ("softmax", "sparsemax", "sparsestmax", "sorted_sparsestmax"),
}
DEFAULT_RELAXATIONS = {"op": "sparsestmax", "edge": "sparsestmax", "node": "sorted_sparsestmax"}
#: How config files spell ``relaxations``: ``relaxation`` sets α's and the trellis edges' levels,
#: ``node_relaxation`` the tree's node weights.
FLAT_RELAXATIONS = {"relaxation": ("op", "edge"), "node_relaxation": ("node",)}
#: The paper's λ (Table 4's middle row) for the tree's ordering term.
DEFAULT_ORDER_LAMBDA = 0.01


def default_order_lambda(topology: str) -> float:
    """The ordering term's λ when ``order_lambda`` is None: :data:`DEFAULT_ORDER_LAMBDA` for the
    tree, 0 for the topologies without root-to-node paths."""
    return DEFAULT_ORDER_LAMBDA if topology == "tree" else 0.0


#: The tree's depth limit: ``n_rir + n_up`` levels at most.
MAX_TREE_LEVELS = 12


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

    backbone: str = setting("B", choice("A", "B"))
    topology: str = setting("tree", choice(*TOPOLOGIES))
    channels: int = setting(64, integer(ge=8, multiple_of=8))
    n_rir: int = setting(5, integer(ge=0))
    n_up: int = setting(2, integer(ge=0))
    share: str = setting("ordinal", choice(*SHARES))
    relaxations: dict = setting(DEFAULT_RELAXATIONS, mapping(
        {level: choice(*names) for level, names in LEVEL_RELAXATIONS.items()}))
    order_lambda: float | None = setting(None, number(ge=0, nullable=True, note="null: the topology's default"))
    sparse_execution: bool = setting(True, boolean())
    scale: int = setting(4, integer(ge=2))
    fixed_path: list[int] | None = setting(None, list_of(integer(choices=(0, 1), note="0: RiR cell, 1: up/conv"),
                                                         nullable=True))
    gumbel_tau: float = setting(1.0, number(gt=0))
    checkpoint: bool = setting(False, boolean())
    checkpoint_rows: int = setting(64, integer(ge=1))

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first field that breaks its rule, then the first
        inconsistent combination (:func:`check_combinations`). Fills in what the defaults leave
        open: the relaxation of a level not given, ``order_lambda`` None → the topology's default,
        ``fixed_path`` as a list."""
        for name, rule in declared_rules(type(self)):
            check_value(getattr(self, name), rule, name)
        self.relaxations = {**DEFAULT_RELAXATIONS, **dict(self.relaxations)}
        if self.fixed_path is not None:
            self.fixed_path = list(self.fixed_path)
        check_combinations(self, self.scale)
        if self.order_lambda is None:
            self.order_lambda = default_order_lambda(self.topology)

    @property
    def path(self) -> list[int]:
        """The fixed topology's path: ``fixed_path`` or ``[0]*n_rir + [1]*n_up``."""
        if self.fixed_path is not None:
            return list(self.fixed_path)
        return [0] * self.n_rir + [1] * self.n_up

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SupernetConfig":
        """From a JSON-like mapping. Besides the field names, accepts the config files' spelling of
        ``relaxations`` (:data:`FLAT_RELAXATIONS`: ``relaxation``, ``node_relaxation``)."""
        data = dict(data)
        relax = dict(data.pop("relaxations", None) or {})
        for key, levels in FLAT_RELAXATIONS.items():
            if key in data:
                name = data.pop(key)
                for level in levels:
                    relax.setdefault(level, name)
        names = [name for name, _ in declared_rules(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"supernet config: unknown field(s) {unknown} (known: {sorted(names)})")
        return cls(relaxations=relax, **data)


def check_combinations(s: Any, scale: int, name: Callable[[str], str] = str) -> None:
    """Raise :class:`ConfigError` for the first combination of (individually valid) supernet
    settings that cannot be built: backbone A's ``scale`` must be ``2 ** n_up``; λ > 0 only with
    the tree; the tree at most :data:`MAX_TREE_LEVELS` levels; a fixed path of backbone A at most
    ``n_up`` ups.

    ``s`` holds :class:`SupernetConfig`'s settings (``order_lambda`` may still be None); ``name``
    spells a field in the message (the run configuration names ``supernet.n_up`` and ``data.scale``).
    """
    if s.backbone == "A" and scale != 2 ** s.n_up:
        raise ConfigError(f"{name('scale')} = {scale} is inconsistent with backbone A and {name('n_up')} = "
                          f"{s.n_up} (each up doubles the size: scale must be {2 ** s.n_up})")
    if s.order_lambda and s.topology != "tree":
        raise ConfigError(f"{name('order_lambda')} = {s.order_lambda}: the ordering term orders the tree's "
                          f"root-to-node paths; topology {s.topology!r} has none (set it to 0)")
    if s.topology == "tree" and s.n_rir + s.n_up > MAX_TREE_LEVELS:
        raise ConfigError(f"{name('n_rir')} = {s.n_rir}, {name('n_up')} = {s.n_up}: the tree would be too "
                          f"large (n_rir + n_up must be at most {MAX_TREE_LEVELS})")
    if s.fixed_path is not None and s.backbone == "A" and sum(s.fixed_path) > s.n_up:
        raise ConfigError(f"{name('fixed_path')} = {list(s.fixed_path)} has {sum(s.fixed_path)} ups; backbone A "
                          f"with {name('n_up')} = {s.n_up} takes at most {s.n_up}")
