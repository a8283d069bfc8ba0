"""Cell level: the four candidate operations as superkernel modules.

Each module holds FULL weights (``channels`` in and out) and computes, for sampled widths
``in_w`` → ``out_w``, ``acc + coeff · op(x)`` with the leading ``[out_w, in_w]`` block of each
superkernel: ``x`` has ``in_w`` channels and the result ``out_w`` (narrow tensors, the shapes of
the derived network: no zero padding, no copies of a narrowed input). Each conv is computed with
:func:`trilevelnas.ops.superconv2d` on a view of its weight block.

The ops (docs/supernet.md; no bias, no BN):

- ``conv1x1``: relu(conv1x1(x)); ``conv3x3``: relu(conv3x3(x));
- ``resblock``: relu(conv3x3_b(relu(conv3x3_a(x))) + shortcut(x)), conv_a in→out, conv_b out→out;
- ``dwsblock``: relu(conv1x1_c(relu(dw3x3(relu(conv1x1_e(x))))) + shortcut(x)), expansion to 4·in;
- shortcut: identity when in == out, else a 1×1 conv in→out.
"""
from __future__ import annotations


import torch
from torch import nn

from .. import ops
from ..arch import OP_NAMES

EXPANSION = 4
#: ESRGAN's residual scaling, on the last convolution of a residual branch only (resblock's conv2,
#: dwsblock's project); every other superkernel keeps Kaiming's gain, so a cell's chain of five ops
#: keeps its signal (docs/supernet.md, "Parameters and their initialisation").
BRANCH_INIT_SCALE = 0.1


def _kernel(out_c: int, in_c: int, k: int, groups: int = 1, scale: float = 1.0) -> nn.Parameter:
    """A superkernel, Kaiming-normal (fan-in, ReLU gain) times ``scale``."""
    w = torch.empty(out_c, in_c // groups, k, k)
    nn.init.kaiming_normal_(w, a=0.0, mode="fan_in")
    return nn.Parameter(w * scale)


def _add(acc, coeff, y):
    return coeff * y if acc is None else acc + coeff * y


def _conv_relu(x, weight, padding: int = 0, groups: int = 1) -> torch.Tensor:
    """relu(conv(x, weight)) with the ReLU in place on the convolution's output: autograd then
    keeps one tensor (the activation, which the next convolution saves as its input anyway)
    instead of the pre-activation and the activation."""
    return torch.relu_(ops.superconv2d(x, weight, padding=padding, groups=groups))


def _block(weight: torch.Tensor, out_w: int, in_w: int | None = None) -> torch.Tensor:
    """The leading ``[out_w, in_w]`` block of a superkernel (a view; ``in_w`` None: all inputs)."""
    w = weight if out_w == weight.shape[0] else weight[:out_w]
    if in_w is not None and in_w != weight.shape[1]:
        w = w[:, :in_w]
    return w


class SuperConv(nn.Module):
    """``conv1x1`` / ``conv3x3``: relu(conv(x)), fused into one superconv call."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = _kernel(channels, channels, kernel_size)

    def forward(self, x, in_w: int, out_w: int, coeff, acc=None):
        return ops.superconv2d(x, _block(self.weight, out_w, in_w), None,
                               padding=self.kernel_size // 2, activation="relu", scale=coeff,
                               accumulate=acc)


class _Shortcut(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.weight = _kernel(channels, channels, 1)

    def forward(self, x, in_w: int, out_w: int):
        if in_w == out_w:
            return x
        return ops.superconv2d(x, _block(self.weight, out_w, in_w))


class SuperResBlock(nn.Module):
    """``resblock``: conv3x3 in→out → ReLU → conv3x3 out→out, + shortcut, ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = _kernel(channels, channels, 3)
        self.conv2 = _kernel(channels, channels, 3, scale=BRANCH_INIT_SCALE)
        self.shortcut = _Shortcut(channels)

    def forward(self, x, in_w: int, out_w: int, coeff, acc=None):
        h = _conv_relu(x, _block(self.conv1, out_w, in_w), padding=1)
        s = self.shortcut(x, in_w, out_w)
        y = ops.superconv2d(h, _block(self.conv2, out_w, out_w), padding=1, accumulate=s)
        return _add(acc, coeff, torch.relu_(y))


class SuperDWSBlock(nn.Module):
    """``dwsblock``: 1×1 in→4·in → ReLU → depthwise 3×3 → ReLU → 1×1 →out, + shortcut, ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        hidden = EXPANSION * channels
        self.expand = _kernel(hidden, channels, 1)
        self.depthwise = _kernel(hidden, hidden, 3, groups=hidden)
        self.project = _kernel(channels, hidden, 1, scale=BRANCH_INIT_SCALE)
        self.shortcut = _Shortcut(channels)

    def forward(self, x, in_w: int, out_w: int, coeff, acc=None):
        hw = EXPANSION * in_w
        h = _conv_relu(x, _block(self.expand, hw, in_w))
        h = _conv_relu(h, _block(self.depthwise, hw), padding=1, groups=hw)
        s = self.shortcut(x, in_w, out_w)
        y = ops.superconv2d(h, _block(self.project, out_w, hw), accumulate=s)
        return _add(acc, coeff, torch.relu_(y))


def make_candidates(channels: int) -> nn.ModuleList:
    """The four candidates of one op slot, in :data:`OP_NAMES` order."""
    return nn.ModuleList([SuperConv(channels, 1), SuperConv(channels, 3), SuperResBlock(channels),
                          SuperDWSBlock(channels)])


__all__ = ["OP_NAMES", "EXPANSION", "SuperConv", "SuperResBlock", "SuperDWSBlock",
           "make_candidates"]
