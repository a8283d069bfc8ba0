"""Teacher / model weight files in every format the Real-ESRGAN family ships, as PyTorch networks.

:func:`load_network` tells the format from the file's first bytes (never its name) and the
architecture from its contents:

- **torch** (``.pth``/``.pt``): an RRDBNet in any key style (2018 ``model.N``, ESRGAN, BasicSR)
  or an SRVGGNetCompact (``body.N``), wrapped or not (``params_ema`` > ``params`` >
  ``state_dict``), read with ``weights_only=True``;
- **safetensors**: the same state dicts; the format (an 8-byte little-endian header length, a JSON
  header of ``name: {dtype, shape, data_offsets}``, then the raw little-endian tensors) is read
  here, so the ``safetensors`` package is not needed;
- **ncnn** (``.param`` + ``.bin`` beside it; the ``.bin`` path works too): :mod:`.ncnn`.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from ..errors import InputFileError, UserError

SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
                      "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32,
                      "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
FORMATS = ("torch", "safetensors", "ncnn")


def sniff_format(path: str | os.PathLike) -> str:
    """``"ncnn"``, ``"safetensors"`` or ``"torch"`` for the file at ``path``, from its first bytes
    (an ncnn ``.bin``, which has no header, counts as ncnn when an ncnn ``.param`` of the same name
    is beside it). Anything else is ``"torch"``, whose reader gives the error."""
    from .ncnn import is_ncnn_param

    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return "torch"
    if is_ncnn_param(path):
        return "ncnn"
    if len(head) == 9 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size:
        return "safetensors"
    root, ext = os.path.splitext(str(path))
    if ext.lower() == ".bin" and is_ncnn_param(root + ".param"):
        return "ncnn"
    return "torch"


def weight_files(path: str | os.PathLike) -> list[str]:
    """The files whose bytes make the network of weight file ``path``: ``[path]``, or for an ncnn
    model the ``.param`` and its ``.bin`` (so a digest of the teacher, e.g. a cache key, covers
    both)."""
    if sniff_format(path) != "ncnn":
        return [str(path)]
    root, _ = os.path.splitext(str(path))
    return [root + ".param", root + ".bin"]


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file (CPU, their stored dtype). Errors are one-line
    :class:`InputFileError`s naming the file and the culprit entry."""
    source = repr(str(path))
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputFileError(f"cannot read {source}: {exc.strerror or exc}") from None
    if len(data) < 8:
        raise InputFileError(f"{source} is not a safetensors file (shorter than its 8-byte header size)")
    n = int.from_bytes(data[:8], "little")
    if 8 + n > len(data):
        raise InputFileError(f"{source} is truncated: its header needs {n} bytes, the file has {len(data) - 8}")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputFileError(f"{source}: the safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise InputFileError(f"{source}: the safetensors header is not a JSON object")
    body = memoryview(data)[8 + n:]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = SAFETENSORS_DTYPES[entry["dtype"]]
            shape = [int(s) for s in entry["shape"]]
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise InputFileError(f"{source}: tensor {name!r} has a malformed header entry {entry!r:.120}") from None
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if any(s < 0 for s in shape) or not 0 <= begin <= end <= len(body) \
                or end - begin != math.prod(shape) * itemsize:
            raise InputFileError(f"{source}: tensor {name!r} ({entry['dtype']} {shape}) has data offsets "
                                 f"[{begin}, {end}] that do not fit it or the file ({len(body)} data bytes)")
        raw = bytearray(body[begin:end])
        flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(shape)
    return tensors


def network_from_state_dict(state: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """The RRDBNet or SRVGGNetCompact that ``state`` (unwrapped, any RRDBNet key style or BasicSR's
    SRVGGNetCompact keys) holds, strictly loaded. Errors are :class:`UserError`s naming ``source``."""
    from .rrdbnet import rrdbnet_from_state_dict
    from .srvgg import is_srvgg_state, srvgg_from_state_dict

    floats = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    if is_srvgg_state(floats):
        return srvgg_from_state_dict(floats, source)
    return rrdbnet_from_state_dict(floats, source)


def load_network(path: str | os.PathLike, key: str | None = None) -> nn.Module:
    """The network in the weight file ``path`` (any :data:`FORMATS`, see the module docstring), in
    eval mode, float32, trainable. ``key`` forces a torch checkpoint's wrapper entry (e.g.
    ``"params"``). Every error is a one-line :class:`UserError` / :class:`InputFileError` that
    names the file."""
    from .ncnn import load_ncnn
    from .rrdbnet import read_checkpoint, unwrap_checkpoint

    source = repr(str(path))
    if not os.path.isfile(path):
        raise InputFileError(f"weight file {source} " + ("is a folder, not a file" if os.path.isdir(path)
                                                         else "does not exist"))
    fmt = sniff_format(path)
    if fmt == "ncnn":
        root, ext = os.path.splitext(str(path))
        param = str(path) if ext.lower() != ".bin" else root + ".param"
        return load_ncnn(param)
    obj = read_safetensors(path) if fmt == "safetensors" else read_checkpoint(path)
    state = unwrap_checkpoint(obj, source, key)
    try:
        return network_from_state_dict(state, source).eval()
    except UserError as exc:
        message = str(exc)
        raise UserError(message if message.startswith(source) else f"{source}: {message}") from None


def check_state_dict(target: Mapping, state: Mapping, source: str, what: str = "its architecture") -> None:
    """InputFileError naming the first key of ``state`` that ``target`` (a network's state dict,
    maybe of meta tensors) lacks or shapes otherwise (``what``: the network, for the message), or
    the first key ``state`` misses."""
    for k, v in state.items():
        if k not in target:
            raise InputFileError(f"{source}: unexpected key {k!r} for {what}")
        if not isinstance(v, torch.Tensor) or tuple(v.shape) != tuple(target[k].shape):
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise InputFileError(f"{source}: key {k!r} has shape {shape}, {what} needs {tuple(target[k].shape)}")
    missing = [k for k in target if k not in state]
    if missing:
        raise InputFileError(f"{source}: missing key {missing[0]!r}"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))


__all__ = ["check_state_dict", "load_network", "network_from_state_dict", "read_safetensors", "sniff_format", "weight_files", "FORMATS",
           "SAFETENSORS_DTYPES"]
