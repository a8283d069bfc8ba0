"""An AGD-style supernet in plain PyTorch: the baseline the supernet-step benchmark compares with.

Same search space as :class:`trilevelnas.supernet.Supernet` (backbone B, tree of paths over
``n_rir`` RiR cells and ``n_up`` convs with ordinal sharing, or the fixed path; five op slots per
cell over the four candidates; widths from the width set), executed the way AGD / Auto-DeepLab
implement it:

- softmax over ALL candidates of every slot and over ALL tree nodes (no sparsity);
- every candidate of every slot and every tree node is computed, one node at a time (no batching
  of nodes that share a cell);
- one width per slot sampled per step (Gumbel-softmax, straight-through), the convolution run
  with ``F.conv2d`` on the sliced weights ``weight[:out_w, :in_w]`` of the sliced input
  ``x[:, :in_w]``, and the result zero-padded back to the full channel count.

The module and parameter names mirror the Supernet's, so
``agd.load_state_dict(supernet.state_dict())`` gives both the same weights; with softmax
relaxations, dense execution and the same widths the two compute the same function (the
benchmark suite checks this).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trilevelnas.arch import width_set
from trilevelnas.supernet import enumerate_tree

N_OPS = 4
N_SLOTS = 5
EXPANSION = 4
RESIDUAL_SCALE = 0.2


def _param(*shape) -> nn.Parameter:
    w = torch.empty(*shape)
    nn.init.kaiming_normal_(w, a=0.0, mode="fan_in")
    return nn.Parameter(0.1 * w)


def _sliced_conv(x, weight, in_w: int, out_w: int, padding: int = 0, groups: int = 1):
    """``conv(x[:, :in_w], weight[:out_w, :in_w])`` zero-padded to ``weight.shape[0]`` channels."""
    w = weight[:out_w] if groups > 1 else weight[:out_w, :in_w]
    y = F.conv2d(x[:, :in_w], w, None, 1, padding, 1, groups)
    return F.pad(y, (0, 0, 0, 0, 0, weight.shape[0] - out_w))


class _Conv(nn.Module):
    def __init__(self, c: int, k: int):
        super().__init__()
        self.k = k
        self.weight = _param(c, c, k, k)

    def forward(self, x, in_w, out_w):
        return torch.relu(_sliced_conv(x, self.weight, in_w, out_w, self.k // 2))


class _Shortcut(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.weight = _param(c, c, 1, 1)

    def forward(self, x, in_w, out_w):
        return x if in_w == out_w else _sliced_conv(x, self.weight, in_w, out_w)


class _ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = _param(c, c, 3, 3)
        self.conv2 = _param(c, c, 3, 3)
        self.shortcut = _Shortcut(c)

    def forward(self, x, in_w, out_w):
        h = torch.relu(_sliced_conv(x, self.conv1, in_w, out_w, 1))
        return torch.relu(_sliced_conv(h, self.conv2, out_w, out_w, 1) + self.shortcut(x, in_w, out_w))


class _DWSBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.expand = _param(EXPANSION * c, c, 1, 1)
        self.depthwise = _param(EXPANSION * c, 1, 3, 3)
        self.project = _param(c, EXPANSION * c, 1, 1)
        self.shortcut = _Shortcut(c)

    def forward(self, x, in_w, out_w):
        hw = EXPANSION * in_w
        h = torch.relu(_sliced_conv(x, self.expand, in_w, hw))
        h = torch.relu(_sliced_conv(h, self.depthwise, hw, hw, 1, groups=hw))
        y = _sliced_conv(h, self.project, hw, out_w)
        return torch.relu(y + self.shortcut(x, in_w, out_w))


class _Slot(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.candidates = nn.ModuleList([_Conv(c, 1), _Conv(c, 3), _ResBlock(c), _DWSBlock(c)])

    def forward(self, x, in_w, out_w, weights):
        return sum(weights[k] * op(x, in_w, out_w) for k, op in enumerate(self.candidates))


class _Cell(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.channels = c
        self.slots = nn.ModuleList([_Slot(c) for _ in range(N_SLOTS)])

    def forward(self, x, widths, weights, width_coeff):
        h, in_w = x, self.channels
        for i, slot in enumerate(self.slots):
            out_w = self.channels if i == N_SLOTS - 1 else widths[i]
            h = slot(h, in_w, out_w, weights[i])
            if i < N_SLOTS - 1:
                h = width_coeff[i] * h
            in_w = out_w
        return RESIDUAL_SCALE * h + x


class AGDSupernet(nn.Module):
    """AGD-style supernet (backbone B): LR [N, 3, H, W] → SR [N, 3, sH, sW].

    ``topology``: ``"tree"`` (every node of :func:`~trilevelnas.supernet.enumerate_tree`,
    k-th RiR / m-th conv of any path sharing one module, output ``Σ_n softmax(β)_n f_n``) or
    ``"fixed"`` (the path ``[0]*n_rir + [1]*n_up``). ``width_mode``: ``"gumbel"`` (one width per
    slot sampled per forward, straight-through) or ``"max"``.
    """

    def __init__(self, channels: int = 64, n_rir: int = 5, n_up: int = 2, scale: int = 4,
                 topology: str = "tree", width_mode: str = "gumbel", gumbel_tau: float = 1.0):
        super().__init__()
        if topology not in ("tree", "fixed"):
            raise ValueError(f"topology={topology!r}: expected 'tree' or 'fixed'")
        if width_mode not in ("gumbel", "max"):
            raise ValueError(f"width_mode={width_mode!r}: expected 'gumbel' or 'max'")
        self.topology, self.width_mode, self.tau = topology, width_mode, gumbel_tau
        self.widths = width_set(channels)
        self.seqs = enumerate_tree(n_rir, n_up) if topology == "tree" else None
        self.path = [0] * n_rir + [1] * n_up
        self.alpha = nn.Parameter(1e-3 * torch.randn(n_rir, N_SLOTS, N_OPS))
        self.gamma = nn.Parameter(1e-3 * torch.randn(n_rir, N_SLOTS - 1, len(self.widths)))
        self.beta = nn.Parameter(1e-3 * torch.randn(len(self.seqs))) if self.seqs else None
        self.conv_first = nn.Conv2d(3, channels, 3, padding=1)
        self.cells = nn.ModuleList(_Cell(channels) for _ in range(n_rir))
        self.ups = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(n_up))
        self.conv_last = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)

    def arch_parameters(self) -> dict[str, nn.Parameter]:
        d = {"alpha": self.alpha, "gamma": self.gamma}
        if self.beta is not None:
            d["beta"] = self.beta
        return d

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters().values()}
        return [p for p in self.parameters() if id(p) not in arch]

    def _sample_widths(self):
        """Width index per slot ([n_rir, 4] host list) and the straight-through coefficients.
        The Gumbel noise is one ``torch.rand`` like the Supernet's, so a shared seed gives both
        the same widths."""
        n, s, w = self.gamma.shape
        g = self.gamma.reshape(-1, w)
        if self.width_mode == "max":
            return [[w - 1] * s for _ in range(n)], torch.ones(n, s, dtype=g.dtype, device=g.device)
        u = torch.rand(n * s, w, dtype=g.dtype, device=g.device)
        y = torch.softmax((g - torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))) / self.tau, -1)
        idx = y.argmax(-1)
        y_sel = y.gather(1, idx[:, None])[:, 0]
        return idx.view(n, s).tolist(), (y_sel + (1.0 - y_sel).detach()).view(n, s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx, coeff = self._sample_widths()
        widths = [[self.widths[i] for i in row] for row in idx]
        op_w = torch.softmax(self.alpha, -1)

        def step(s: int, k: int, h):
            if s == 0:
                return self.cells[k](h, widths[k], op_w[k], coeff[k])
            return F.leaky_relu(self.ups[k](h), 0.2)

        f0 = self.conv_first(x)
        if self.seqs is None:
            h, counts = f0, [0, 0]
            for s in self.path:
                h = step(s, counts[s], h)
                counts[s] += 1
            return self.shuffle(self.conv_last(h))
        q = torch.softmax(self.beta, 0)
        feats = {(): f0}
        out = q[0] * f0
        for n, seq in enumerate(self.seqs[1:], start=1):
            s = seq[-1]
            feats[seq] = step(s, seq.count(s) - 1, feats[seq[:-1]])
            out = out + q[n] * feats[seq]
        return self.shuffle(self.conv_last(out))


__all__ = ["AGDSupernet"]
