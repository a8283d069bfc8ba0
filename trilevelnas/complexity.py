"""Parameter and FLOPs counting with the paper's convention (docs/architectures.md "FLOPs convention").

The paper's GFLOPs of a network at a 256x256 LR input are
``conv multiply-accumulates + conv bias adds + LeakyReLU elements`` (ReLU, residual adds, the RiR
``0.2·out + x``, interpolation and PixelShuffle are free). With this convention ESRGAN's RRDBNet
gives 1176.6 GFLOPs.

Two ways to count, which agree exactly:

- :func:`profile` runs the model once on a ``meta`` input (no memory, no arithmetic) and counts every
  ``aten.convolution`` (and matrix product, for completeness) and ``aten.leaky_relu`` the forward
  dispatches, so it works for any module made of convolutions, whatever its Python structure.
- the analytic helpers (:func:`conv_cost`, :func:`leaky_relu_cost`, :func:`op_cost`,
  :func:`arch_cost`), which also accept tensors for ``c_in``/``c_out`` so that a differentiable
  expected-FLOPs model can reuse the same formulas and agree with :func:`profile` at one-hot.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from .errors import UserError

aten = torch.ops.aten


# ---------------------------------------------------------------------------------- analytic
def _per_group(c_in, groups):
    if isinstance(c_in, int) and isinstance(groups, int) and c_in % groups == 0:
        return c_in // groups
    return c_in / groups


def conv_macs(c_in, c_out, kernel_size: int, h: int, w: int, groups=1):
    """Multiply-accumulates of a stride-1 'same' k x k convolution on an h x w map."""
    return _per_group(c_in, groups) * c_out * kernel_size * kernel_size * h * w


def conv_cost(c_in, c_out, kernel_size: int, h: int, w: int, groups=1, bias: bool = True):
    """The paper's FLOPs of one stride-1 'same' convolution: MACs plus one add per output if biased.

    Plain arithmetic, so ``c_in``/``c_out`` (and ``groups``) may be tensors (expected widths).
    """
    cost = conv_macs(c_in, c_out, kernel_size, h, w, groups)
    if bias:
        cost = cost + c_out * h * w
    return cost


def conv_params(c_in, c_out, kernel_size: int, groups=1, bias: bool = True):
    """Parameter count of a k x k convolution."""
    n = _per_group(c_in, groups) * c_out * kernel_size * kernel_size
    return n + c_out if bias else n


def leaky_relu_cost(channels, h: int, w: int):
    """The paper's FLOPs of a LeakyReLU: one per element."""
    return channels * h * w


def op_cost(name: str, c_in, c_out, h: int, w: int) -> dict[str, Any]:
    """``{"params", "macs", "flops"}`` of one candidate operation (docs/architectures.md) on an h x w map.

    ReLUs and the residual add cost nothing in the paper's convention; a shortcut 1x1 conv exists
    only when the widths differ (for tensor widths the caller decides; it is counted when
    ``c_in != c_out`` evaluates true).
    """
    convs = []  # (c_in, c_out, k, groups)
    if name == "conv1x1":
        convs.append((c_in, c_out, 1, 1))
    elif name == "conv3x3":
        convs.append((c_in, c_out, 3, 1))
    elif name == "resblock":
        convs += [(c_in, c_out, 3, 1), (c_out, c_out, 3, 1)]
        if bool(c_in != c_out):
            convs.append((c_in, c_out, 1, 1))
    elif name == "dwsblock":
        hidden = 4 * c_in
        convs += [(c_in, hidden, 1, 1), (hidden, hidden, 3, hidden), (hidden, c_out, 1, 1)]
        if bool(c_in != c_out):
            convs.append((c_in, c_out, 1, 1))
    else:
        raise ValueError(f"unknown operation {name!r}")
    params = sum(conv_params(ci, co, k, g, bias=False) for ci, co, k, g in convs)
    macs = sum(conv_macs(ci, co, k, h, w, g) for ci, co, k, g in convs)
    return {"params": params, "macs": macs, "flops": macs}


