"""Superkernel convolution ``superconv2d``: the public wrapper and the layout of the saved convolution.

The op computes, with ``conv = F.conv2d(x[:, :in_width], weight[:out_width, :in_width],
bias[:out_width], stride, padding)`` (depthwise: the first ``w`` channels), an output of the full
channel count whose channels ``[:out_width]`` are ``accumulate + scale * act(conv)`` and whose
other channels are ``accumulate`` (zeros without one). Shapes never depend on the widths.

Two dispatcher ops implement it, with one argument list, one fake kernel and one autograd
formula (all declared in :mod:`trilevelnas.ops.op_table`; the formula is a C++
``torch::autograd::Function`` in ``csrc/superconv_autograd.cpp``, for speed: docs/ops.md "Autograd"):

- ``trilevelnas::superconv2d``: C++ kernels only, CPU (``csrc/superconv_cpu.cpp``) and CUDA via cuDNN
  on the active block plus a fused CUDA epilogue (``csrc/cuda/superconv.cu``);
- ``trilevelnas::superconv2d_triton``: Triton implicit-GEMM kernels
  (:mod:`trilevelnas.ops.triton.superconv`), used for CUDA tensors when
  ``gpu_backend() == "triton"``; it runs the C++ argument checks (``trilevelnas::superconv2d_check``)
  first. On CPU tensors it runs only under ``TRITON_INTERPRET=1`` (how the tests check it without a GPU).

The backward ops are ``superconv2d_backward`` and ``superconv2d_backward_triton``.
Each returns ``(out, conv_out)``; ``conv_out`` is the raw convolution of the active block that the
backward pass needs (empty when it needs none) and is not exposed by :func:`superconv2d`.
"""
from __future__ import annotations

import torch

from ..errors import OpArgumentError
from . import _backend, _library

__all__ = ["superconv2d", "ACTIVATIONS"]

#: Activation names and the integer codes the kernels take (kernels/common.cuh; the extension
#: reports its own as ``trilevelnas._C.ACTIVATIONS``, which tests/test_extension.py compares).
ACTIVATIONS = {"none": 0, "relu": 1, "leaky_relu": 2}


def superconv2d(x, weight, bias=None, in_width=None, out_width=None, stride=1, padding=0,
                groups=1, activation="none", negative_slope=0.2, scale=None, accumulate=None):
    """Convolution with the leading ``[out_width, in_width]`` block of ``weight``, fused epilogue.

    Args:
        x: ``[N, C_in, H, W]``; weight: ``[C_out, C_in, k, k]`` (depthwise: ``[C, 1, k, k]`` with
            ``groups == C_in == C_out``); bias: ``[C_out]`` or None.
        in_width, out_width: active channels (default: all). Depthwise needs them equal.
        activation: ``"none"``, ``"relu"`` or ``"leaky_relu"`` (with ``negative_slope``).
        scale: None, a Python float or a 0-dim tensor (differentiable) multiplying ``act(conv)``.
        accumulate: None or a tensor of the output's shape that the result is added to
            (differentiable).

    Returns:
        ``[N, C_out, H', W']``; channels ``[:out_width]`` are ``accumulate + scale * act(conv)``,
        the rest ``accumulate`` (zeros when None). Bad arguments raise ``ValueError``
        (:class:`~trilevelnas.errors.OpArgumentError` from the Python checks).
    """
    act = ACTIVATIONS.get(activation)
    if act is None:
        raise OpArgumentError(
            f"superconv2d: activation {activation!r} is not one of {', '.join(ACTIVATIONS)}"
        )
    if in_width is None:
        in_width = x.shape[1]
    if out_width is None:
        out_width = weight.shape[0]
    if isinstance(scale, torch.Tensor):
        scale_t, factor = scale, 1.0
    elif scale is None:
        scale_t, factor = None, 1.0
    else:
        scale_t, factor = None, float(scale)
    _backend.require_extension()
    backend = "triton" if x.is_cuda and _backend.gpu_backend() == "triton" else None
    op = _library.handle("superconv2d", backend)
    return op(x, weight, bias, in_width, out_width, stride, padding, groups, act, float(negative_slope),
              scale_t, factor, accumulate)[0]


def conv_out_format(x, in_width) -> torch.memory_format:
    """Layout of the saved ``conv_out``: on CPU the C++ kernel convolves in channels-last when x is
    channels-last or narrowed (``cpu_format`` in csrc/superconv_cpu.cpp, for oneDNN), else contiguous.
    The fake kernel follows it, and so does the Triton variant on CPU tensors."""
    from torch._prims_common import suggest_memory_format

    if x.device.type == "cpu" and (in_width < x.shape[1] or suggest_memory_format(x) == torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
