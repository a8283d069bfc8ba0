"""Inference helpers shared by the evaluate / upscale / export programs.

:func:`upscale_tensor` runs an SR network on a batch, whole or in tiles (Real-ESRGAN's scheme:
each ``tile x tile`` LR tile is run with ``tile_pad`` extra LR pixels of context on every side that
the image has, and only the tile's own output is kept). Once ``tile_pad`` covers the network's
receptive-field radius (in LR pixels), tiled and whole-image outputs agree up to float rounding.
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from .errors import UserError
from .devices import resolve_device

__all__ = ["choose_device", "model_scale", "upscale_tensor", "autocast_dtype",
           "load_model_file", "receptive_radius", "check_tile", "MIN_TILE", "outscale_size",
           "lanczos_resize", "pre_pad_input"]

MIN_TILE = 16
"""The smallest ``--tile`` the programs take (besides 0, no tiling): see :func:`check_tile`."""


def choose_device(name: str = "auto") -> torch.device:
    """``"auto"`` → CUDA if available, else CPU; otherwise the named device (checked)."""
    return resolve_device(name, "--device")


def autocast_dtype(half: bool, bf16: bool, device: torch.device) -> torch.dtype | None:
    """The reduced precision asked for (``--half`` / ``--bf16``), allowed on CUDA only."""
    if half and bf16:
        raise UserError("choose one of --half and --bf16")
    if not (half or bf16):
        return None
    flag = "--half" if half else "--bf16"
    if device.type != "cuda":
        raise UserError(f"{flag} needs a CUDA device (running on {device}); fp32 is used on CPU")
    return torch.float16 if half else torch.bfloat16


def load_model_file(path) -> nn.Module:
    """:func:`trilevelnas.models.load_model` in eval mode; its errors always name the file."""
    from .models import load_model

    try:
        return load_model(path).eval()
    except UserError as exc:
        message = str(exc)
        if str(path) in message:
            raise
        raise UserError(f"model file {str(path)!r}: {message}") from None


@torch.no_grad()
def model_scale(model: nn.Module) -> int:
    """The upscaling factor of ``model``: its architecture's / ``scale`` attribute, else probed."""
    arch = getattr(model, "arch", None)
    scale = getattr(arch, "scale", None) or getattr(model, "scale", None)
    if isinstance(scale, int) and scale >= 1:
        return scale
    param = next(model.parameters(), None)
    probe = torch.zeros(1, 3, 8, 8, device=param.device if param is not None else "cpu")
    out = model(probe)
    if out.shape[-1] % 8 or out.shape[-2] != out.shape[-1]:
        raise UserError(f"cannot tell the scale of {type(model).__name__}: 8x8 → {tuple(out.shape[-2:])}")
    return out.shape[-1] // 8


_POINTWISE_MODULES = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
                      nn.Identity, nn.Dropout, nn.BatchNorm2d)


