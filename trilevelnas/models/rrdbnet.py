"""ESRGAN's RRDBNet (the teacher) and a strict loader for its three weight-key styles.

The module uses BasicSR's names internally: ``conv_first``, ``body.{i}.rdb{1,2,3}.conv{1..5}``,
``conv_body``, ``conv_up{1..n}`` (one per nearest x2 step), ``conv_hr``, ``conv_last``.

Weight files seen in the wild, all accepted by :func:`load_teacher`:

- ``"2018"``: the original SRGAN-era ``RRDB_net`` (e.g. ``RRDB_ESRGAN_x4_old_arch.pth``), one flat
  ``model.N`` sequential: ``model.0`` conv_first, ``model.1.sub.{i}.RDB{k}.conv{j}.0`` the dense
  blocks, ``model.1.sub.{nb}`` the trunk conv, then ``model.{3+3u}`` for up ``u``, ``model.{2+3n}``
  the HR conv and ``model.{4+3n}`` the last conv (n ups);
- ``"esrgan"``: ``conv_first``, ``RRDB_trunk.{i}.RDB{k}.conv{j}``, ``trunk_conv``, ``upconv{u}``,
  ``HRconv``, ``conv_last`` (``RRDB_ESRGAN_x4.pth``, ``RRDB_PSNR_x4.pth``);
- ``"basicsr"``: the internal names (BasicSR / Real-ESRGAN releases).

Any of them may be wrapped as ``{"params_ema": ...}`` and/or ``{"params": ...}`` (BasicSR; when
both are present the EMA weights are used, as BasicSR and Real-ESRGAN do for inference),
``{"state_dict": ...}``, and carry DataParallel ``module.`` prefixes. A ``conv_first`` with 12 or
48 input channels is Real-ESRGAN's x2 / x1 network (pixel-unshuffle input, ``unshuffle`` 2 / 4).
:func:`load_teacher` also reads ``.safetensors`` and ncnn ``.param`` + ``.bin`` files and
SRVGGNetCompact weights (:mod:`.weights`, docs/teachers.md).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..fileio import load_torch

KEY_STYLES = ("2018", "esrgan", "basicsr")
WRAPPER_KEYS = ("params_ema", "params", "state_dict")
"""Checkpoint wrapper keys, in order of preference."""


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs (growth ``gc``); returns ``0.2·conv5 + x``."""

    def __init__(self, nf: int = 64, gc: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, padding=1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, padding=1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, padding=1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, padding=1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = F.leaky_relu(self.conv1(x), 0.2)
        x2 = F.leaky_relu(self.conv2(torch.cat((x, x1), 1)), 0.2)
        x3 = F.leaky_relu(self.conv3(torch.cat((x, x1, x2), 1)), 0.2)
        x4 = F.leaky_relu(self.conv4(torch.cat((x, x1, x2, x3), 1)), 0.2)
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return 0.2 * x5 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, returns ``0.2·out + x``."""

    def __init__(self, nf: int = 64, gc: int = 32):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(nf, gc)
        self.rdb2 = ResidualDenseBlock(nf, gc)
        self.rdb3 = ResidualDenseBlock(nf, gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.2 * self.rdb3(self.rdb2(self.rdb1(x))) + x


class RRDBNet(nn.Module):
    """ESRGAN's generator: ``nb`` RRDBs of width ``nf`` and growth ``gc``, ``scale`` = 1, 2, 4, 8 ...

    Upsampling is ``log2(scale * unshuffle)`` nearest x2 steps, each a 3x3 conv + LeakyReLU(0.2).
    ``RRDBNet()`` is ESRGAN's x4 teacher (nf 64, nb 23, gc 32: 16.70M parameters).

    ``unshuffle`` = 2 or 4 is Real-ESRGAN's x2 / x1 variant (``RealESRGAN_x2plus``): the input is
    pixel-unshuffled first, so ``conv_first`` takes ``3 * unshuffle**2`` channels and the network
    upsamples by ``scale * unshuffle``. Inputs whose sides are not multiples of ``unshuffle`` are
    reflect-padded on the right/bottom and the output cropped back (what Real-ESRGAN's inference
    does), so any size works.
    """

    def __init__(self, nf: int = 64, nb: int = 23, gc: int = 32, scale: int = 4, unshuffle: int = 1):
        super().__init__()
        for name, value in (("nf", nf), ("gc", gc)):
            if not isinstance(value, int) or value < 1:
                raise UserError(f"RRDBNet {name} must be a positive integer, got {value!r}")
        if not isinstance(nb, int) or nb < 0:
            raise UserError(f"RRDBNet nb must be a non-negative integer, got {nb!r}")
        if unshuffle not in (1, 2, 4):
            raise UserError(f"RRDBNet unshuffle must be 1, 2 or 4, got {unshuffle!r}")
        if (not isinstance(scale, int) or scale < 1 or scale & (scale - 1)
                or scale * unshuffle < 2):
            raise UserError(f"RRDBNet scale must be a power of two >= {2 // unshuffle or 1}"
                            f"{f' with unshuffle {unshuffle}' if unshuffle > 1 else ''}, got {scale!r}")
        self.nf, self.nb, self.gc, self.scale, self.unshuffle = nf, nb, gc, scale, unshuffle
        self.conv_first = nn.Conv2d(3 * unshuffle ** 2, nf, 3, padding=1)
        if unshuffle > 1:
            self.pixel_unshuffle = nn.PixelUnshuffle(unshuffle)
        self.body = nn.Sequential(*[RRDB(nf, gc) for _ in range(nb)])
        self.conv_body = nn.Conv2d(nf, nf, 3, padding=1)
        self.n_up = (scale * unshuffle).bit_length() - 1
        for u in range(1, self.n_up + 1):
            setattr(self, f"conv_up{u}", nn.Conv2d(nf, nf, 3, padding=1))
        self.conv_hr = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_last = nn.Conv2d(nf, 3, 3, padding=1)

    def config(self) -> dict[str, int]:
        """The constructor arguments, ``{"nf", "nb", "gc", "scale"}`` (and ``"unshuffle"`` when not 1)."""
        config = {"nf": self.nf, "nb": self.nb, "gc": self.gc, "scale": self.scale}
        if self.unshuffle > 1:
            config["unshuffle"] = self.unshuffle
        return config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            size = x.shape[-2:]
            out = self._forward(self.pixel_unshuffle(_pad_to_multiple(x, self.unshuffle)))
            return _crop_to(out, size, self.scale)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for u in range(1, self.n_up + 1):
            up = getattr(self, f"conv_up{u}")
            feat = F.leaky_relu(up(F.interpolate(feat, scale_factor=2.0, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """``x`` reflect-padded on the right and bottom to sides that are multiples of ``multiple``
    (replicate-padded where a side is too short to reflect). Always one ``F.pad`` (maybe by 0),
    with the amounts computed from the shape, so traced exports keep it for every input size."""
    h, w = x.shape[-2], x.shape[-1]
    ph, pw = (multiple - h % multiple) % multiple, (multiple - w % multiple) % multiple
    tiny = not torch.jit.is_tracing() and min(x.shape[-2:]) < multiple  # too short to reflect
    mode = "replicate" if tiny else "reflect"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def _crop_to(out: torch.Tensor, size, scale: int) -> torch.Tensor:
    """The top-left ``size * scale`` window of ``out``."""
    return out[..., :size[0] * scale, :size[1] * scale]


# Opaque to torch.fx: the padding depends on the input size, which a symbolic trace cannot know
# (trilevelnas.inference.receptive_radius treats them as pointwise).
torch.fx.wrap("_pad_to_multiple")
torch.fx.wrap("_crop_to")


# ------------------------------------------------------------------------------ key styles
_RDB_ESRGAN = re.compile(r"RRDB_trunk\.(\d+)\.RDB([123])\.conv([1-5])\.(weight|bias)$")
_RDB_2018 = re.compile(r"model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)$")
_TRUNK_2018 = re.compile(r"model\.1\.sub\.(\d+)\.(weight|bias)$")
_TOP_2018 = re.compile(r"model\.(\d+)\.(weight|bias)$")
_UP_ESRGAN = re.compile(r"upconv(\d+)\.(weight|bias)$")
_ESRGAN_RENAMES = {"trunk_conv": "conv_body", "HRconv": "conv_hr",
                   "conv_first": "conv_first", "conv_last": "conv_last"}


def detect_style(keys) -> str:
    """The key style (one of :data:`KEY_STYLES`) of an unwrapped RRDBNet state dict's keys."""
    keys = list(keys)
    if any(k.startswith("model.") for k in keys):
        return "2018"
    if any(k.startswith(("RRDB_trunk.", "trunk_conv.", "HRconv.", "upconv")) for k in keys):
        return "esrgan"
    if any(k.startswith(("body.", "conv_body.", "conv_hr.", "conv_up")) for k in keys):
        return "basicsr"
    raise UserError("not an RRDBNet/ESRGAN weight file: no key looks like any of the 2018 "
                    "(model.N), ESRGAN (RRDB_trunk/trunk_conv) or BasicSR (body/conv_body) styles")


def _to_basicsr(state: Mapping[str, torch.Tensor], style: str) -> dict[str, tuple[str, torch.Tensor]]:
    """Rename to BasicSR keys; values are (original key, tensor). Unknown keys raise UserError."""
    out: dict[str, tuple[str, torch.Tensor]] = {}

    def put(new: str, old: str) -> None:
        if new in out:
            raise UserError(f"keys {out[new][0]!r} and {old!r} both map to {new!r}")
        out[new] = (old, state[old])

    if style == "basicsr":
        for k in state:
            put(k, k)
        return out
    if style == "esrgan":
        for k in state:
            if m := _RDB_ESRGAN.match(k):
                put(f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}", k)
            elif m := _UP_ESRGAN.match(k):
                put(f"conv_up{m[1]}.{m[2]}", k)
            elif (head := k.rsplit(".", 1)[0]) in _ESRGAN_RENAMES and k.rsplit(".", 1)[1] in ("weight", "bias"):
                put(f"{_ESRGAN_RENAMES[head]}.{k.rsplit('.', 1)[1]}", k)
            else:
                raise UserError(f"unexpected key {k!r} for the ESRGAN key style")
        return out
    # 2018: the trunk conv is the one bare conv under model.1.sub; top-level convs after model.1
    # are the ups (model.3, 6, ...), the HR conv and the last conv.
    trunk = {m[1] for k in state if (m := _TRUNK_2018.match(k))}
    if len(trunk) != 1:
        raise UserError(f"2018-style weights need exactly one trunk conv model.1.sub.N, found "
                        f"{sorted(trunk) or 'none'}")
    trunk_index = trunk.pop()
    blocks = {int(m[1]) for k in state if (m := _RDB_2018.match(k))}
    if int(trunk_index) != len(blocks):
        raise UserError(f"2018-style weights have {len(blocks)} RRDBs but the trunk conv is "
                        f"model.1.sub.{trunk_index}; expected model.1.sub.{len(blocks)}")
    top = sorted({int(m[1]) for k in state if (m := _TOP_2018.match(k))})
    convs = [i for i in top if i >= 2]
    n_up = len(convs) - 2
    expected = [3 + 3 * u for u in range(n_up)] + [2 + 3 * n_up, 4 + 3 * n_up]
    if 0 not in top or convs != expected:
        raise UserError(f"2018-style weights have top-level convs model.{top} but an RRDB_net with "
                        f"{max(n_up, 0)} ups has model.{[0] + expected}")
    names = {0: "conv_first", 2 + 3 * n_up: "conv_hr", 4 + 3 * n_up: "conv_last"}
    names.update({3 + 3 * u: f"conv_up{u + 1}" for u in range(n_up)})
    for k in state:
        if m := _RDB_2018.match(k):
            put(f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}", k)
        elif (m := _TRUNK_2018.match(k)) and m[1] == trunk_index:
            put(f"conv_body.{m[2]}", k)
        elif m := _TOP_2018.match(k):
            put(f"{names[int(m[1])]}.{m[2]}", k)
        else:
            raise UserError(f"unexpected key {k!r} for the 2018 (model.N) key style")
    return out


def convert_state_dict(state: Mapping[str, torch.Tensor], style: str, nb: int | None = None,
                       n_up: int | None = None) -> dict[str, torch.Tensor]:
    """An RRDBNet state dict (BasicSR keys, as ``RRDBNet.state_dict()``) renamed to ``style``.

    The inverse of what :func:`load_teacher` reads, so weights can be written in any of the three
    styles. ``style`` is one of :data:`KEY_STYLES`; ``nb``/``n_up`` (number of RRDBs / ups, which
    fix the 2018 style's indices) default to what ``state`` holds.
    """
    if style not in KEY_STYLES:
        raise ValueError(f"style must be one of {KEY_STYLES}, got {style!r}")
    if style == "basicsr":
        return dict(state)
    if n_up is None:
        n_up = sum(1 for k in state if re.fullmatch(r"conv_up\d+\.weight", k))
    if nb is None:
        nb = len({k.split(".")[1] for k in state if k.startswith("body.")})
    out = {}
    for k, v in state.items():
        head, leaf = k.rsplit(".", 1)
        if m := re.fullmatch(r"body\.(\d+)\.rdb([123])\.conv([1-5])", head):
            new = (f"RRDB_trunk.{m[1]}.RDB{m[2]}.conv{m[3]}.{leaf}" if style == "esrgan"
                   else f"model.1.sub.{m[1]}.RDB{m[2]}.conv{m[3]}.0.{leaf}")
        elif m := re.fullmatch(r"conv_up(\d+)", head):
            new = (f"upconv{m[1]}.{leaf}" if style == "esrgan"
                   else f"model.{3 + 3 * (int(m[1]) - 1)}.{leaf}")
        elif style == "esrgan":
            new = {"conv_first": "conv_first", "conv_body": "trunk_conv", "conv_hr": "HRconv",
                   "conv_last": "conv_last"}[head] + f".{leaf}"
        else:
            new = {"conv_first": "model.0", "conv_body": f"model.1.sub.{nb}",
                   "conv_hr": f"model.{2 + 3 * n_up}", "conv_last": f"model.{4 + 3 * n_up}"}[head] + f".{leaf}"
        out[new] = v
    return out


def unwrap_checkpoint(obj, source: str, key: str | None = None) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint: ``params_ema`` > ``params`` > ``state_dict`` > itself,
    with ``module.`` prefixes removed. ``key`` forces one wrapper key."""
    if not isinstance(obj, Mapping):
        raise UserError(f"{source}: expected a dict of weights, found a {type(obj).__name__}")
    if key is not None:
        if key not in obj:
            raise UserError(f"{source}: has no {key!r} entry (top-level keys: {sorted(obj)[:8]})")
        obj = obj[key]
    else:
        for wrapper in WRAPPER_KEYS:
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping):
        raise UserError(f"{source}: the weights entry is a {type(obj).__name__}, not a dict")
    state = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise UserError(f"{source}: entry {k!r} is not a named tensor; not a weight file")
        name = k[len("module."):] if k.startswith("module.") else k
        if name in state:
            raise UserError(f"{source}: key {k!r} duplicates {name!r} once 'module.' is removed")
        state[name] = v
    return state


def read_checkpoint(path: str | Path):
    """``torch.load(path, weights_only=True)`` with user errors naming the file
    (:func:`trilevelnas.fileio.load_torch`)."""
    return load_torch(str(path), "weight file")


def rrdbnet_from_state_dict(state: Mapping[str, torch.Tensor], source: str = "weights") -> RRDBNet:
    """An :class:`RRDBNet` with nb/nf/gc/scale inferred from ``state`` (any key style), loaded strictly.

    Raises :class:`~trilevelnas.errors.UserError` naming ``source`` and the key for a missing,
    unexpected or mis-shaped entry.
    """
    try:
        style = detect_style(state)
        mapped = _to_basicsr(state, style)
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
    if "conv_first.weight" not in mapped:
        raise UserError(f"{source}: {style}-style weights lack the first conv "
                        f"({convert_state_dict({'conv_first.weight': None}, style).popitem()[0]!r})")
    first = mapped["conv_first.weight"][1]
    unshuffle = {3: 1, 12: 2, 48: 4}.get(first.shape[1]) if first.dim() == 4 else None
    if unshuffle is None:
        raise UserError(f"{source}: key {mapped['conv_first.weight'][0]!r} has shape {tuple(first.shape)}; "
                        f"expected [nf, 3, 3, 3] (a 3-channel RRDBNet), or 12 / 48 input channels "
                        f"(Real-ESRGAN's x2 / x1 with pixel-unshuffle)")
    nf = first.shape[0]
    nb = len({k.split(".")[1] for k in mapped if k.startswith("body.")})
    gc = mapped["body.0.rdb1.conv1.weight"][1].shape[0] if "body.0.rdb1.conv1.weight" in mapped else 32
    n_up = sum(1 for k in mapped if re.fullmatch(r"conv_up\d+\.weight", k))
    if 2 ** n_up < max(unshuffle, 2):
        raise UserError(f"{source}: {n_up} upsampling conv(s) after a x{unshuffle} pixel-unshuffle; "
                        f"not an RRDBNet SR generator")
    scale = 2 ** n_up // unshuffle
    model = RRDBNet(nf=nf, nb=nb, gc=gc, scale=scale, unshuffle=unshuffle)
    target = model.state_dict()
    for k, (orig, tensor) in mapped.items():
        if k not in target:
            raise UserError(f"{source}: unexpected key {orig!r} for an RRDBNet(nf={nf}, nb={nb}, "
                            f"gc={gc}, scale={scale})")
        if tuple(tensor.shape) != tuple(target[k].shape):
            raise UserError(f"{source}: key {orig!r} has shape {tuple(tensor.shape)}, expected "
                            f"{tuple(target[k].shape)} for an RRDBNet(nf={nf}, nb={nb}, gc={gc})")
    missing = [k for k in target if k not in mapped]
    if missing:
        names = list(convert_state_dict({k: None for k in missing}, style, nb=nb, n_up=n_up))
        raise UserError(f"{source}: missing key {names[0]!r}"
                        + (f" (and {len(names) - 1} more)" if len(names) > 1 else ""))
    model.load_state_dict({k: t for k, (_, t) in mapped.items()}, strict=True)
    return model


def load_teacher(path: str | Path, key: str | None = None) -> nn.Module:
    """Load a teacher weight file: ESRGAN/RRDBNet in any key style and wrapper (see module
    docstring), Real-ESRGAN's SRVGGNetCompact, as ``.pth``, ``.safetensors`` or ncnn ``.param`` +
    ``.bin`` (:func:`trilevelnas.models.weights.load_network`).

    Returns the network frozen (``requires_grad=False``) in eval mode, its architecture and scale
    inferred from the weights. ``key`` forces a wrapper entry (e.g. ``"params"`` instead of
    ``"params_ema"``).
    """
    from .weights import load_network

    return load_network(path, key).eval().requires_grad_(False)


__all__ = ["RRDBNet", "RRDB", "ResidualDenseBlock", "load_teacher", "convert_state_dict",
           "rrdbnet_from_state_dict", "unwrap_checkpoint", "read_checkpoint", "detect_style",
           "KEY_STYLES", "WRAPPER_KEYS"]
