"""The searched result: an :class:`Architecture`, with JSON in and out, and the kernel-level width set.

JSON format (docs/architectures.md "Architecture JSON")::

    {"backbone": "A" | "B", "path": [0, 0, 1, ...],
     "cells": [[[op, width] x 5] per RiR cell], "channels": 64, "scale": 4}

``path`` lists the network-level steps after ``conv_first``: ``0`` is a RiR cell, ``1`` is an
upsampling step (backbone A: nearest x2 + conv) or a conv layer (backbone B). ``cells`` holds one
entry per ``0`` of the path, in order; each is five ``[op, width]`` pairs, op names from
:data:`OP_NAMES`, the fifth width equal to ``channels`` (a cell maps C channels back to C).

Backbone A upsamples by nearest x2 steps, so its ``scale`` must be a power of two and its path may
hold at most ``log2(scale)`` ups; the missing ups are appended at the end of the path
(:attr:`Architecture.full_path`). Backbone B upsamples once with PixelShuffle, any integer scale >= 2.

Widths are any positive integers no larger than ``channels``; a searched architecture's widths come
from :func:`width_set`.
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from .errors import UserError

OP_NAMES = ("conv1x1", "conv3x3", "resblock", "dwsblock")
"""Candidate operation names, in the order the supernet's alpha vectors use."""

BACKBONES = ("A", "B")
OPS_PER_CELL = 5
WIDTH_RATIOS = (1 / 3, 1 / 2, 2 / 3, 5 / 6, 1.0)

PRESET_NAMES = ("trilevelnas-a", "trilevelnas-b", "trilevelnas-b-psnr", "trilevelnas-b-aim")
"""The paper's four searched architectures: Tables 7, 8, 9 and 10 of its supplement."""

PAPER_COMPLEXITY = {
    # name: (supplementary table, main-text table it is reported in, params in millions, GFLOPs at 256x256)
    "trilevelnas-a": (7, "Table 1", 0.34, 117.4),
    "trilevelnas-b": (8, "Table 1", 0.24, 15.4),
    "trilevelnas-b-psnr": (9, "Table 2", 0.51, 33.3),
    "trilevelnas-b-aim": (10, "Table 3", 0.27, 17.33),
}
"""The paper's reported complexity of each preset (see docs/architectures.md for how ours compares)."""


class ArchitectureError(UserError):
    """An invalid architecture description; the message names the offending field."""