def arch_cost(arch, lr_size: tuple[int, int] = (256, 256)) -> dict[str, Any]:
    """Analytic ``{"params", "macs", "gflops"}`` of the derived network of ``arch`` (an Architecture)."""
    h, w = lr_size
    c = arch.channels
    params = conv_params(3, c, 3)
    macs = conv_macs(3, c, 3, h, w)
    flops = conv_cost(3, c, 3, h, w)
    cells = iter(arch.cells)
    for step in arch.full_path:
        if step == 0:
            cell = next(cells)
            widths = [c] + [wd for _, wd in cell]
            for j, (name, _) in enumerate(cell):
                o = op_cost(name, widths[j], widths[j + 1], h, w)
                params += o["params"]
                macs += o["macs"]
                flops += o["flops"]
            continue
        if arch.backbone == "A":
            h, w = 2 * h, 2 * w
        params += conv_params(c, c, 3)
        macs += conv_macs(c, c, 3, h, w)
        flops += conv_cost(c, c, 3, h, w) + leaky_relu_cost(c, h, w)
    if arch.backbone == "A":
        params += conv_params(c, c, 3) + conv_params(c, 3, 3)
        macs += conv_macs(c, c, 3, h, w) + conv_macs(c, 3, 3, h, w)
        flops += conv_cost(c, c, 3, h, w) + leaky_relu_cost(c, h, w) + conv_cost(c, 3, 3, h, w)
    else:
        out = 3 * arch.scale ** 2
        params += conv_params(c, out, 3)
        macs += conv_macs(c, out, 3, h, w)
        flops += conv_cost(c, out, 3, h, w)
    return {"params": int(params), "macs": int(macs), "gflops": flops / 1e9}


# --------------------------------------------------------------------------------- measured
class _Counter(TorchDispatchMode):
    """Accumulates MACs, bias adds and LeakyReLU elements of the aten ops a forward dispatches."""

    def __init__(self):
        super().__init__()
        self.macs = 0
        self.bias_adds = 0
        self.lrelu = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        if packet is aten.convolution:
            x, weight, bias = args[0], args[1], args[2]
            transposed = args[6]
            # weight: [out, in/groups, *k] (or [in, out/groups, *k] when transposed)
            k = weight[0, 0].numel()
            if transposed:
                self.macs += x.numel() * weight.shape[1] * k
            else:
                self.macs += out.numel() * weight.shape[1] * k
            if bias is not None:
                self.bias_adds += out.numel()
        elif packet in (aten.mm, aten.bmm):
            self.macs += out.numel() * args[0].shape[-1]
        elif packet in (aten.addmm, aten.baddbmm):
            self.macs += out.numel() * args[1].shape[-1]
            self.bias_adds += out.numel()
        elif packet in (aten.leaky_relu, aten.leaky_relu_):
            self.lrelu += out.numel()
        return out


def count_params(model: nn.Module) -> int:
    """Number of distinct parameter elements (shared parameters once)."""
    return sum(p.numel() for p in model.parameters())


def profile(model: nn.Module, lr_size: tuple[int, int] = (256, 256)) -> dict[str, Any]:
    """``{"params": int, "macs": int, "gflops": float}`` of ``model`` on one 3-channel LR image.

    ``gflops`` is the paper's (conv MACs + bias adds + LeakyReLU elements) / 1e9. The model runs
    once on ``meta`` tensors (its own parameters are not touched or copied), so any size is cheap;
    a model whose forward needs real values (e.g. ``.item()``) cannot be profiled this way.
    """
    if (not isinstance(lr_size, (tuple, list)) or len(lr_size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in lr_size)):
        raise UserError(f"lr_size must be two positive integers (height, width), got {lr_size!r}")
    meta = {name: torch.empty_like(t, device="meta")
            for name, t in list(model.named_parameters()) + list(model.named_buffers())}
    x = torch.empty(1, 3, *lr_size, device="meta")
    counter = _Counter()
    with torch.no_grad(), counter:
        torch.func.functional_call(model, meta, (x,), tie_weights=True, strict=False)
    flops = counter.macs + counter.bias_adds + counter.lrelu
    return {"params": count_params(model), "macs": int(counter.macs), "gflops": flops / 1e9}


__all__ = ["profile", "count_params", "conv_macs", "conv_cost", "conv_params", "leaky_relu_cost",
           "op_cost", "arch_cost"]
