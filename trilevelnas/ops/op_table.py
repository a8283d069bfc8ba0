"""The op table: every op of ``torch.ops.trilevelnas``, each declared once (docs/ops.md "Registration").

A row holds the op's schema, written as ``m.def`` takes it, its fake (meta) kernel, its one
autograd formula and its backends; :func:`trilevelnas.ops._library.register` reads the table. From
a row's schema the registrar also defines the op's companions: ``<op>_triton`` (same schema) when
the row names a Triton launcher, ``<op>_check`` (same arguments, no results) when the row has
``check=True``. The C++ kernels (``cpp`` keys) and check ops register themselves in ``csrc/`` by
op name; tests/test_ops_opcheck.py checks that the dispatcher agrees with this table.
"""
from __future__ import annotations

import torch

from ._library import CPP_AUTOGRAD, Autograd, Op
from .relax import _gain_dtype
from .superconv import conv_out_format

CPU_CUDA = ("CPU", "CUDA")

# ---------------------------------------------------------------------------------------------
# Relaxation ops (trilevelnas/ops/relax.py). The forward ops of the sparsestmax family return
# ``(out, gain)``; their backward needs only those (and the offsets).


def _sparsestmax_packed_fake(values, offsets, radius, radius_scalar):
    return torch.empty_like(values), values.new_empty((offsets.shape[0] - 1,), dtype=_gain_dtype(values))


def _sparsestmax_rows_fake(x, radius, radius_scalar):
    return torch.empty_like(x), x.new_empty(x.shape[:-1], dtype=_gain_dtype(x))


def _save_out_gain_offsets(ctx, inputs, output):
    out, gain = output
    ctx.mark_non_differentiable(gain)
    ctx.save_for_backward(out, gain, inputs[1])


def _sparsestmax_packed_backward(backward_op, ctx, grad_out, grad_gain):
    out, gain, offsets = ctx.saved_tensors
    return backward_op(grad_out.contiguous(), out, gain, offsets), None, None, None


_SPARSESTMAX_PACKED_AUTOGRAD = Autograd(_save_out_gain_offsets, _sparsestmax_packed_backward,
                                        "sparsestmax_packed_backward")


def _save_out_gain(ctx, inputs, output):
    out, gain = output
    ctx.mark_non_differentiable(gain)
    ctx.save_for_backward(out, gain)


def _sparsestmax_rows_backward(backward_op, ctx, grad_out, grad_gain):
    out, gain = ctx.saved_tensors
    return backward_op(grad_out.contiguous(), out, gain), None, None


_SPARSESTMAX_ROWS_AUTOGRAD = Autograd(_save_out_gain, _sparsestmax_rows_backward, "sparsestmax_rows_backward")


def _save_out_offsets(ctx, inputs, output):
    ctx.save_for_backward(output, inputs[1])


def _softmax_packed_backward(backward_op, ctx, grad_out):
    out, offsets = ctx.saved_tensors
    return backward_op(grad_out.contiguous(), out, offsets), None


_SOFTMAX_PACKED_AUTOGRAD = Autograd(_save_out_offsets, _softmax_packed_backward, "softmax_packed_backward")


def _save_inputs(ctx, inputs, output):
    ctx.save_for_backward(*inputs)  # q, offsets, parent


def _order_penalty_packed_backward(backward_op, ctx, grad_out):
    q, offsets, parent = ctx.saved_tensors
    return backward_op(grad_out.contiguous(), q, offsets, parent), None, None


_ORDER_PENALTY_PACKED_AUTOGRAD = Autograd(_save_inputs, _order_penalty_packed_backward,
                                          "order_penalty_packed_backward")


# ---------------------------------------------------------------------------------------------
# Superkernel convolution (trilevelnas/ops/superconv.py); autograd: csrc/superconv_autograd.cpp.


def _superconv2d_fake(x, weight, bias, in_width, out_width, stride, padding, groups, activation,
                      negative_slope, scale, scale_factor, accumulate):
    oh = (x.shape[2] + 2 * padding - weight.shape[2]) // stride + 1
    ow = (x.shape[3] + 2 * padding - weight.shape[3]) // stride + 1
    out = x.new_empty((x.shape[0], weight.shape[0], oh, ow))
    if activation != 0 or scale is not None:
        conv_out = x.new_empty((x.shape[0], out_width, oh, ow)).contiguous(
            memory_format=conv_out_format(x, in_width))
    else:
        conv_out = x.new_empty((0,))
    return out, conv_out


