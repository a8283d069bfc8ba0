"""Superkernel convolution ``superconv2d``: the public wrapper, autograd and fake registrations.

The op computes, with ``conv = F.conv2d(x[:, :in_width], weight[:out_width, :in_width],
bias[:out_width], stride, padding)`` (depthwise: the first ``w`` channels), an output of the full
channel count whose channels ``[:out_width]`` are ``accumulate + scale * act(conv)`` and whose
other channels are ``accumulate`` (zeros without one). Shapes never depend on the widths.

Two dispatcher ops implement it, with the same schema and the same gradient formula:

- ``trilevelnas::superconv2d`` (C++, ``csrc/superconv.cpp``, autograd in C++ too so that a call
  costs no Python beyond this wrapper): CPU, and CUDA via cuDNN on the active block plus a fused
  CUDA epilogue (``csrc/cuda/superconv.cu``);
- ``trilevelnas::superconv2d_triton`` (:mod:`trilevelnas.ops.triton.superconv`, autograd
  registered here): Triton implicit-GEMM kernels, used for CUDA tensors when
  ``gpu_backend() == "triton"``. On CPU tensors it runs only under ``TRITON_INTERPRET=1`` (how the
  tests check it without a GPU).

Each returns ``(out, conv_out)``; ``conv_out`` is the raw convolution of the active block that the
backward pass needs (empty when it needs none) and is not exposed by :func:`superconv2d`.
"""
from __future__ import annotations

import torch

from ..errors import OpArgumentError
from . import _backend

__all__ = ["superconv2d", "ACTIVATIONS"]

#: Activation names and the integer codes the kernels take.
ACTIVATIONS = {"none": 0, "relu": 1, "leaky_relu": 2}

_SCHEMA_ARGS = (
    "Tensor x, Tensor weight, Tensor? bias, SymInt in_width, SymInt out_width, int stride, "
    "int padding, int groups, int activation, float negative_slope, Tensor? scale, "
    "float scale_factor, Tensor? accumulate"
)
_SCHEMA_BACKWARD_ARGS = (
    "Tensor grad, Tensor x, Tensor weight, Tensor conv_out, SymInt in_width, SymInt out_width, "
    "int stride, int padding, int groups, int activation, float negative_slope, Tensor? scale, "
    "float scale_factor, bool[4] output_mask"
)


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
    if x.is_cuda and _backend.gpu_backend() == "triton":
        op = torch.ops.trilevelnas.superconv2d_triton
    else:
        _backend.require_extension()
        op = torch.ops.trilevelnas.superconv2d
    return op(x, weight, bias, in_width, out_width, stride, padding, groups, act,
              float(negative_slope), scale_t, factor, accumulate)[0]


def _out_hw(x, weight, stride, padding):
    oh = (x.shape[2] + 2 * padding - weight.shape[2]) // stride + 1
    ow = (x.shape[3] + 2 * padding - weight.shape[3]) // stride + 1
    return oh, ow


def _fake_forward(x, weight, bias, in_width, out_width, stride, padding, groups, activation,
                  negative_slope, scale, scale_factor, accumulate):
    oh, ow = _out_hw(x, weight, stride, padding)
    out = x.new_empty((x.shape[0], weight.shape[0], oh, ow))
    if activation != 0 or scale is not None:
        conv_out = x.new_empty((x.shape[0], out_width, oh, ow))
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


def _register_autograd(name: str, backward_op_name: str) -> None:
    """Python autograd for an op with the superconv2d schema (the C++ op has its own in C++)."""
    def setup_context(ctx, inputs, output):
        (x, weight, bias, in_width, out_width, stride, padding, groups, activation,
         negative_slope, scale, scale_factor, accumulate) = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(x, weight, output[1], scale)
        ctx.args = (in_width, out_width, stride, padding, groups, activation, negative_slope)
        ctx.scale_factor = scale_factor
        ctx.has_bias = bias is not None

    def backward(ctx, grad_out, _grad_conv_out):
        x, weight, conv_out, scale = ctx.saved_tensors
        needs = ctx.needs_input_grad
        mask = [needs[0], needs[1], needs[2] and ctx.has_bias, needs[10] and scale is not None]
        gx = gw = gb = gs = None
        if any(mask):
            backward_op = getattr(torch.ops.trilevelnas, backward_op_name)
            gx, gw, gb, gs = backward_op(grad_out, x, weight, conv_out, *ctx.args, scale,
                                         ctx.scale_factor, mask)
        g_acc = grad_out if needs[12] else None
        return gx, gw, gb, None, None, None, None, None, None, None, gs, None, g_acc

    torch.library.register_autograd(f"trilevelnas::{name}", backward, setup_context=setup_context)


