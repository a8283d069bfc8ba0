"""ops.superconv2d (superkernel convolution with fused epilogue) against the reference and an
independent computation, forward and backward, on random inputs and random widths."""
import os
import zlib

import pytest
import torch
import torch.nn.functional as F

import trilevelnas.ops as ops
from trilevelnas.ops import reference as ref

ACT = {"none": 0, "relu": 1, "leaky_relu": 2}
CUDA = torch.cuda.is_available()


def make_case(gen, *, n=2, c_in=12, c_out=10, hw=(7, 6), k=3, depthwise=False, dtype=torch.float64,
              device="cpu", bias=True, scale="tensor", accumulate=True, widths=None):
    """Random inputs and random widths for one superconv2d call (leaf tensors requiring grad)."""
    if depthwise:
        c_out = c_in
    rnd = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype).to(device)
    x = rnd(n, c_in, *hw)
    w = rnd(c_out, 1 if depthwise else c_in, k, k) / k
    if widths is None:
        iw = int(torch.randint(1, c_in + 1, (1,), generator=gen))
        ow = iw if depthwise else int(torch.randint(1, c_out + 1, (1,), generator=gen))
    else:
        iw, ow = widths
    tensors = {"x": x, "weight": w}
    kwargs = dict(in_width=iw, out_width=ow, padding=k // 2, groups=c_in if depthwise else 1)
    if bias:
        tensors["bias"] = rnd(c_out)
    if scale == "tensor":
        tensors["scale"] = (torch.rand((), generator=gen, dtype=torch.float64) + 0.25).to(dtype).to(device)
    elif scale is not None:
        kwargs["scale"] = scale
    if accumulate:
        tensors["accumulate"] = rnd(n, c_out, *hw)
    for t in tensors.values():
        t.requires_grad_(True)
    return tensors, kwargs


def run_and_grad(fn, tensors, kwargs, grad_out=None):
    out = fn(**tensors, **kwargs)
    if grad_out is None:
        grad_out = torch.randn(out.shape, dtype=torch.float64).to(out.dtype).to(out.device)
    grads = torch.autograd.grad(out, list(tensors.values()), grad_out)
    return out, dict(zip(tensors, grads)), grad_out


def assert_matches_reference(fn, tensors, kwargs, rtol, atol):
    out, grads, g = run_and_grad(fn, tensors, kwargs)
    out_ref, grads_ref, _ = run_and_grad(ref.superconv2d, tensors, kwargs, g)
    torch.testing.assert_close(out, out_ref, rtol=rtol, atol=atol)
    for name in tensors:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=rtol, atol=atol, msg=name)
    return out


# ---------------------------------------------------------------------------------------------
# CPU (C++ op) against the reference


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k,depthwise", [(1, False), (3, False), (3, True), (1, True)])
@pytest.mark.parametrize("activation", ["none", "relu", "leaky_relu"])
def test_cpu_matches_reference_random_widths(dtype, k, depthwise, activation):
    gen = torch.Generator().manual_seed(zlib.crc32(f"{dtype}{k}{depthwise}{activation}".encode()))
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    for scale, accumulate, bias in [("tensor", True, True), (None, False, False), (0.75, True, False)]:
        tensors, kwargs = make_case(gen, k=k, depthwise=depthwise, dtype=dtype, scale=scale,
                                    accumulate=accumulate, bias=bias)
        kwargs.update(activation=activation, negative_slope=0.15)
        out = assert_matches_reference(ops.superconv2d, tensors, kwargs, **tol)
        ow = kwargs["out_width"]
        beyond = out[:, ow:]
        expected = tensors["accumulate"][:, ow:] if accumulate else torch.zeros_like(beyond)
        assert torch.equal(beyond, expected)


def test_cpu_gradcheck_fused_epilogue():
    gen = torch.Generator().manual_seed(3)
    for depthwise in (False, True):
        tensors, kwargs = make_case(gen, n=1, c_in=5, c_out=4, hw=(3, 4), depthwise=depthwise)
        kwargs.update(activation="leaky_relu", negative_slope=0.3)
        names = list(tensors)
        fn = lambda *ts: ops.superconv2d(**dict(zip(names, ts)), **kwargs)
        assert torch.autograd.gradcheck(fn, tuple(tensors.values()), fast_mode=True)