def _superconv2d_backward_fake(grad, x, weight, conv_out, in_width, out_width, stride, padding, groups,
                               activation, negative_slope, scale, scale_factor, output_mask):
    return (
        x.new_empty(x.shape) if output_mask[0] else None,
        weight.new_empty(weight.shape) if output_mask[1] else None,
        weight.new_empty((weight.shape[0],)) if output_mask[2] else None,
        scale.new_empty(()) if (output_mask[3] and scale is not None) else None,
    )


# ---------------------------------------------------------------------------------------------
# The table. ``triton`` names the launcher in trilevelnas/ops/triton/ ("module.function").

OPS = (
    Op("sparsestmax_packed(Tensor values, Tensor offsets, Tensor? radius, float radius_scalar) -> (Tensor, Tensor)",
       fake=_sparsestmax_packed_fake, autograd=_SPARSESTMAX_PACKED_AUTOGRAD,
       cpp=CPU_CUDA, triton="relax.sparsestmax_packed_fwd", check=True),
    Op("sparsestmax_packed_backward(Tensor grad, Tensor out, Tensor gain, Tensor offsets) -> Tensor",
       fake=lambda grad, out, gain, offsets: torch.empty_like(out),
       cpp=CPU_CUDA, triton="relax.sparsestmax_packed_bwd", check=True),
    Op("sparsestmax_rows(Tensor x, Tensor? radius, float radius_scalar) -> (Tensor, Tensor)",
       fake=_sparsestmax_rows_fake, autograd=_SPARSESTMAX_ROWS_AUTOGRAD,
       cpp=CPU_CUDA, triton="relax.sparsestmax_rows_fwd", check=True),
    Op("sparsestmax_rows_backward(Tensor grad, Tensor out, Tensor gain) -> Tensor",
       fake=lambda grad, out, gain: torch.empty_like(out),
       cpp=CPU_CUDA, triton="relax.sparsestmax_rows_bwd", check=True),
    Op("softmax_packed(Tensor values, Tensor offsets) -> Tensor",
       fake=lambda values, offsets: torch.empty_like(values), autograd=_SOFTMAX_PACKED_AUTOGRAD,
       cpp=CPU_CUDA, triton="relax.softmax_packed_fwd", check=True),
    Op("softmax_packed_backward(Tensor grad, Tensor out, Tensor offsets) -> Tensor",
       fake=lambda grad, out, offsets: torch.empty_like(out),
       cpp=CPU_CUDA, triton="relax.softmax_packed_bwd", check=True),
    Op("order_penalty_packed(Tensor q, Tensor offsets, Tensor parent) -> Tensor",
       fake=lambda q, offsets, parent: q.new_empty((offsets.shape[0] - 1,)),
       autograd=_ORDER_PENALTY_PACKED_AUTOGRAD,
       cpp=CPU_CUDA, triton="relax.order_penalty_packed_fwd", check=True),
    Op("order_penalty_packed_backward(Tensor grad, Tensor q, Tensor offsets, Tensor parent) -> Tensor",
       fake=lambda grad, q, offsets, parent: torch.empty_like(q),
       cpp=CPU_CUDA, triton="relax.order_penalty_packed_bwd", check=True),
    Op("superconv2d(Tensor x, Tensor weight, Tensor? bias, SymInt in_width, SymInt out_width, int stride, "
       "int padding, int groups, int activation, float negative_slope, Tensor? scale, float scale_factor, "
       "Tensor? accumulate) -> (Tensor, Tensor)",
       fake=_superconv2d_fake, autograd=CPP_AUTOGRAD,
       cpp=CPU_CUDA, triton="superconv.forward", check=True),
    Op("superconv2d_backward(Tensor grad, Tensor x, Tensor weight, Tensor conv_out, SymInt in_width, "
       "SymInt out_width, int stride, int padding, int groups, int activation, float negative_slope, "
       "Tensor? scale, float scale_factor, bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)",
       fake=_superconv2d_backward_fake,
       cpp=CPU_CUDA, triton="superconv.backward"),
)