def _register_triton_ops() -> None:
    lib = torch.library.Library("trilevelnas", "FRAGMENT")
    lib.define(f"superconv2d_triton({_SCHEMA_ARGS}) -> (Tensor, Tensor)")
    lib.define(
        f"superconv2d_triton_backward({_SCHEMA_BACKWARD_ARGS}) -> (Tensor, Tensor, Tensor, Tensor)"
    )

    def forward(*args):
        from .triton import superconv as kernels

        check_args(*args)
        return kernels.forward(*args)

    def backward(*args):
        from .triton import superconv as kernels

        return kernels.backward(*args)

    for key in ("CPU", "CUDA"):
        lib.impl("superconv2d_triton", forward, key)
        lib.impl("superconv2d_triton_backward", backward, key)
    torch.library.register_fake("trilevelnas::superconv2d_triton", _fake_forward, lib=lib)
    torch.library.register_fake("trilevelnas::superconv2d_triton_backward", _fake_backward, lib=lib)
    _register_autograd("superconv2d_triton", "superconv2d_triton_backward")
    global _triton_lib
    _triton_lib = lib


def check_args(x, weight, bias, in_width, out_width, stride, padding, groups, activation,
               negative_slope, scale, scale_factor, accumulate) -> None:
    """The argument checks of the C++ op, for the Triton op (raises :class:`OpArgumentError`)."""

    def need(cond, msg):
        if not cond:
            raise OpArgumentError(f"superconv2d: {msg}")

    need(x.dim() == 4, f"x must be 4-D [N, C, H, W], got {x.dim()}-D")
    need(weight.dim() == 4, f"weight must be 4-D [C_out, C_in/groups, kH, kW], got {weight.dim()}-D")
    need(x.dtype in (torch.float32, torch.float16, torch.bfloat16),
         f"the Triton kernels take float32, float16 or bfloat16, got x of {x.dtype}")
    need(weight.dtype == x.dtype, f"weight dtype {weight.dtype} differs from x dtype {x.dtype}")
    need(weight.device == x.device, f"weight is on {weight.device} but x is on {x.device}")
    need(stride >= 1, f"stride must be >= 1, got {stride}")
    need(padding >= 0, f"padding must be >= 0, got {padding}")
    need(activation in (0, 1, 2), f"activation code must be 0, 1 or 2, got {activation}")
    c_in, c_out = x.shape[1], weight.shape[0]
    need(1 <= in_width <= c_in, f"in_width {in_width} out of range [1, {c_in}]")
    need(1 <= out_width <= c_out, f"out_width {out_width} out of range [1, {c_out}]")
    if groups == 1:
        need(weight.shape[1] == c_in,
             f"weight has {weight.shape[1]} input channels but x has {c_in}")
    else:
        need(groups == c_in == c_out and weight.shape[1] == 1,
             "groups must be 1 or, for a depthwise convolution, equal to C_in == C_out with "
             f"weight [C, 1, kH, kW]; got groups={groups}, C_in={c_in}, weight {tuple(weight.shape)}")
        need(in_width == out_width, "depthwise convolution needs in_width == out_width, got "
             f"in_width={in_width} and out_width={out_width}")
    need(x.shape[2] + 2 * padding >= weight.shape[2] and x.shape[3] + 2 * padding >= weight.shape[3],
         f"input {x.shape[2]}x{x.shape[3]} with padding {padding} is smaller than the kernel")
    oh, ow = _out_hw(x, weight, stride, padding)
    if bias is not None:
        need(bias.dim() == 1 and bias.shape[0] == c_out, f"bias must be [{c_out}], got {tuple(bias.shape)}")
        need(bias.dtype == x.dtype and bias.device == x.device,
             f"bias ({bias.dtype}, {bias.device}) must match x ({x.dtype}, {x.device})")
    if scale is not None:
        need(scale.dim() == 0, f"scale must be a 0-dim tensor, got shape {tuple(scale.shape)}")
        need(scale.is_floating_point(), f"scale must be floating-point, got {scale.dtype}")
        need(scale.device == x.device, f"scale is on {scale.device} but x is on {x.device}")
    if accumulate is not None:
        shape = (x.shape[0], c_out, oh, ow)
        need(tuple(accumulate.shape) == shape,
             f"accumulate must have the output shape {list(shape)}, got {list(accumulate.shape)}")
        need(accumulate.dtype == x.dtype and accumulate.device == x.device,
             f"accumulate ({accumulate.dtype}, {accumulate.device}) must match x "
             f"({x.dtype}, {x.device})")


_triton_lib = None
if _backend._C is not None:
    torch.library.register_fake("trilevelnas::superconv2d", _fake_forward)
    torch.library.register_fake("trilevelnas::superconv2d_backward", _fake_backward)
_register_triton_ops()
