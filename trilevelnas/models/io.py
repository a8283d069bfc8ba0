"""Saving and loading SR networks together with what is needed to rebuild them.

A model file is a plain ``torch.save`` dict readable with ``weights_only=True`` (no pickled code)::

    {"format": "trilevelnas-model", "version": 2,
     "kind": "derived" | "rrdbnet" | "srvgg" | "baseline",
     "arch": Architecture.to_dict()          # kind "derived"
           | {"nf", "nb", "gc", "scale"[, "unshuffle"]}   # kind "rrdbnet"
           | SRVGGNetCompact.config(),       # kind "srvgg"
           | {"name", "scale", sizes},       # kind "baseline" (models/baselines.py config())
     "state_dict": {name: tensor},
     "meta": {...},                          # optional, JSON-like (e.g. training epoch, PSNR)
     "sha256": ...}                          # content_digest of everything else (version 2)

Loading checks the digest (a bit flipped anywhere is an error; version 1 files, which carry none,
still load), then builds the declared architecture on the ``meta`` device — no memory — and
compares its tensors' names and shapes with those in the file before the real network is built,
so a small file that declares a huge network is refused without allocating it.

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
from ..fileio import check_plain, check_seal, save_torch
from .baselines import BASELINE_TYPES, build_baseline
from .derived import DerivedNetwork, build
from .rrdbnet import RRDBNet, read_checkpoint, rrdbnet_from_state_dict, unwrap_checkpoint
from .srvgg import SRVGGNetCompact
from .weights import check_state_dict, load_network, network_from_state_dict, sniff_format

FORMAT = "trilevelnas-model"
VERSION = 2
#: Model-file versions this trilevelnas reads (version 1: before the content digest).
READS = (1, 2)


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
    elif isinstance(model, SRVGGNetCompact):
        kind, arch = "srvgg", model.config()
    elif isinstance(model, BASELINE_TYPES):
        kind, arch = "baseline", model.config()
    else:
        raise TypeError(f"save_model takes a DerivedNetwork or RRDBNet, got {type(model).__name__}")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "kind": kind, "arch": arch,
               "state_dict": state, "meta": dict(meta or {})}
    save_torch(payload, str(path), "model file", seal=True)


def read_model_file(path: str | Path) -> dict[str, Any]:
    """The checked contents of a :func:`save_model` file (``kind``, ``arch``, ``state_dict``, ``meta``)."""
    return _checked(read_checkpoint(path), repr(str(path)))


def _checked(obj: Any, source: str) -> dict[str, Any]:
    if not (isinstance(obj, dict) and obj.get("format") == FORMAT):
        raise InputFileError(f"{source} is not a trilevelnas model file")
    if obj.get("version") not in READS:
        raise InputFileError(f"{source}: model file version {obj.get('version')!r} is not supported "
                        f"(this trilevelnas reads versions {', '.join(map(str, READS))})")
    if obj["version"] >= 2:
        check_seal(obj, source.strip("'"), "model file")
    for key in ("kind", "arch", "state_dict"):
        if key not in obj:
            raise InputFileError(f"{source}: model file lacks its {key!r} entry")
    state = obj["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise InputFileError(f"{source}: the model file's 'state_dict' is not a dict of named tensors "
                             f"(it is a {type(state).__name__})")
    return obj


def _build_checked(make, state: dict, source: str) -> nn.Module:
    """``make()`` loaded strictly with ``state``, once ``make()`` built on the meta device (no
    memory) has shown that it holds exactly ``state``'s names and shapes."""
    with torch.device("meta"):
        skeleton = make()
    check_state_dict(skeleton.state_dict(), state, source)
    del skeleton
    model = make()
    model.load_state_dict(state, strict=True)
    return model