def width_set(channels: int) -> list[int]:
    """The kernel-level candidate widths for ``channels`` full channels, ascending and distinct.

    Each ratio of :data:`WIDTH_RATIOS` times ``channels`` is rounded to the nearest multiple of 8
    (halves round up) and bumped by 8 if that falls below 0.9x the exact value; results are capped
    at ``channels`` and the ratio 1 always gives ``channels`` itself. ``width_set(64)`` is
    ``[24, 32, 40, 56, 64]``. Ratios that round to the same width give one candidate.
    """
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ArchitectureError(f"channels must be a positive integer, got {channels!r}")
    widths = set()
    for ratio in WIDTH_RATIOS:
        exact = ratio * channels
        width = 8 * math.floor(exact / 8 + 0.5)
        if width < 0.9 * exact:
            width += 8
        widths.add(min(width, channels))
    widths.add(channels)
    return sorted(widths)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_int(value: Any) -> Any:
    """``value`` as a plain int if it is an integer-like scalar (not bool), else unchanged."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if hasattr(value, "dtype") and getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        item = value.item()
        if isinstance(item, int) and not isinstance(item, bool):
            return item
    return value


@dataclass(frozen=True)
class Architecture:
    """A derived architecture: backbone, network-level path, and per-cell (op, width) choices.

    Instances are immutable and validated on construction (:class:`ArchitectureError`, which is
    both a ``ValueError`` and a :class:`trilevelnas.errors.UserError`, naming the bad field).
    ``cells`` is stored as tuples; :meth:`to_dict` gives the JSON form with lists.
    """

    backbone: str
    path: tuple[int, ...]
    cells: tuple[tuple[tuple[str, int], ...], ...]
    channels: int = 64
    scale: int = 4

    def __post_init__(self) -> None:
        # lists become tuples and integer-like values (numpy / torch scalars) plain ints
        object.__setattr__(self, "channels", _as_int(self.channels))
        object.__setattr__(self, "scale", _as_int(self.scale))
        if isinstance(self.path, (list, tuple)):
            object.__setattr__(self, "path", tuple(_as_int(s) for s in self.path))
        if isinstance(self.cells, (list, tuple)):
            cells = []
            for cell in self.cells:
                if isinstance(cell, (list, tuple)):
                    cell = tuple(tuple(e[:1]) + tuple(_as_int(v) for v in e[1:])
                                 if isinstance(e, (list, tuple)) else e for e in cell)
                cells.append(cell)
            object.__setattr__(self, "cells", tuple(cells))
        self._validate()

    # ----------------------------------------------------------------------------------- checks
    def _validate(self) -> None:
        if self.backbone not in BACKBONES:
            raise ArchitectureError(f"backbone must be one of {list(BACKBONES)}, got {self.backbone!r}")
        if not _is_int(self.channels) or self.channels < 1:
            raise ArchitectureError(f"channels must be a positive integer, got {self.channels!r}")
        if not _is_int(self.scale) or self.scale < 2:
            raise ArchitectureError(f"scale must be an integer >= 2, got {self.scale!r}")
        if self.backbone == "A" and self.scale & (self.scale - 1):
            raise ArchitectureError(
                f"scale must be a power of two for backbone A (nearest x2 upsampling steps), "
                f"got {self.scale}")
        if not isinstance(self.path, tuple):
            raise ArchitectureError(f"path must be a list of 0/1 steps, got {self.path!r}")
        for i, step in enumerate(self.path):
            if not _is_int(step) or step not in (0, 1):
                raise ArchitectureError(f"path[{i}] must be 0 (RiR cell) or 1, got {step!r}")
        if self.backbone == "A" and self.n_up > self.total_ups:
            raise ArchitectureError(
                f"path has {self.n_up} upsampling steps but backbone A at scale {self.scale} "
                f"takes at most {self.total_ups}")
        if not isinstance(self.cells, tuple):
            raise ArchitectureError(f"cells must be a list of cells, got {self.cells!r}")
        if len(self.cells) != self.n_rir:
            raise ArchitectureError(
                f"cells has {len(self.cells)} entries but path {list(self.path)} has {self.n_rir} "
                f"RiR cells (one entry per 0)")
        for c, cell in enumerate(self.cells):
            if not isinstance(cell, tuple) or len(cell) != OPS_PER_CELL:
                raise ArchitectureError(
                    f"cells[{c}] must hold {OPS_PER_CELL} [op, width] pairs, got {cell!r}")
            for j, entry in enumerate(cell):
                where = f"cells[{c}][{j}]"
                if not isinstance(entry, tuple) or len(entry) != 2:
                    raise ArchitectureError(f"{where} must be an [op, width] pair, got {entry!r}")
                op, width = entry
                if op not in OP_NAMES:
                    raise ArchitectureError(
                        f"{where} op must be one of {list(OP_NAMES)}, got {op!r}")
                if not _is_int(width) or not 1 <= width <= self.channels:
                    raise ArchitectureError(
                        f"{where} width must be an integer in [1, channels={self.channels}], "
                        f"got {width!r}")
            if cell[-1][1] != self.channels:
                raise ArchitectureError(
                    f"cells[{c}][{OPS_PER_CELL - 1}] width must equal channels={self.channels} "
                    f"(a cell returns to C channels), got {cell[-1][1]}")

    # ------------------------------------------------------------------------------- properties
    @property
    def n_rir(self) -> int:
        """Number of RiR cells (zeros) in the path."""
        return sum(1 for s in self.path if s == 0)

    @property
    def n_up(self) -> int:
        """Number of ones in the path (ups for backbone A, conv layers for backbone B)."""
        return sum(1 for s in self.path if s == 1)

    @property
    def total_ups(self) -> int:
        """Backbone A's number of nearest x2 steps, ``log2(scale)``; 0 for backbone B."""
        return self.scale.bit_length() - 1 if self.backbone == "A" else 0

    @property
    def full_path(self) -> tuple[int, ...]:
        """The path as the network runs it: for backbone A, completed with the missing ups."""
        if self.backbone == "A":
            return self.path + (1,) * (self.total_ups - self.n_up)
        return self.path

    # ------------------------------------------------------------------------------------- I/O
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Architecture":
        """Build and validate from the JSON form; unknown or missing keys are errors."""
        if not isinstance(data, Mapping):
            raise ArchitectureError(f"an architecture must be a JSON object, got {type(data).__name__}")
        required = ("backbone", "path", "cells")
        known = required + ("channels", "scale")
        for key in required:
            if key not in data:
                raise ArchitectureError(f"architecture is missing the field {key!r}")
        for key in data:
            if key not in known:
                raise ArchitectureError(f"unknown architecture field {key!r} (known: {list(known)})")
        return cls(backbone=data["backbone"], path=data["path"], cells=data["cells"],
                   channels=data.get("channels", 64), scale=data.get("scale", 4))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: plain dicts, lists, strings and ints."""
        return {"backbone": self.backbone, "path": list(self.path),
                "cells": [[[op, width] for op, width in cell] for cell in self.cells],
                "channels": self.channels, "scale": self.scale}

    @classmethod
    def from_json(cls, path: str | Path) -> "Architecture":
        """Read an architecture JSON file; every failure (missing, a folder, unreadable, not JSON or
        nested deeper than 64 levels, not an architecture) is an :class:`ArchitectureError` naming
        the file and the cause."""
        from .fileio import os_error
        from .settings import parse_json

        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ArchitectureError(str(os_error(exc, f"architecture file {str(path)!r}", "read"))) from None
        except UnicodeDecodeError:
            raise ArchitectureError(f"architecture file {str(path)!r} is not a text (JSON) file") from None
        try:
            data = parse_json(text)  # bounded nesting; an over-long integer is refused by its field
        except json.JSONDecodeError as exc:
            raise ArchitectureError(f"architecture file {str(path)!r} is not valid JSON: {exc}") from None
        try:
            return cls.from_dict(data)
        except ArchitectureError as exc:
            raise ArchitectureError(f"architecture file {str(path)!r}: {exc}") from None

    def to_json(self, path: str | Path) -> None:
        """Write the JSON form to ``path``."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def preset(cls, name: str) -> "Architecture":
        """One of the paper's architectures by name (:data:`PRESET_NAMES`)."""
        if name not in PRESET_NAMES:
            raise ArchitectureError(f"unknown preset {name!r} (known: {list(PRESET_NAMES)})")
        text = resources.files("trilevelnas").joinpath("presets", f"{name}.json").read_text("utf-8")
        return cls.from_dict(json.loads(text))


__all__ = ["Architecture", "ArchitectureError", "OP_NAMES", "BACKBONES", "OPS_PER_CELL",
           "WIDTH_RATIOS", "PRESET_NAMES", "PAPER_COMPLEXITY", "width_set"]
