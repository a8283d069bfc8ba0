"""Saving and loading SR networks together with what is needed to rebuild them.

A model file is a plain ``torch.save`` dict readable with ``weights_only=True`` (no pickled code)::

    {"format": "trilevelnas-model", "version": 1,
     "kind": "derived" | "rrdbnet",
     "arch": Architecture.to_dict()          # kind "derived"
           | {"nf", "nb", "gc", "scale"},    # kind "rrdbnet"
     "state_dict": {name: tensor},
     "meta": {...}}                          # optional, JSON-like (e.g. training epoch, PSNR)

:func:`load_model` also accepts a raw RRDBNet/ESRGAN weight file in any key style and wrapper
(it is loaded as by :func:`trilevelnas.models.load_teacher`, but trainable), so ESRGAN itself can be
evaluated, upscaled with or exported like a derived network.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..arch import Architecture, ArchitectureError
from ..errors import InputFileError, UserError
from ..fileio import check_plain, save_torch
from .derived import DerivedNetwork, build
from .rrdbnet import RRDBNet, read_checkpoint, rrdbnet_from_state_dict, unwrap_checkpoint

FORMAT = "trilevelnas-model"
VERSION = 1


def save_model(model: nn.Module, path: str | Path, meta: dict[str, Any] | None = None) -> None:
    """Write ``model`` (a :class:`DerivedNetwork` or :class:`RRDBNet`) with its architecture to ``path``.

    ``meta`` is stored alongside; it must hold only plain values (str, int, float, bool, None,
    lists/dicts of them, tensors) so the file stays loadable with ``weights_only=True``.
    """
    check_plain(meta or {}, "meta")
    if isinstance(model, DerivedNetwork):
        kind, arch = "derived", model.arch.to_dict()
    elif isinstance(model, RRDBNet):
        kind, arch = "rrdbnet", model.config()
    else:
        raise TypeError(f"save_model takes a DerivedNetwork or RRDBNet, got {type(model).__name__}")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "kind": kind, "arch": arch,
               "state_dict": state, "meta": dict(meta or {})}
    save_torch(payload, str(path), "model file")


def read_model_file(path: str | Path) -> dict[str, Any]:
    """The checked contents of a :func:`save_model` file (``kind``, ``arch``, ``state_dict``, ``meta``)."""
    return _checked(read_checkpoint(path), repr(str(path)))


def _checked(obj: Any, source: str) -> dict[str, Any]:
    if not (isinstance(obj, dict) and obj.get("format") == FORMAT):
        raise InputFileError(f"{source} is not a trilevelnas model file")
    if obj.get("version") != VERSION:
        raise InputFileError(f"{source}: model file version {obj.get('version')!r} is not supported "
                        f"(this trilevelnas reads version {VERSION})")
    for key in ("kind", "arch", "state_dict"):
        if key not in obj:
            raise InputFileError(f"{source}: model file lacks its {key!r} entry")
    return obj


def _load_strict(model: nn.Module, state: dict, source: str) -> None:
    target = model.state_dict()
    for k, v in state.items():
        if k not in target:
            raise InputFileError(f"{source}: unexpected key {k!r} for its architecture")
        if not isinstance(v, torch.Tensor) or tuple(v.shape) != tuple(target[k].shape):
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise InputFileError(f"{source}: key {k!r} has shape {shape}, its architecture needs "
                            f"{tuple(target[k].shape)}")
    missing = [k for k in target if k not in state]
    if missing:
        raise InputFileError(f"{source}: missing key {missing[0]!r}"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    model.load_state_dict(state, strict=True)


def load_model(path: str | Path) -> nn.Module:
    """Rebuild and strictly load a model written by :func:`save_model`, or a raw RRDBNet weight file.

    Returns the network in eval mode, trainable. Errors (missing file, not a model file, an
    architecture or a tensor that does not fit) are :class:`~trilevelnas.errors.InputFileError` naming the file.
    """
    source = repr(str(path))
    obj = read_checkpoint(path)
    if not (isinstance(obj, dict) and "format" in obj):
        try:
            return rrdbnet_from_state_dict(unwrap_checkpoint(obj, source), source).eval()
        except UserError as exc:
            detail = str(exc)[len(source) + 2:] if str(exc).startswith(source) else str(exc)
            raise InputFileError(f"{source} is neither a trilevelnas model file (save_model) nor "
                            f"RRDBNet/ESRGAN weights: {detail}") from None
    obj = _checked(obj, source)
    kind, arch = obj["kind"], obj["arch"]
    if kind == "derived":
        try:
            model: nn.Module = build(Architecture.from_dict(arch))
        except ArchitectureError as exc:
            raise ArchitectureError(f"{source}: {exc}") from None
    elif kind == "rrdbnet":
        if not isinstance(arch, dict) or set(arch) != {"nf", "nb", "gc", "scale"}:
            raise InputFileError(f"{source}: RRDBNet config must have nf, nb, gc, scale; got {arch!r}")
        model = RRDBNet(**arch)
    else:
        raise InputFileError(f"{source}: unknown model kind {kind!r} (known: 'derived', 'rrdbnet')")
    _load_strict(model, obj["state_dict"], source)
    return model.eval()


def model_architecture(model: nn.Module) -> Architecture | None:
    """The :class:`Architecture` of a derived network, None for other models (e.g. RRDBNet)."""
    return model.arch if isinstance(model, DerivedNetwork) else None


__all__ = ["save_model", "load_model", "read_model_file", "model_architecture", "FORMAT", "VERSION"]
