"""Superkernel convolution: ``ops.superconv2d`` vs the PyTorch composite vs full-width F.conv2d.

Benchmark id: ``test_superconv[<kernel>-<provider>-<widths>-<direction>]``

- kernel (search shapes, 32×32 LR patches, C = 64): ``conv3x3`` 64→64 (batch 16; the CPU targets),
  ``conv1x1`` 64→64, ``dw3x3`` depthwise on the dwsblock hidden layer (256 channels, width 4w),
  ``expand1x1`` the dwsblock expansion 64→256 (widths w→4w); batch 4 on CPU except ``conv3x3``,
  16 on a GPU;
- provider: ``fused`` (``ops.superconv2d`` with the mixed-op epilogue: ReLU, a tensor scale and an
  accumulate tensor), ``fused-plain`` (``ops.superconv2d``, no epilogue), ``composite`` (PyTorch:
  slice the weight and input, ``F.conv2d``, ReLU, scale, zero-pad to full width, add), ``conv2d``
  (plain ``F.conv2d`` at full width, no epilogue; 64/64 only), ``triton`` / ``triton-plain``
  (the Triton kernels; GPU only);
- widths: ``w/64``, the sampled width w of the 64-channel slot: in = out = w for ``conv3x3`` and
  ``conv1x1``, w → 4w for ``expand1x1``, 4w for ``dw3x3`` (``24/64`` … ``64/64``);
- direction: ``fwd`` (no autograd) or ``fwdbwd`` (forward and the gradients of every input).

Group: ``superconv-<kernel>-<direction>``; ``extra_info`` holds kernel, provider ("<provider>
<widths>"), widths, direction and the multiply-accumulates of the active block (``macs``).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import trilevelnas.ops as ops

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
DTYPE = torch.float32
C = 64
# kernel -> (C_in, C_out, k, depthwise, hidden multiplier of the widths)
KERNELS = {
    "conv3x3": (C, C, 3, False, 1),
    "conv1x1": (C, C, 1, False, 1),
    "dw3x3": (4 * C, 4 * C, 3, True, 4),
    "expand1x1": (C, 4 * C, 1, False, 4),
}
WIDTHS = {"conv3x3": ["24/64", "40/64", "64/64"]}
PROVIDERS = ["fused", "fused-plain", "composite", "conv2d"] + (["triton", "triton-plain"] if CUDA else [])


def composite(x, w, iw, ow, groups, padding, scale, acc):
    """The PyTorch composite that a mixed op would run without the fused op."""
    if groups == 1:
        y = F.conv2d(x[:, :iw], w[:ow, :iw], padding=padding)
    else:
        y = F.conv2d(x[:, :iw], w[:ow], padding=padding, groups=ow)
    y = F.relu(y) * scale
    return acc + F.pad(y, (0, 0, 0, 0, 0, w.shape[0] - ow))


def make_case(kernel: str, provider: str, widths: str, quick: bool):
    c_in, c_out, k, depthwise, mult = KERNELS[kernel]
    batch = 16 if (CUDA or kernel == "conv3x3") else 4
    hw = 32
    if quick:
        batch, hw = 2, 16
    width = int(widths.split("/")[0])
    iw, ow = (width * mult, width * mult) if depthwise else (width, width * mult)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, c_in, hw, hw, generator=gen).to(DEVICE, DTYPE)
    w = (torch.randn(c_out, 1 if depthwise else c_in, k, k, generator=gen) * 0.05).to(DEVICE, DTYPE)
    scale = torch.tensor(0.7, device=DEVICE)
    acc = torch.randn(batch, c_out, hw, hw, generator=gen).to(DEVICE, DTYPE)
    groups = c_in if depthwise else 1
    pad = k // 2
    macs = batch * hw * hw * ow * (1 if depthwise else iw) * k * k
    if provider in ("fused", "triton"):
        fn = lambda x, w, s, a: ops.superconv2d(x, w, None, iw, ow, padding=pad, groups=groups,
                                                activation="relu", scale=s, accumulate=a)
    elif provider in ("fused-plain", "triton-plain"):
        fn = lambda x, w, s, a: ops.superconv2d(x, w, None, iw, ow, padding=pad, groups=groups)
    elif provider == "composite":
        fn = lambda x, w, s, a: composite(x, w, iw, ow, groups, pad, s, a)
    else:
        fn = lambda x, w, s, a: F.conv2d(x, w, padding=pad, groups=groups)
    return fn, (x, w, scale, acc), macs


CASES = [(kern, prov, wid) for kern in KERNELS for wid in WIDTHS.get(kern, ["24/64", "64/64"])
         for prov in PROVIDERS if prov != "conv2d" or wid == "64/64"]


@pytest.mark.parametrize("direction", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("kernel,provider,widths", CASES)
def test_superconv(benchmark, quick, sync, kernel, provider, widths, direction):
    fn, args, macs = make_case(kernel, provider, widths, quick)
    benchmark.group = f"superconv-{kernel}-{direction}"
    benchmark.extra_info.update(kernel=kernel, provider=f"{provider} {widths}", widths=widths,
                                direction=direction, macs=macs, device=DEVICE)
    previous = ops.gpu_backend()
    if CUDA:
        ops.set_gpu_backend("triton" if provider.startswith("triton") else "cuda")
    try:
        if direction == "fwd":
            def run():
                with torch.no_grad():
                    fn(*args)
                sync()
        else:
            leaves = [a.clone().requires_grad_(True) for a in args]
            grad = torch.randn_like(args[3])

            def run():
                out = fn(*leaves)
                torch.autograd.grad(out, leaves, grad, allow_unused=True)
                sync()
        benchmark(run)
    finally:
        if CUDA:
            ops.set_gpu_backend(previous)