def independent_superconv(x, w, b, iw, ow, padding, depthwise, act, slope, s, acc):
    """Direct sum over kernel offsets (no F.conv2d): the definition, written out."""
    k = w.shape[-1]
    xp = F.pad(x[:, :iw], (padding,) * 4)
    h_out, w_out = xp.shape[2] - k + 1, xp.shape[3] - k + 1
    conv = torch.zeros(x.shape[0], ow, h_out, w_out, dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            patch = xp[:, :, i:i + h_out, j:j + w_out]
            if depthwise:
                conv += patch * w[:ow, 0, i, j][None, :, None, None]
            else:
                conv += torch.einsum("nchw,oc->nohw", patch, w[:ow, :iw, i, j])
    conv = conv + b[:ow][None, :, None, None]
    a = {"none": conv, "relu": conv.clamp_min(0), "leaky_relu": torch.where(conv > 0, conv, slope * conv)}[act]
    out = acc.clone()
    out[:, :ow] += s * a
    return out, a


@pytest.mark.parametrize("depthwise", [False, True])
def test_cpu_matches_independent_computation_and_scale_gradient(depthwise):
    gen = torch.Generator().manual_seed(11 + depthwise)
    tensors, kwargs = make_case(gen, c_in=9, c_out=7, hw=(5, 8), depthwise=depthwise)
    iw, ow = kwargs["in_width"], kwargs["out_width"]
    out = ops.superconv2d(**tensors, **kwargs, activation="leaky_relu", negative_slope=0.1)
    t = {k: v.detach() for k, v in tensors.items()}
    expected, a = independent_superconv(t["x"], t["weight"], t["bias"], iw, ow, 1, depthwise,
                                        "leaky_relu", 0.1, t["scale"], t["accumulate"])
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    g = torch.randn(out.shape, generator=gen, dtype=out.dtype)
    g_scale, g_acc = torch.autograd.grad(out, [tensors["scale"], tensors["accumulate"]], g)
    torch.testing.assert_close(g_scale, (g[:, :ow] * a).sum(), rtol=1e-10, atol=1e-10)
    assert torch.equal(g_acc, g)


def test_full_width_without_epilogue_equals_conv2d():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 8, 9, 9, generator=gen)
    w = torch.randn(16, 8, 3, 3, generator=gen)
    b = torch.randn(16, generator=gen)
    torch.testing.assert_close(ops.superconv2d(x, w, b, padding=1), F.conv2d(x, w, b, padding=1),
                               rtol=0, atol=0)


def test_channels_last_input_and_output_layout():
    gen = torch.Generator().manual_seed(9)
    for widths in [(6, 6), (3, 5)]:
        tensors, kwargs = make_case(gen, c_in=6, c_out=6, widths=widths)
        tensors["x"] = tensors["x"].detach().contiguous(memory_format=torch.channels_last).requires_grad_()
        out = assert_matches_reference(ops.superconv2d, tensors, dict(kwargs, activation="relu"),
                                       rtol=1e-10, atol=1e-10)
        assert out.is_contiguous()


def test_degenerate_inputs():
    gen = torch.Generator().manual_seed(8)
    # empty batch, width 1, 1x1 spatial, stride 2, zero tensor scale (its gradient is still defined)
    for n, hw, widths, stride in [(0, (4, 4), (3, 2), 1), (2, (1, 1), (1, 1), 1), (2, (7, 5), (4, 6), 2)]:
        tensors, kwargs = make_case(gen, n=n, c_in=5, c_out=6, hw=hw, widths=widths, accumulate=False)
        kwargs["stride"] = stride
        assert_matches_reference(ops.superconv2d, tensors, dict(kwargs, activation="relu"),
                                 rtol=1e-10, atol=1e-10)
    tensors, kwargs = make_case(gen, widths=(4, 4), depthwise=True, accumulate=True)
    tensors["scale"] = torch.zeros((), dtype=torch.float64, requires_grad=True)
    out = assert_matches_reference(ops.superconv2d, tensors, kwargs, rtol=1e-10, atol=1e-10)
    assert torch.equal(out, tensors["accumulate"])
    # only some inputs need gradients
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 4, 3, 3, dtype=torch.float64)
    (gx,) = torch.autograd.grad(ops.superconv2d(x, w, None, 2, 3, padding=1).sum(), [x])
    (gx_ref,) = torch.autograd.grad(ref.superconv2d(x, w, None, 2, 3, padding=1).sum(), [x])
    torch.testing.assert_close(gx, gx_ref)
    assert torch.equal(gx[:, 2:], torch.zeros_like(gx[:, 2:]))


def test_bad_arguments_raise_clear_errors():
    x = torch.randn(1, 4, 5, 5)
    w = torch.randn(6, 4, 3, 3)
    dw = torch.randn(4, 1, 3, 3)
    with pytest.raises(ValueError, match="in_width 5 out of range"):
        ops.superconv2d(x, w, in_width=5)
    with pytest.raises(ValueError, match="out_width 0 out of range"):
        ops.superconv2d(x, w, out_width=0)
    with pytest.raises(ValueError, match="depthwise convolution needs in_width == out_width"):
        ops.superconv2d(x, dw, in_width=2, out_width=3, groups=4)
    with pytest.raises(ValueError, match="groups must be 1"):
        ops.superconv2d(x, w, groups=2)
    with pytest.raises(ValueError, match="weight dtype"):
        ops.superconv2d(x, w.double())
    with pytest.raises(ValueError, match="activation 'gelu'"):
        ops.superconv2d(x, w, activation="gelu")
    with pytest.raises(ValueError, match="accumulate must have the output shape"):
        ops.superconv2d(x, w, padding=1, accumulate=torch.zeros(1, 6, 3, 3))
    with pytest.raises(ValueError, match="scale must be a 0-dim tensor"):
        ops.superconv2d(x, w, scale=torch.ones(2))
    with pytest.raises(ValueError, match="bias must be"):
        ops.superconv2d(x, w, torch.zeros(4))
    if CUDA:
        with pytest.raises(ValueError, match="weight is on"):
            ops.superconv2d(x.cuda(), w)


