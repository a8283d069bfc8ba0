"""Superkernel convolution ``superconv2d``: the public wrapper, the fake kernels, the Triton variant's kernels.

The op computes, with ``conv = F.conv2d(x[:, :in_width], weight[:out_width, :in_width],
bias[:out_width], stride, padding)`` (depthwise: the first ``w`` channels), an output of the full
channel count whose channels ``[:out_width]`` are ``accumulate + scale * act(conv)`` and whose
other channels are ``accumulate`` (zeros without one). Shapes never depend on the widths.

Two dispatcher ops implement it, with one argument list, one fake kernel (registered here for both)
and one autograd formula (``SuperconvFunction`` in ``csrc/superconv.cpp``, registered there for
both: a formula in Python cost a small fwd+bwd call about 100 µs, a third of its time):

- ``trilevelnas::superconv2d``: C++ kernels only, CPU (``csrc/superconv.cpp``) and CUDA via cuDNN
  on the active block plus a fused CUDA epilogue (``csrc/cuda/superconv.cu``);
- ``trilevelnas::superconv2d_triton``: Triton implicit-GEMM kernels
  (:mod:`trilevelnas.ops.triton.superconv`), used for CUDA tensors when
  ``gpu_backend() == "triton"``; its schema is defined in C++ beside ``superconv2d``'s from the
  same argument list, and it runs the C++ argument checks (``trilevelnas::superconv2d_check``). On CPU
  tensors it runs only under ``TRITON_INTERPRET=1`` (how the tests check it without a GPU).

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


def _out_hw(x, weight, stride, padding):
    oh = (x.shape[2] + 2 * padding - weight.shape[2]) // stride + 1
    ow = (x.shape[3] + 2 * padding - weight.shape[3]) // stride + 1
    return oh, ow


def conv_out_format(x, in_width) -> torch.memory_format:
    """Layout of the saved ``conv_out``: on CPU the C++ kernel convolves in channels-last when x is
    channels-last or narrowed (``cpu_format`` in csrc/superconv.cpp, for oneDNN), else contiguous.
    The fake kernel follows it, and so does the Triton variant on CPU tensors."""
    from torch._prims_common import suggest_memory_format

    if x.device.type == "cpu" and (in_width < x.shape[1] or suggest_memory_format(x) == torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _fake_forward(x, weight, bias, in_width, out_width, stride, padding, groups, activation,
                  negative_slope, scale, scale_factor, accumulate):
    oh, ow = _out_hw(x, weight, stride, padding)
    out = x.new_empty((x.shape[0], weight.shape[0], oh, ow))
    if activation != 0 or scale is not None:
        conv_out = x.new_empty((x.shape[0], out_width, oh, ow)).contiguous(
            memory_format=conv_out_format(x, in_width))
    else:
        conv_out = x.new_empty((0,))
    return out, conv_out


def _fake_backward(grad, x, weight, conv_out, in_width, out_width, stride, padding, groups,
                   activation, negative_slope, scale, scale_factor, output_mask):
    return (
        x.new_empty(x.shape) if output_mask[0] else None,
        weight.new_empty(weight.shape) if output_mask[1] else None,
        weight.new_empty((weight.shape[0],)) if output_mask[2] else None,
        scale.new_empty(()) if (output_mask[3] and scale is not None) else None,
    )


def _triton_forward(*args):
    torch.ops.trilevelnas.superconv2d_check.default(*args)  # the C++ op's checks, and the Triton dtypes
    from .triton import superconv as kernels

    x = args[0]
    out, conv_out = kernels.forward(*args)
    if conv_out.dim() == 4:  # saved for the backward pass (else an empty tensor)
        conv_out = conv_out.contiguous(memory_format=conv_out_format(x, args[3]))
    return out, conv_out


def _triton_backward(*args):
    from .triton import superconv as kernels

    return kernels.backward(*args)


def _register() -> None:
    # Schemas and the autograd formula of both variants: csrc/superconv.cpp.
    _library.impl_variant("superconv2d", "triton", _triton_forward)
    _library.impl_variant("superconv2d_backward", "triton", _triton_backward)
    for backend in (None, "triton"):
        _library.register("superconv2d", backend, _fake_forward)
        _library.register("superconv2d_backward", backend, _fake_backward)


if _backend._C is not None:
    _register()
