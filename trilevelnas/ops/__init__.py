"""Public op API (``torch.ops.trilevelnas`` underneath).

- relaxations (:mod:`.relax`): ``sparsestmax``, ``sparsemax``, ``sparsestmax_packed``,
  ``sparsemax_packed``, ``softmax_packed``, ``sorted_sparsestmax_packed`` (returns ``(q, penalty)``),
  ``order_penalty_packed`` (the forest ordering term, for any relaxation's output);
- superkernel convolution (:mod:`.superconv`): ``superconv2d``;
- ``backend()``: what the ops run on; ``reference``: the pure-torch definition of every op.

Importing this package registers the dispatcher ops of :mod:`.op_table` (when the extension loaded).
"""
from . import _backend, _library, op_table, reference
from ._backend import backend, gpu_backend, set_gpu_backend
from .relax import (
    order_penalty_packed,
    softmax_packed,
    sorted_sparsestmax_packed,
    sparsemax,
    sparsemax_packed,
    sparsestmax,
    sparsestmax_packed,
)
from .superconv import superconv2d

if _backend._C is not None:
    _library.register(op_table.OPS)

__all__ = [
    "backend",
    "gpu_backend",
    "set_gpu_backend",
    "reference",
    "sparsestmax",
    "sparsemax",
    "sparsestmax_packed",
    "sparsemax_packed",
    "softmax_packed",
    "sorted_sparsestmax_packed",
    "order_penalty_packed",
    "superconv2d",
]