# opcheck of superconv2d and superconv2d_backward (C++ and Triton, CPU and CUDA) on their
# sample_inputs: tests/test_ops_opcheck.py.


# ---------------------------------------------------------------------------------------------
# Triton kernels: compiled on a GPU, through TRITON_INTERPRET=1 on CPU tensors otherwise (conftest).

TRITON_DEVICE = "cuda" if CUDA else "cpu"
needs_triton = pytest.mark.skipif(
    not ops.backend()["triton"] or (not CUDA and os.environ.get("TRITON_INTERPRET") != "1"),
    reason="triton unavailable (or not in interpreter mode without a GPU)")


def triton_superconv2d(x, weight, bias=None, in_width=None, out_width=None, stride=1, padding=0,
                       groups=1, activation="none", negative_slope=0.2, scale=None, accumulate=None):
    factor = 1.0
    if scale is not None and not isinstance(scale, torch.Tensor):
        scale, factor = None, float(scale)
    return torch.ops.trilevelnas.superconv2d_triton(
        x, weight, bias, in_width, out_width, stride, padding, groups, ACT[activation],
        negative_slope, scale, factor, accumulate)[0]


def test_triton_variant_checks_like_the_cpp_op_and_its_dtypes():
    """superconv2d_triton runs superconv2d's C++ checks (the check op, before any Triton code), and
    rejects float64, which the Triton kernels do not take, with the same kind of one-line error."""
    x, w = torch.randn(1, 4, 5, 5), torch.randn(6, 4, 3, 3)
    with pytest.raises(ValueError, match="^superconv2d: in_width 5 out of range"):
        triton_superconv2d(x, w, in_width=5, out_width=6)
    with pytest.raises(ValueError, match="^superconv2d: weight dtype"):
        triton_superconv2d(x, w.double(), in_width=4, out_width=6)
    with pytest.raises(ValueError, match="^superconv2d: the Triton kernels take float32, float16 or bfloat16, "
                                         "got x of Double$"):
        triton_superconv2d(x.double(), w.double(), in_width=4, out_width=6)


@needs_triton
@pytest.mark.parametrize("k,depthwise", [(1, False), (3, False), (3, True)])
def test_triton_matches_reference(k, depthwise):
    gen = torch.Generator().manual_seed(40 + k + depthwise)
    dtypes = [torch.float32] + ([torch.float16, torch.bfloat16] if CUDA else [])
    for dtype in dtypes:
        tol = {torch.float32: 2e-4 if not CUDA else 2e-2, torch.float16: 2e-2, torch.bfloat16: 8e-2}[dtype]
        for activation, scale, accumulate, stride in [("leaky_relu", "tensor", True, 1),
                                                      ("relu", 0.5, False, 1), ("none", None, False, 2)]:
            tensors, kwargs = make_case(gen, n=2, c_in=20, c_out=18, hw=(6, 5), k=k,
                                        depthwise=depthwise, dtype=dtype, device=TRITON_DEVICE,
                                        scale=scale, accumulate=accumulate)
            kwargs.update(activation=activation, stride=stride)
            assert_matches_reference(triton_superconv2d, tensors, kwargs, rtol=tol, atol=tol)


@needs_triton
def test_triton_full_width_and_width_one():
    gen = torch.Generator().manual_seed(7)
    for widths in [(16, 17), (1, 1)]:
        tensors, kwargs = make_case(gen, n=1, c_in=16, c_out=17, hw=(4, 4), dtype=torch.float32,
                                    device=TRITON_DEVICE, widths=widths)
        tol = 2e-4 if not CUDA else 2e-2
        assert_matches_reference(triton_superconv2d, tensors, kwargs, rtol=tol, atol=tol)


# ---------------------------------------------------------------------------------------------
# CUDA kernels (cuDNN on the slice + fused epilogue)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k,depthwise", [(1, False), (3, False), (3, True)])
def test_cuda_matches_reference(dtype, k, depthwise):
    gen = torch.Generator().manual_seed(60 + k + depthwise)
    tol = {torch.float32: 2e-2, torch.float16: 2e-2, torch.bfloat16: 8e-2}[dtype]
    previous = ops.gpu_backend()
    ops.set_gpu_backend("cuda")
    try:
        for activation in ["none", "relu", "leaky_relu"]:
            tensors, kwargs = make_case(gen, n=2, c_in=24, c_out=20, hw=(8, 8), k=k,
                                        depthwise=depthwise, dtype=dtype, device="cuda")
            kwargs["activation"] = activation
            assert_matches_reference(ops.superconv2d, tensors, kwargs, rtol=tol, atol=tol)
    finally:
        ops.set_gpu_backend(previous)
