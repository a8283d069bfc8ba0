"""Every dispatcher op, on every device, through one ``sample_inputs(device)`` per op (as
pytorch/extension-cpp's test/test_extension.py does): torch.library.opcheck (schema, fake kernel,
autograd registration, AOT dispatch) of the C++ op and of its Triton variant ``<op>_triton``, and
the forward ops against ``ops.reference``.

CPU always; CUDA when a GPU and the extension's CUDA kernels are present (skipped with the reason
otherwise). The Triton variants run on CPU tensors through TRITON_INTERPRET=1 (tests/conftest.py).
"""
import os

import pytest
import torch

import trilevelnas.ops as ops
from trilevelnas.ops import _library
from trilevelnas.ops import reference as ref
from trilevelnas.ops.op_table import OPS
from trilevelnas.ops.superconv import ACTIVATIONS

lib = torch.ops.trilevelnas
CUDA_KERNELS = torch.cuda.is_available() and ops.backend()["cuda_kernels"]
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(
        not CUDA_KERNELS, reason="needs a GPU and the extension's CUDA kernels")),
]
TRITON = ops.backend()["triton"] and (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1")
BACKENDS = [
    None,
    pytest.param("triton", marks=pytest.mark.skipif(
        not TRITON, reason="triton unavailable (or not in interpreter mode without a GPU)")),
]


def _leaves(args, requires_grad):
    """Floating-point tensors of args as fresh leaves (requiring grad when asked)."""
    out = []
    for a in args:
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            a = a.detach().clone().requires_grad_(requires_grad)
        out.append(a)
    return tuple(out)


def _gen():
    return torch.Generator().manual_seed(19)


def _packed(device, dtype=torch.float64, sizes=(4, 0, 5, 1)):
    gen = _gen()
    offsets = torch.tensor([0] + list(torch.tensor(sizes).cumsum(0)), dtype=torch.int64)
    values = torch.randn(int(offsets[-1]), generator=gen, dtype=torch.float64).to(dtype)
    return values.to(device), offsets.to(device)


PARENT = [-1, 0, 0, 1, -1, 0, 0, 2, -1, -1]  # forests of the groups (4, 0, 5, 1)


# ---------------------------------------------------------------------------------------------
# sample_inputs: the argument tuples of each dispatcher op on `device`.


def _sparsestmax_packed(device):
    values, offsets = _packed(device)
    radius = torch.tensor([0.1, 0.2, 0.3, 0.0], dtype=torch.float64, device=device)
    v32, off32 = _packed(device, torch.float32)
    return [(values, offsets, None, 0.3), (values, offsets, radius, 0.0), (values, offsets, None, 0.0),
            (values, offsets, None, 2.0), (v32, off32, None, 0.35)]


def _sparsestmax_rows(device):
    x = torch.randn(2, 5, generator=_gen(), dtype=torch.float64).to(device)
    return [(x, None, 0.2), (x, torch.tensor([0.1, 0.4], dtype=torch.float64, device=device), 0.0),
            (x.float().reshape(5, 2), None, 0.3)]


def _softmax_packed(device):
    values, offsets = _packed(device)
    return [(values, offsets), (values.float(), offsets)]


def _order_penalty_packed(device):
    values, offsets = _packed(device)
    parent = torch.tensor(PARENT, device=device)
    return [(values, offsets, parent), (values.float(), offsets, parent)]


def _backward_of(forward, samples, grad_of):
    """Arguments of a backward op built from the forward op's outputs on the forward samples."""
    out = []
    for args in samples:
        with torch.no_grad():
            result = forward(*args)
        out.append(grad_of(args, result))
    return out


def _sparsestmax_packed_backward(device):
    return _backward_of(lib.sparsestmax_packed.default, _sparsestmax_packed(device),
                        lambda a, r: (torch.randn_like(r[0]), r[0], r[1], a[1]))


def _sparsestmax_rows_backward(device):
    return _backward_of(lib.sparsestmax_rows.default, _sparsestmax_rows(device),
                        lambda a, r: (torch.randn_like(r[0]), r[0], r[1]))


def _softmax_packed_backward(device):
    return _backward_of(lib.softmax_packed.default, _softmax_packed(device),
                        lambda a, r: (torch.randn_like(r), r, a[1]))


def _order_penalty_packed_backward(device):
    return [(torch.randn(a[1].numel() - 1, dtype=a[0].dtype, device=device), *a)
            for a in _order_penalty_packed(device)]


def _superconv2d(device):
    """(x, weight, bias, in_width, out_width, stride, padding, groups, activation, negative_slope,
    scale, scale_factor, accumulate) in float32 (the dtype every backend takes)."""
    gen = _gen()

    def rnd(*shape):
        return torch.randn(*shape, generator=gen).to(device)

    x, w, dw = rnd(2, 6, 5, 4), rnd(5, 6, 3, 3) / 3, rnd(6, 1, 3, 3) / 3
    scale = torch.tensor(0.7, device=device)
    act = ACTIVATIONS
    return [
        (x, w, rnd(5), 4, 3, 1, 1, 1, act["leaky_relu"], 0.2, scale, 1.0, rnd(2, 5, 5, 4)),
        (x, w, None, 6, 5, 1, 1, 1, act["none"], 0.2, None, 1.0, None),
        (x, w, rnd(5), 2, 4, 2, 0, 1, act["relu"], 0.2, None, 0.5, None),
        (x, dw, rnd(6), 3, 3, 1, 1, 6, act["relu"], 0.2, scale, 1.0, rnd(2, 6, 5, 4)),
    ]


def _superconv2d_backward(device):
    out = []
    for a in _superconv2d(device):
        with torch.no_grad():
            y, conv_out = lib.superconv2d.default(*a)
        (x, w, bias, iw, ow, stride, padding, groups, act, slope, scale, factor, _acc) = a
        out.append((torch.randn_like(y), x, w, conv_out, iw, ow, stride, padding, groups, act, slope, scale,
                    factor, [True, True, bias is not None, scale is not None]))
    return out


SAMPLE_INPUTS = {
    "sparsestmax_packed": _sparsestmax_packed,
    "sparsestmax_rows": _sparsestmax_rows,
    "softmax_packed": _softmax_packed,
    "order_penalty_packed": _order_penalty_packed,
    "superconv2d": _superconv2d,
    "sparsestmax_packed_backward": _sparsestmax_packed_backward,
    "sparsestmax_rows_backward": _sparsestmax_rows_backward,
    "softmax_packed_backward": _softmax_packed_backward,
    "order_penalty_packed_backward": _order_penalty_packed_backward,
    "superconv2d_backward": _superconv2d_backward,
}


def sample_inputs(op, device, *, requires_grad=False):
    return [_leaves(args, requires_grad) for args in SAMPLE_INPUTS[op](device)]


# ---------------------------------------------------------------------------------------------
# Tests


def _library_op_names() -> set[str]:
    return {s.name.split("::")[1] for s in torch._C._jit_get_all_schemas() if s.name.startswith("trilevelnas::")}


def test_every_op_has_sample_inputs():
    """Every op of the C++ library (but the argument-check ops) is sampled here."""
    names = _library_op_names()
    cpp_ops = {n for n in names if not n.endswith(("_triton", "_check"))}
    assert cpp_ops == set(SAMPLE_INPUTS)
    assert {n for n in names if n.endswith("_triton")} == {f"{n}_triton" for n in SAMPLE_INPUTS}


def _companions(op) -> set[str]:
    """The dispatcher ops of one row of the op table: the op, its check op and Triton variant."""
    return ({op.name} | ({f"{op.name}_check"} if op.check else set())
            | ({f"{op.name}_triton"} if op.triton else set()))


def test_the_dispatcher_holds_exactly_the_op_table():
    """Every op of ``torch.ops.trilevelnas`` comes from a row of the op table, with the kernels its
    row declares: C++ kernels for its ``cpp`` keys (CUDA where compiled), the check op's C++
    kernel, the Triton variant's kernels, an autograd kernel for each variant of a differentiable
    op and none for the others; C++ registers kernels for no op outside the table."""
    table = set().union(*(_companions(op) for op in OPS))
    assert _library_op_names() == table
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    for op in OPS:
        name = f"trilevelnas::{op.name}"
        for key in op.cpp:
            assert has(name, key) == (key != "CUDA" or ops.backend()["cuda_kernels"]), (name, key)
        assert not any(has(name, key) for key in {"CPU", "CUDA"} - set(op.cpp)), name
        if op.check:
            assert has(f"{name}_check", "CompositeExplicitAutograd"), name
        if op.triton:
            assert has(f"{name}_triton", "CPU") and has(f"{name}_triton", "CUDA"), name
        for backend in op.variants():
            variant = f"trilevelnas::{_library.variant(op.name, backend)}"
            assert has(variant, "Autograd") == (op.autograd is not None), variant
    for key in ("CPU", "CUDA", "CompositeExplicitAutograd", "Autograd"):
        registered = {n.split("::")[1] for n in torch._C._dispatch_get_registrations_for_dispatch_key(key)
                      if n.startswith("trilevelnas::")}
        assert registered <= table, (key, registered - table)


def test_check_ops_take_their_ops_arguments():
    """A check op ``<op>_check`` (run by the Triton variant before its kernels) takes the arguments
    of ``<op>`` and returns nothing; every relaxation op and superconv2d has one."""
    checks = {n[:-len("_check")] for n in _library_op_names() if n.endswith("_check")}
    assert checks == {n for n in SAMPLE_INPUTS if n != "superconv2d_backward"}
    for name in checks:
        op, check = str(_library.handle(name)._schema), str(_library.handle(name + "_check")._schema)
        assert check == op[:op.index(" -> ")].replace(f"::{name}(", f"::{name}_check(", 1) + " -> ()"


def test_triton_variants_take_the_cpp_schema():
    for name in SAMPLE_INPUTS:
        cpp, triton = _library.handle(name)._schema, _library.handle(name, "triton")._schema
        assert str(triton) == str(cpp).replace(f"::{name}(", f"::{name}_triton(", 1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", list(SAMPLE_INPUTS))
def test_opcheck(op, device, backend):
    handle = _library.handle(op, backend)
    samples = sample_inputs(op, device)
    if not op.endswith("_backward"):  # the backward ops have no autograd (no double backward)
        samples += sample_inputs(op, device, requires_grad=True)
    for args in samples:
        torch.library.opcheck(handle, args)


REFERENCES = {
    "sparsestmax_packed": lambda v, o, radius, r: (ref.sparsestmax_packed(v, o, r if radius is None else radius),
                                                   lambda out: out[0]),
    "sparsestmax_rows": lambda x, radius, r: (
        ref.sparsestmax(x, r if radius is None else radius.reshape(x.shape[:-1] + (1,)).squeeze(-1)),
        lambda out: out[0]),
    "softmax_packed": lambda v, o: (ref.softmax_packed(v, o), lambda out: out),
    "order_penalty_packed": lambda q, o, p: (ref.order_penalty_packed(q, o, p), lambda out: out),
    "superconv2d": lambda x, w, b, iw, ow, stride, padding, groups, act, slope, scale, factor, acc: (
        ref.superconv2d(x, w, b, iw, ow, stride, padding, groups,
                        {v: k for k, v in ACTIVATIONS.items()}[act], slope,
                        scale * factor if scale is not None else factor, acc),
        lambda out: out[0]),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", list(REFERENCES))
def test_forward_matches_reference(op, device, backend):
    handle = _library.handle(op, backend)
    for args in sample_inputs(op, device):
        expected, pick = REFERENCES[op](*args)
        got = pick(handle(*args))
        tol = 1e-10 if got.dtype == torch.float64 else 2e-4 if device == "cpu" else 2e-2
        torch.testing.assert_close(got, expected, rtol=tol, atol=tol)