def load_model(path: str | Path) -> nn.Module:
    """Rebuild and strictly load a model written by :func:`save_model`, or a raw RRDBNet weight file.

    Returns the network in eval mode, trainable. Errors (missing file, not a model file, an
    architecture or a tensor that does not fit) are :class:`~trilevelnas.errors.InputFileError` naming the file.
    """
    source = repr(str(path))
    if sniff_format(path) != "torch":  # ncnn .param/.bin or .safetensors weights
        return load_network(path).train(False)
    obj = read_checkpoint(path)
    if not (isinstance(obj, dict) and "format" in obj):
        try:
            return network_from_state_dict(unwrap_checkpoint(obj, source), source).eval()
        except UserError as exc:
            detail = str(exc)[len(source) + 2:] if str(exc).startswith(source) else str(exc)
            raise InputFileError(f"{source} is neither a trilevelnas model file (save_model) nor "
                            f"RRDBNet/ESRGAN/SRVGGNetCompact weights: {detail}") from None
    obj = _checked(obj, source)
    kind, arch, state = obj["kind"], obj["arch"], obj["state_dict"]
    if kind == "derived":
        try:
            declared = Architecture.from_dict(arch)
        except ArchitectureError as exc:
            raise ArchitectureError(f"{source}: {exc}") from None
        return _build_checked(lambda: build(declared), state, source).eval()
    if kind == "rrdbnet":
        import inspect

        known = set(inspect.signature(RRDBNet).parameters)
        if not isinstance(arch, dict) or not {"nf", "nb", "gc", "scale"} <= set(arch) <= known:
            raise InputFileError(f"{source}: RRDBNet config must have nf, nb, gc, scale"
                                 f" (and optionally {', '.join(sorted(known - {'nf', 'nb', 'gc', 'scale'}))});"
                                 f" got {arch!r}"[:300])
        blocks = len({k.split(".")[1] for k in state if k.startswith("body.") and k.count(".") > 1})
        if arch["nb"] != blocks:  # before building, even on meta: nb sets the module count
            raise InputFileError(f"{source}: declares an RRDBNet of nb={arch['nb']!r} blocks but holds "
                                 f"the weights of {blocks}")
        return _build_checked(lambda: RRDBNet(**arch), state, source).eval()
    if kind == "srvgg":
        return _build_checked(lambda: _srvgg(arch, state, source), state, source).eval()
    if kind == "baseline":
        return _build_checked(lambda: _baseline(arch, source), state, source).eval()
    raise InputFileError(f"{source}: unknown model kind {kind!r} (known: 'derived', 'rrdbnet', 'srvgg', "
                         "'baseline')")


def _baseline(arch: Any, source: str) -> nn.Module:
    """The textbook baseline of a model file's ``arch`` (its ``config()``)."""
    try:
        return build_baseline(arch)
    except UserError as exc:
        raise InputFileError(f"{source}: {exc}") from None


def _srvgg(arch: Any, state: dict, source: str) -> SRVGGNetCompact:
    """The SRVGGNetCompact of a model file's ``arch`` (its ``config()``), checked against the
    number of convolutions ``state`` holds before anything is built."""
    known = {"nf", "n_conv", "upscale", "act", "scale", "channels"}
    if not isinstance(arch, dict) or set(arch) != known:
        raise InputFileError(f"{source}: SRVGGNetCompact config must have {', '.join(sorted(known))}; "
                             f"got {arch!r}"[:300])
    convs = sum(1 for k, v in state.items() if k.startswith("body.") and k.endswith(".weight") and v.dim() == 4)
    if arch["n_conv"] != convs - 2:
        raise InputFileError(f"{source}: declares an SRVGGNetCompact of n_conv={arch['n_conv']!r} but "
                             f"holds {convs} convolutions (n_conv + 2)")
    try:
        return SRVGGNetCompact(**arch)
    except UserError as exc:
        raise InputFileError(f"{source}: {exc}") from None


def model_architecture(model: nn.Module) -> Architecture | None:
    """The :class:`Architecture` of a derived network, None for other models (e.g. RRDBNet)."""
    return model.arch if isinstance(model, DerivedNetwork) else None


__all__ = ["save_model", "load_model", "read_model_file", "model_architecture", "FORMAT", "VERSION"]
