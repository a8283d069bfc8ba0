"""The compiled extension is loaded, registers its ops, and backend() reports it consistently.

These tests fail (not skip) when trilevelnas._C did not compile or import.
"""
import torch

import trilevelnas.ops as ops
from trilevelnas.ops import _backend

RELAX_OPS = [
    "sparsestmax_packed",
    "sparsestmax_rows",
    "sparsestmax_packed_backward",
    "sparsestmax_rows_backward",
    "softmax_packed",
    "softmax_packed_backward",
    "order_penalty_packed",
    "order_penalty_packed_backward",
]


def test_extension_is_loaded():
    info = ops.backend()
    assert info["extension"] is True, info["extension_error"]
    assert info["extension_error"] is None
    assert info["cpu"] == "c++"
    import trilevelnas._C as compiled

    assert _backend._C is compiled


def test_backend_report_is_consistent():
    info = ops.backend()
    import trilevelnas._C as compiled

    assert info["cuda_kernels"] == bool(compiled.with_cuda())
    assert info["cuda_device"] == torch.cuda.is_available()
    assert info["gpu_backend"] == (ops.gpu_backend() if torch.cuda.is_available() else None)
    if info["cuda_kernels"]:
        assert torch.version.cuda is not None  # CUDA kernels only get built against a CUDA torch


def test_relax_ops_are_registered_with_cpu_kernels():
    for name in RELAX_OPS:
        op = getattr(torch.ops.trilevelnas, name).default
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "CPU"), name
        if ops.backend()["cuda_kernels"]:
            assert torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "CUDA"), name


def test_withdrawn_sorted_sparsestmax_op_is_not_registered():
    """Sorted sparsestmax is a composition in Python now (sparsestmax + order_penalty_packed)."""
    assert not hasattr(torch.ops.trilevelnas, "sorted_sparsestmax_packed")


def test_relax_op_runs_through_the_dispatcher():
    out, gain = torch.ops.trilevelnas.sparsestmax_packed(torch.tensor([0.0, 1.0, 3.0]), torch.tensor([0, 1, 3]),
                                                         None, 0.0)
    assert out.tolist() == [1.0, 0.0, 1.0]
    assert gain.tolist() == [0.0, 0.0]


def test_python_constants_match_the_kernels():
    """ONE_HOT_TOL and the activation codes are defined in kernels/common.cuh; Python mirrors them."""
    import trilevelnas._C as compiled
    from trilevelnas.ops import reference
    from trilevelnas.ops.superconv import ACTIVATIONS

    assert compiled.ONE_HOT_TOL == reference.ONE_HOT_TOL
    assert compiled.ACTIVATIONS == ACTIVATIONS


def test_every_forward_op_and_its_triton_variant_has_an_autograd_kernel():
    """The autograd of every forward op and of its Triton variant is registered (in Python by the
    op table's registrar, in C++ for superconv2d; docs/ops.md "Autograd")."""
    for name in ["superconv2d", "sparsestmax_packed", "sparsestmax_rows", "softmax_packed", "order_penalty_packed"]:
        for variant in (name, f"{name}_triton"):
            op = getattr(torch.ops.trilevelnas, variant).default
            assert torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "Autograd"), variant