def receptive_radius(model: nn.Module) -> int:
    """An upper bound on the receptive-field radius of ``model`` in LR pixels (a safe ``tile_pad``).

    Traces the model with ``torch.fx`` and adds, along every path, ``(k - 1) / 2 * dilation / s``
    for each ``nn.Conv2d`` running at ``s`` times the LR resolution, plus ``1 / s`` for each
    upsampling step from resolution ``s`` (nearest-neighbour index rounding; one more
    ``new_scale``-pixel for other interpolation modes); the result is rounded up. A pixel
    unshuffle by ``r`` (Real-ESRGAN x2 / x1) adds ``(r - 1) / s`` and rounds the result up to a
    multiple of ``r``: tiles then start on its grid when ``tile`` is a multiple of ``r`` too. Raises
    :class:`UserError` for what it cannot bound (strided convs, unknown layers, untraceable code).
    """
    import torch.fx as fx
    import torch.nn.functional as F

    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # fx raises many types for untraceable code
        raise UserError(f"cannot trace {type(model).__name__} to find its receptive field ({exc}); "
                        "give --tile-pad explicitly") from None
    modules = dict(model.named_modules())
    info: dict = {}
    align = 1  # a pixel unshuffle by r: tiles must start on its r-pixel grid, so the pad is a multiple of r
    for node in graph.nodes:
        inputs = [info[a] for a in node.all_input_nodes if a in info]
        radius = max((r for r, _ in inputs), default=0.0)
        scale = max((sc for _, sc in inputs), default=1.0)
        what = None
        if node.op == "call_module":
            mod = modules[node.target]
            if isinstance(mod, nn.Conv2d):
                kh, kw = mod.kernel_size
                dh, dw = mod.dilation
                if any(st != 1 for st in mod.stride):
                    what = f"strided convolution {node.target}"
                elif mod.padding not in ("same", ((kh - 1) // 2 * dh, (kw - 1) // 2 * dw)):
                    what = f"convolution {node.target} whose padding does not keep the size"
                radius += max((kh - 1) // 2 * dh, (kw - 1) // 2 * dw) / scale
            elif isinstance(mod, nn.PixelShuffle):
                radius, scale = radius + 1.0 / scale, scale * mod.upscale_factor
            elif isinstance(mod, nn.PixelUnshuffle):  # an output pixel sees its whole r x r block
                factor = mod.downscale_factor
                radius, scale = radius + (factor - 1) / scale, scale / factor
                align = math.lcm(align, factor)
            elif isinstance(mod, nn.Upsample):
                factor = float(mod.scale_factor)
                extra = 0.0 if mod.mode == "nearest" else 1.0 / (scale * factor)
                radius, scale = radius + 1.0 / scale + extra, scale * factor
            elif not isinstance(mod, _POINTWISE_MODULES):
                what = f"layer {node.target} ({type(mod).__name__})"
        elif node.op == "call_function" and node.target is F.interpolate:
            factor = node.kwargs.get("scale_factor", node.args[2] if len(node.args) > 2 else None)
            mode = node.kwargs.get("mode", node.args[3] if len(node.args) > 3 else "nearest")
            if not isinstance(factor, (int, float)):
                what = "interpolate without a constant scale_factor"
            else:
                extra = 0.0 if mode == "nearest" else 1.0 / (scale * factor)
                radius, scale = radius + 1.0 / scale + extra, scale * float(factor)
        elif node.op == "call_function" and node.target is F.pixel_shuffle:
            factor = node.args[1] if len(node.args) > 1 else node.kwargs["upscale_factor"]
            radius, scale = radius + 1.0 / scale, scale * factor
        elif node.op == "call_function" and getattr(node.target, "__name__", "") in (
                "conv2d", "conv_transpose2d", "avg_pool2d", "max_pool2d", "unfold", "pad"):
            what = f"function {node.target.__name__}"
        if what is not None:
            raise UserError(f"cannot bound the receptive field of {type(model).__name__}: {what}; "
                            "give --tile-pad explicitly")
        info[node] = (radius, scale)
    outputs = [info[a] for n in graph.nodes if n.op == "output" for a in n.all_input_nodes if a in info]
    radius = int(math.ceil(max((r for r, _ in outputs), default=0.0) - 1e-9))
    return -(-radius // align) * align


def check_tile(tile: int, tile_pad: int | None) -> None:
    """UserError unless the programs' ``--tile`` is 0 (whole images) or at least :data:`MIN_TILE`
    and at least ``tile_pad`` (after its default, the receptive-field radius, is filled in), and
    ``--tile-pad`` is >= 0.

    Each tile runs on up to ``(tile + 2 * tile_pad)²`` LR pixels to keep ``tile²``, and every tile is
    one forward pass: so the bound keeps the work of a tiled image within 9x the whole image's,
    and the passes at one per 256 LR pixels or fewer. (``--tile 1`` on a 96x96 image was 9,216
    passes of 33x33 pixels: minutes.) :func:`upscale_tensor` itself takes any ``tile >= 1``.
    """
    if tile_pad is not None and tile_pad < 0:
        raise UserError(f"--tile-pad {tile_pad}: must be >= 0")
    if tile < 0 or 0 < tile < MIN_TILE:
        raise UserError(f"--tile {tile}: must be 0 (no tiling) or at least {MIN_TILE} LR pixels")
    if tile and tile_pad is not None and tile < tile_pad:
        raise UserError(f"--tile {tile}: must be at least the tile pad {tile_pad} (each tile runs with "
                        f"{tile_pad} LR pixels of context on each side); give a larger --tile or a "
                        "smaller --tile-pad")


def _run(model: nn.Module, x: torch.Tensor, dtype: torch.dtype | None, state: dict) -> torch.Tensor:
    """``model(x)`` in fp32, or under autocast to ``dtype`` with a fp32 rerun if that gives NaN/inf."""
    if dtype is None:
        return model(x).float()
    with torch.autocast(device_type=x.device.type, dtype=dtype):
        out = model(x).float()
    if torch.isfinite(out).all():
        return out
    if not state.get("warned"):
        warnings.warn(f"non-finite output in {dtype}; recomputing in float32", stacklevel=3)
        state["warned"] = True
    state["fallbacks"] = state.get("fallbacks", 0) + 1
    return model(x).float()


@torch.no_grad()
def upscale_tensor(model: nn.Module, lq: torch.Tensor, *, scale: int | None = None, tile: int = 0,
                   tile_pad: int | None = None, dtype: torch.dtype | None = None, progress: bool = False,
                   desc: str = "tiles", stats: dict | None = None) -> torch.Tensor:
    """Super-resolve ``lq`` (``NCHW`` float in [0, 1], on the model's device) → float32 ``NCHW``.

    ``tile > 0`` processes ``tile x tile`` LR tiles with ``tile_pad`` LR pixels of context
    (default: :func:`receptive_radius`, so that tiled and whole outputs agree); each tile is one
    forward pass on up to ``(tile + 2 * tile_pad)²`` pixels, so a tile much smaller than the pad
    multiplies the work (the programs refuse that: :func:`check_tile`).
    ``dtype`` (float16 / bfloat16, CUDA only) runs under autocast; a tile whose output is not
    finite is recomputed in float32 (``stats["fallbacks"]`` counts them). The output is not
    clamped.
    """
    if lq.dim() != 4:
        raise ValueError(f"lq must be NCHW, got shape {tuple(lq.shape)}")
    if tile < 0 or (tile_pad is not None and tile_pad < 0):
        raise UserError(f"--tile and --tile-pad must be >= 0, got {tile} and {tile_pad}")
    state = stats if stats is not None else {}
    n, c, h, w = lq.shape
    if not tile or (tile >= h and tile >= w):
        return _run(model, lq, dtype, state)
    scale = scale or model_scale(model)
    if tile_pad is None:
        tile_pad = receptive_radius(model)
    out = torch.empty(n, 3, h * scale, w * scale, dtype=torch.float32, device=lq.device)
    ty, tx = math.ceil(h / tile), math.ceil(w / tile)
    tiles = [(i, j) for i in range(ty) for j in range(tx)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tiles), desc=desc, unit="tile", leave=False)
    for i, j in tiles:
        y0, x0 = i * tile, j * tile
        y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
        py0, px0 = max(y0 - tile_pad, 0), max(x0 - tile_pad, 0)
        py1, px1 = min(y1 + tile_pad, h), min(x1 + tile_pad, w)
        piece = _run(model, lq[:, :, py0:py1, px0:px1], dtype, state)
        if piece.shape[-2:] != ((py1 - py0) * scale, (px1 - px0) * scale):
            raise UserError(f"model output {tuple(piece.shape[-2:])} for a {py1 - py0}x{px1 - px0} "
                            f"tile is not {scale}x its input")
        oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
        out[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
            piece[:, :, oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return out


def outscale_size(height: int, width: int, outscale: float) -> tuple[int, int]:
    """The ``(height, width)`` of an ``height x width`` input upscaled by ``outscale`` (any float >
    0): ``int(side * outscale)`` as Real-ESRGAN computes it, with float noise removed (``100 *
    1.15`` gives 115, not 114) and at least 1 pixel."""
    if not (math.isfinite(outscale) and outscale > 0):
        raise UserError(f"-s/--outscale {outscale}: must be a number > 0")
    return tuple(max(1, int(math.floor(side * outscale + 1e-6))) for side in (height, width))


def lanczos_resize(image, size: tuple[int, int]):
    """Resize a float ``HxWxC`` numpy image (values in [0, 1]) to ``size = (height, width)`` with
    Pillow's Lanczos filter (a = 3; antialiased when shrinking), channel by channel in float32.

    The final resize of ``upscale --outscale`` (Real-ESRGAN does it with OpenCV's Lanczos-4). The
    result is float32 and not clipped (Lanczos overshoots a little at edges)."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(image, dtype=np.float32)
    if arr.shape[:2] == tuple(size):
        return arr.copy()
    height, width = size
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(arr[:, :, c]))
                           .resize((width, height), Image.Resampling.LANCZOS))
                for c in range(arr.shape[2])]
    return np.stack(channels, axis=2)


def pre_pad_input(lq: torch.Tensor, pre_pad: int) -> torch.Tensor:
    """``lq`` (``NCHW``) reflect-padded by ``pre_pad`` pixels at the bottom and right, as
    Real-ESRGAN's ``--pre_pad`` does before the network (its output is cropped back to ``scale x``
    the input afterwards). UserError when ``pre_pad`` is negative or not smaller than a side (a
    reflection needs that many pixels)."""
    if pre_pad < 0:
        raise UserError(f"--pre_pad {pre_pad}: must be >= 0")
    if not pre_pad:
        return lq
    h, w = lq.shape[-2:]
    if pre_pad >= min(h, w):
        raise UserError(f"--pre_pad {pre_pad}: the image is {w}x{h}; a reflection pad must be smaller "
                        "than each side")
    return torch.nn.functional.pad(lq, (0, pre_pad, 0, pre_pad), mode="reflect")
