"""Relaxation ops (sparsestmax family, packed softmax) against the reference and a brute-force solver."""
import itertools
import os
import math

import numpy as np
import pytest
import torch

import trilevelnas.ops as ops
from trilevelnas.cli import UserError
from trilevelnas.ops import reference as ref


# ---------------------------------------------------------------------------------------------
# Independent brute-force solver of the definitions (paper Eq. 2 / Eq. 3), numpy, small K.


def brute_sparsestmax(beta: np.ndarray, r: float):
    """min ||q - beta||^2 over the simplex with ||q - 1/K|| >= min(r, circumradius).

    Enumerates every face S of the simplex: the projection onto S's affine hull and the nearest
    point of the circle (S's hull) ∩ (sphere of radius r around 1/K). Returns (objective, q).
    """
    k = len(beta)
    r = min(r, math.sqrt(1 - 1 / k))
    c = r * r + 1 / k
    best = (math.inf, None)
    for s in range(1, k + 1):
        for face in itertools.combinations(range(k), s):
            face = list(face)
            b = beta[face]
            cands = [b - (b.sum() - 1) / s]
            d = b - b.mean()
            nd = np.linalg.norm(d)
            if s * c > 1 and nd > 0:
                cands.append(1 / s + math.sqrt(c - 1 / s) * d / nd)
            for qs in cands:
                q = np.zeros(k)
                q[face] = qs
                if (q < -1e-12).any() or ((q - 1 / k) ** 2).sum() < r * r - 1e-10:
                    continue
                f = ((q - beta) ** 2).sum()
                if f < best[0] - 1e-13:
                    best = (f, q)
    return best


def path_penalty_vector(parent):
    """Coefficient of each q_i in sum over root-to-leaf paths of sum_j (q_Pj - q_Pj-1), by enumeration."""
    k = len(parent)
    children = {i: [j for j in range(k) if parent[j] == i] for i in range(k)}
    v = np.zeros(k)
    for leaf in (i for i in range(k) if not children[i]):
        path = [leaf]
        while parent[path[-1]] >= 0:
            path.append(parent[path[-1]])
        path.reverse()
        for a, b in zip(path[:-1], path[1:]):
            v[b] += 1
            v[a] -= 1
    return v


def random_forest(k, rng):
    return [-1 if i == 0 or rng.random() < 0.25 else int(rng.integers(0, i)) for i in range(k)]


def feasible(q, r, k, tol=1e-9):
    rr = min(r, math.sqrt(1 - 1 / k))
    return (q >= -tol).all() and abs(q.sum() - 1) < 1e-9 and ((q - 1 / k) ** 2).sum() >= rr * rr - 1e-9


def random_beta(k, rng):
    beta = rng.normal(size=k) * rng.choice([0.1, 1.0, 3.0])
    if rng.random() < 0.3:
        beta = np.round(beta)  # ties
    return beta


@pytest.mark.parametrize("seed", [1, 2])
def test_sparsestmax_matches_bruteforce(seed):
    rng = np.random.default_rng(seed)
    for _ in range(250):
        k = int(rng.integers(1, 7))
        beta = random_beta(k, rng)
        rc = math.sqrt(1 - 1 / k)
        r = 0.0 if rng.random() < 0.15 else float(rng.uniform(0, 1.15) * rc)
        if abs(r * r + 1 / k - 1) < 1e-4:
            continue
        f_best, q_best = brute_sparsestmax(beta, r)
        q = ops.sparsestmax(torch.tensor(beta), r).numpy()
        assert feasible(q, r, k), (beta, r, q)
        assert ((q - beta) ** 2).sum() <= f_best + 1e-9, (beta, r, q, q_best)
        if len(set(beta.tolist())) == k:  # distinct values: the minimiser is unique
            np.testing.assert_allclose(q, q_best, atol=1e-9)


def test_sorted_sparsestmax_matches_bruteforce():
    rng = np.random.default_rng(3)
    for _ in range(150):
        k = int(rng.integers(1, 7))
        parent = random_forest(k, rng)
        beta = random_beta(k, rng)
        lam = float(rng.uniform(0, 1))
        r = float(rng.uniform(0, 0.9) * math.sqrt(1 - 1 / k))
        v = path_penalty_vector(parent)
        _, q_best = brute_sparsestmax(beta - lam / 2 * v, r)
        q = ops.sorted_sparsestmax_packed(torch.tensor(beta), torch.tensor([0, k]), torch.tensor(parent), r,
                                          lam).numpy()
        assert feasible(q, r, k)

        def objective(z):
            return ((z - beta) ** 2).sum() + lam * (v * z).sum()

        assert objective(q) <= objective(q_best) + 1e-9
        if len(set((beta - lam / 2 * v).tolist())) == k:
            np.testing.assert_allclose(q, q_best, atol=1e-9)


def test_sparsemax_matches_entmax_where_installed():
    entmax = pytest.importorskip("entmax")
    x = torch.randn(50, 7, dtype=torch.float64)
    torch.testing.assert_close(ops.sparsemax(x), entmax.sparsemax(x, dim=-1))


# ---------------------------------------------------------------------------------------------
# Against the reference, forward and backward, float32 and float64.


def random_packed(sizes, dtype, gen):
    offsets = torch.tensor([0] + list(itertools.accumulate(sizes)), dtype=torch.int64)
    values = torch.randn(int(offsets[-1]), dtype=dtype, generator=gen) * 2
    return values, offsets


def compare(fn_ops, fn_ref, values, *, atol, grad_rtol=1e-4):
    v1 = values.clone().requires_grad_(True)
    v2 = values.clone().requires_grad_(True)
    a, b = fn_ops(v1), fn_ref(v2)
    torch.testing.assert_close(a, b, atol=atol, rtol=0)
    g = torch.randn_like(a)
    ga, = torch.autograd.grad(a, v1, g)
    gb, = torch.autograd.grad(b, v2, g)
    assert torch.isfinite(ga).all()
    torch.testing.assert_close(ga, gb, atol=atol * 10, rtol=grad_rtol)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_packed_ops_match_reference(dtype, atol):
    gen = torch.Generator().manual_seed(11)
    sizes = [4] * 25 + [83, 0, 1, 2, 7, 0, 30]
    values, offsets = random_packed(sizes, dtype, gen)
    g = len(sizes)
    r_groups = torch.rand(g, dtype=dtype, generator=gen) * torch.tensor([math.sqrt(1 - 1 / max(s, 1)) for s in sizes],
                                                                          dtype=dtype)
    for r in (0.0, 0.35, r_groups):
        compare(lambda v: ops.sparsestmax_packed(v, offsets, r), lambda v: ref.sparsestmax_packed(v, offsets, r),
                values, atol=atol)
    compare(lambda v: ops.sparsemax_packed(v, offsets), lambda v: ref.sparsemax_packed(v, offsets), values,
            atol=atol)
    compare(lambda v: ops.softmax_packed(v, offsets), lambda v: ref.softmax_packed(v, offsets), values, atol=atol)
    parent = torch.cat([torch.tensor(random_forest(s, np.random.default_rng(s)), dtype=torch.int64) for s in sizes])
    lam = torch.rand(g, dtype=dtype, generator=gen)
    for lam_, r in ((0.01, 0.2), (lam, r_groups)):
        compare(lambda v: ops.sorted_sparsestmax_packed(v, offsets, parent, r, lam_),
                lambda v: ref.sorted_sparsestmax_packed(v, offsets, parent, r, lam_), values, atol=atol)


def test_wide_supports_and_top_ties_match_reference():
    """Small spreads give supports longer than the kernel's selection phase (its sort fallback)."""
    gen = torch.Generator().manual_seed(37)
    for k in (9, 20, 83):
        for scale in (1e-3, 0.1, 1.0):
            x = torch.randn(30, k, generator=gen, dtype=torch.float64) * scale
            x[::7, : k // 2] = x[::7].max()  # ties at the maximum
            for r in (0.0, 0.05, 0.5):
                torch.testing.assert_close(ops.sparsestmax(x, r), ref.sparsestmax(x, r), atol=1e-12, rtol=0)


def test_softmax_packed_matches_torch_softmax():
    gen = torch.Generator().manual_seed(5)
    values, offsets = random_packed([3, 0, 9, 1], torch.float64, gen)
    out = ops.softmax_packed(values, offsets)
    for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
        torch.testing.assert_close(out[a:b], torch.softmax(values[a:b], 0))


def test_forest_weights_match_path_enumeration():
    rng = np.random.default_rng(4)
    for k in (1, 2, 5, 12):
        parent = random_forest(k, rng)
        w = ref.forest_weights(torch.tensor([0, k]), torch.tensor(parent)).numpy()
        np.testing.assert_allclose(w, path_penalty_vector(parent))


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_dense_sparsestmax_matches_reference(dim):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(5, 6, 4, dtype=torch.float64, generator=gen)
    compare(lambda v: ops.sparsestmax(v, 0.3, dim), lambda v: ref.sparsestmax(v, 0.3, dim), x, atol=1e-12)
    compare(lambda v: ops.sparsemax(v, dim), lambda v: ref.sparsemax(v, dim), x, atol=1e-12)
    gshape = list(x.movedim(dim, -1).shape[:-1])
    r = torch.rand(gshape[-1], dtype=torch.float64, generator=gen) * 0.5  # broadcast over the first dim
    compare(lambda v: ops.sparsestmax(v, r, dim), lambda v: ref.sparsestmax(v, r, dim), x, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Finite differences (gradcheck, float64), away from the kinks of the piecewise-smooth maps.


def spaced(n, gen):
    """Values with pairwise gaps >= 0.05, so that finite differences do not cross a kink."""
    return (torch.randperm(n, generator=gen).to(torch.float64) * 0.1
            + torch.rand(n, generator=gen, dtype=torch.float64) * 0.05)


def test_gradcheck_all_ops():
    gen = torch.Generator().manual_seed(13)
    offsets = torch.tensor([0, 4, 4, 9, 10, 16])
    v = spaced(16, gen).requires_grad_(True)
    parent = torch.tensor([-1, 0, 0, 1, -1, 0, 1, 1, 3, -1, -1, 0, 1, 2, 2, -1])
    for r in (0.0, 0.25, 0.6):
        assert torch.autograd.gradcheck(lambda x: ops.sparsestmax_packed(x, offsets, r), (v,))
        assert torch.autograd.gradcheck(lambda x: ops.sorted_sparsestmax_packed(x, offsets, parent, r, 0.05), (v,))
    assert torch.autograd.gradcheck(lambda x: ops.softmax_packed(x, offsets), (v,))
    d = spaced(24, gen).reshape(4, 6).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: ops.sparsestmax(x, 0.4, dim=0), (d,))
    assert torch.autograd.gradcheck(lambda x: ops.sparsemax(x), (d,))


# ---------------------------------------------------------------------------------------------
# Degenerate inputs: valid, deterministic, never NaN.


def test_k1_and_empty_groups():
    out = ops.sparsestmax_packed(torch.tensor([3.0, -2.0]), torch.tensor([0, 1, 1, 2, 2]), 0.7)
    assert out.tolist() == [1.0, 1.0]
    empty = ops.sparsestmax_packed(torch.zeros(0), torch.tensor([0]), 0.3)
    assert empty.shape == (0,)
    x = torch.zeros(0, requires_grad=True)
    y = ops.sparsestmax_packed(x, torch.tensor([0, 0, 0]), 0.3)
    y.sum().backward()
    assert x.grad.shape == (0,)
    assert ops.sparsestmax(torch.tensor([[5.0]]), 0.2).tolist() == [[1.0]]


@pytest.mark.parametrize("k", [2, 3, 4, 7])
@pytest.mark.parametrize("rho", [0.1, 0.5, 0.9])
def test_uniform_input_with_radius_is_valid_and_deterministic(k, rho):
    r = rho * math.sqrt(1 - 1 / k)
    x = torch.full((k,), 0.3, dtype=torch.float64, requires_grad=True)
    q = ops.sparsestmax(x, r)
    q2 = ops.sparsestmax(x.detach().clone(), r)
    assert torch.equal(q.detach(), q2)
    assert feasible(q.detach().numpy(), r, k)
    assert abs(float(((q.detach() - 1 / k) ** 2).sum().sqrt()) - r) < 1e-9  # on the sphere: a minimiser
    assert torch.all(q[:-1] >= q[1:])  # ties broken by index: earlier entries get more
    torch.testing.assert_close(q, ref.sparsestmax(x, r))
    upstream = torch.randn(k, dtype=torch.float64)
    (g,) = torch.autograd.grad(q, x, upstream)
    (g_ref,) = torch.autograd.grad(ref.sparsestmax(x, r), x, upstream)
    assert torch.isfinite(g).all()
    torch.testing.assert_close(g, g_ref)


def test_tied_maximum_matches_reference_gradients():
    x = torch.tensor([1.0, 2.0, 2.0, 0.5, 2.0], dtype=torch.float64)
    for r in (0.3, 0.6):
        compare(lambda v: ops.sparsestmax(v, r), lambda v: ref.sparsestmax(v, r), x, atol=1e-12)
        q = ops.sparsestmax(x, r)
        assert q[1] >= q[2] >= q[4] and q[0] == 0 and q[3] == 0


def test_radius_at_or_beyond_circumradius_is_one_hot_at_first_argmax():
    x = torch.tensor([[0.2, 0.9, 0.9, -1.0]], dtype=torch.float32, requires_grad=True)
    rc = math.sqrt(1 - 1 / 4)
    for r in (rc, torch.tensor(rc, dtype=torch.float32).item(), 2.0):
        q = ops.sparsestmax(x, r)
        assert q.tolist() == [[0.0, 1.0, 0.0, 0.0]]
        (g,) = torch.autograd.grad(q, x, torch.randn(1, 4))
        assert torch.count_nonzero(g) == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_magnitudes(dtype):
    gen = torch.Generator().manual_seed(17)
    x = (torch.randn(20, 5, generator=gen) * 1e4).to(dtype)
    x[0] = 1e4
    x[1] = torch.tensor([1e4, -1e4, 1e4, -1e4, 0.0])
    for r in (0.0, 0.4):
        q = ops.sparsestmax(x, r)
        assert torch.isfinite(q).all()
        torch.testing.assert_close(q.sum(-1), torch.ones(20, dtype=dtype))
        torch.testing.assert_close(q, ref.sparsestmax(x, r), atol=1e-5 if dtype == torch.float32 else 1e-12, rtol=0)
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(ops.sparsestmax(xr, r), xr, torch.randn_like(x))
        assert torch.isfinite(g).all()


# ---------------------------------------------------------------------------------------------
# Dispatcher integration: opcheck, torch.compile.


def test_opcheck_all_ops():
    gen = torch.Generator().manual_seed(19)
    values, offsets = random_packed([4, 0, 5, 1], torch.float64, gen)
    values.requires_grad_(True)
    parent = torch.tensor([-1, 0, 0, 1, -1, 0, 0, 2, -1, -1])
    radius = torch.tensor([0.1, 0.2, 0.3, 0.0], dtype=torch.float64)
    lib = torch.ops.trilevelnas
    samples = [
        (lib.sparsestmax_packed.default, (values, offsets, None, 0.3)),
        (lib.sparsestmax_packed.default, (values, offsets, radius, 0.0)),
        (lib.sorted_sparsestmax_packed.default, (values, offsets, parent, radius, 0.0, None, 0.1)),
        (lib.sparsestmax_rows.default, (values.detach().reshape(2, 5).requires_grad_(True), None, 0.2)),
        (lib.softmax_packed.default, (values, offsets)),
    ]
    for op, args in samples:
        torch.library.opcheck(op, args)


def test_torch_compile_fullgraph():
    offsets = torch.tensor([0, 4, 8, 11])
    parent = torch.tensor([-1, 0, 1, 2] * 2 + [-1, 0, 0])

    def f(v):
        a = ops.sparsestmax_packed(v, offsets, 0.3)
        b = ops.sorted_sparsestmax_packed(v, offsets, parent, 0.2, 0.01)
        return (a * b).sum() + ops.softmax_packed(v, offsets).square().sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    v = torch.randn(11, requires_grad=True)
    out = compiled(v)
    (g,) = torch.autograd.grad(out, v)
    v2 = v.detach().clone().requires_grad_(True)
    out2 = f(v2)
    (g2,) = torch.autograd.grad(out2, v2)
    torch.testing.assert_close(out, out2)
    torch.testing.assert_close(g, g2)


# ---------------------------------------------------------------------------------------------
# Bad input.


def test_bad_input_raises_user_error_naming_the_culprit():
    v = torch.randn(5)
    off = torch.tensor([0, 2, 5])
    with pytest.raises(UserError, match="offsets"):
        ops.sparsestmax_packed(v, off.to(torch.int32), 0.1)
    with pytest.raises(UserError, match="values"):
        ops.sparsestmax_packed(v.reshape(5, 1), off, 0.1)
    with pytest.raises(UserError, match="dtype"):
        ops.sparsemax_packed(v.to(torch.float16), off)
    with pytest.raises(UserError, match="r must be finite and >= 0"):
        ops.sparsestmax_packed(v, off, -0.1)
    with pytest.raises(UserError, match="one entry per group"):
        ops.sparsestmax_packed(v, off, torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(UserError, match="parent"):
        ops.sorted_sparsestmax_packed(v, off, torch.tensor([-1, 0, -1]), 0.1, 0.1)
    with pytest.raises(UserError, match="does not broadcast"):
        ops.sparsestmax(torch.randn(3, 4), torch.rand(4), dim=-1)
    with pytest.raises(UserError, match="dim"):
        ops.sparsemax(torch.randn(3, 4), dim=2)
    with pytest.raises(ValueError, match="non-decreasing"):
        ops.sparsestmax_packed(v, torch.tensor([0, 3, 2, 5]), 0.1)
    with pytest.raises(ValueError, match="parent"):
        ops.sorted_sparsestmax_packed(v, off, torch.tensor([-1, 1, -1, 0, 3]), 0.1, 0.1)


# ---------------------------------------------------------------------------------------------
# Triton kernels: compiled on a GPU, through TRITON_INTERPRET=1 on CPU tensors otherwise (conftest).

TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(
    not ops.backend()["triton"] or (TRITON_DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1"),
    reason="triton unavailable (or not in interpreter mode without a GPU)")


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_triton_packed_ops_match_reference(dtype):
    lib = torch.ops.trilevelnas
    gen = torch.Generator().manual_seed(23)
    sizes = [4, 0, 1, 2, 5, 37]  # 37 > one chunk of 32
    values, offsets = random_packed(sizes, dtype, gen)
    values[0:2] = values[0:2].max()  # a tied maximum
    values, offsets = values.to(TRITON_DEVICE), offsets.to(TRITON_DEVICE)
    atol = 1e-12 if dtype == torch.float64 else 3e-6
    radius = (torch.rand(len(sizes), generator=gen, dtype=dtype) * 0.6).to(TRITON_DEVICE)
    parent = torch.cat([torch.tensor(random_forest(s, np.random.default_rng(s)), dtype=torch.int64)
                        for s in sizes]).to(TRITON_DEVICE)
    cases = [
        (lambda v: lib.triton_sparsestmax_packed(v, offsets, None, 0.35, None, None, 0.0)[0],
         lambda v: ref.sparsestmax_packed(v, offsets, 0.35)),
        (lambda v: lib.triton_sparsestmax_packed(v, offsets, radius, 0.0, None, None, 0.0)[0],
         lambda v: ref.sparsestmax_packed(v, offsets, radius)),
        (lambda v: lib.triton_sparsestmax_packed(v, offsets, None, 0.0, None, None, 0.0)[0],
         lambda v: ref.sparsemax_packed(v, offsets)),
        (lambda v: lib.triton_sparsestmax_packed(v, offsets, None, 2.0, None, None, 0.0)[0],
         lambda v: ref.sparsestmax_packed(v, offsets, 2.0)),
        (lambda v: lib.triton_sparsestmax_packed(v, offsets, radius, 0.0, parent, None, 0.3)[0],
         lambda v: ref.sorted_sparsestmax_packed(v, offsets, parent, radius, 0.3)),
        (lambda v: lib.triton_softmax_packed(v, offsets), lambda v: ref.softmax_packed(v, offsets)),
    ]
    for fn_triton, fn_ref in cases:
        compare(fn_triton, fn_ref, values, atol=atol)


@needs_triton
def test_triton_rows_and_degenerate_inputs_match_cpu_kernels():
    lib = torch.ops.trilevelnas
    x = torch.randn(6, 5, dtype=torch.float64)
    x[0] = 0.25  # uniform row
    x[1, :3] = 4.0  # tied maximum
    x[2] *= 1e4
    for r in (0.0, 0.3, 0.8):
        out, gain = lib.triton_sparsestmax_rows(x.to(TRITON_DEVICE), None, r)
        out_c, gain_c = lib.sparsestmax_rows(x, None, r)
        torch.testing.assert_close(out.cpu(), out_c, atol=1e-12, rtol=0)
        torch.testing.assert_close(gain.cpu(), gain_c, atol=1e-9, rtol=1e-9)
        g = torch.randn_like(x)
        d = lib.triton_sparsestmax_rows_backward(g.to(TRITON_DEVICE), out, gain)
        assert torch.isfinite(d).all()
        torch.testing.assert_close(d.cpu(), lib.sparsestmax_rows_backward(g, out_c, gain_c), atol=1e-9, rtol=1e-9)
    empty_out, empty_gain = lib.triton_sparsestmax_rows(torch.zeros(0, 4, device=TRITON_DEVICE), None, 0.2)
    assert empty_out.shape == (0, 4) and empty_gain.shape == (0,)


@needs_triton
def test_triton_gradcheck():
    lib = torch.ops.trilevelnas
    gen = torch.Generator().manual_seed(29)
    offsets = torch.tensor([0, 3, 3, 8], device=TRITON_DEVICE)
    v = spaced(8, gen).to(TRITON_DEVICE).requires_grad_(True)
    parent = torch.tensor([-1, 0, 0, -1, 0, 1, 1, -1], device=TRITON_DEVICE)
    assert torch.autograd.gradcheck(
        lambda x: lib.triton_sparsestmax_packed(x, offsets, None, 0.3, parent, None, 0.05)[0], (v,))
    assert torch.autograd.gradcheck(lambda x: lib.triton_softmax_packed(x, offsets), (v,))


# ---------------------------------------------------------------------------------------------
# CUDA kernels (GPU only).

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available() or not ops.backend()["cuda_kernels"],
                                reason="needs a GPU and the extension's CUDA kernels")


@needs_cuda
@pytest.mark.parametrize("dtype,atol,grad_rtol", [(torch.float64, 1e-12, 1e-4), (torch.float32, 3e-6, 1e-4),
                                                  (torch.float16, 2e-3, 2e-2), (torch.bfloat16, 2e-2, 6e-2)])
def test_cuda_ops_match_reference(dtype, atol, grad_rtol):
    previous = ops.gpu_backend()
    ops.set_gpu_backend("cuda")
    try:
        gen = torch.Generator().manual_seed(31)
        sizes = [4] * 25 + [83, 0, 1, 2, 33, 100]
        values, offsets = random_packed(sizes, torch.float64, gen)
        values[0:2] = values[0:2].max()
        values = values.to(dtype).cuda()
        offsets = offsets.cuda()
        parent = torch.cat([torch.tensor(random_forest(s, np.random.default_rng(s)), dtype=torch.int64)
                            for s in sizes]).cuda()
        radius = (torch.rand(len(sizes), generator=gen) * 0.6).cuda()
        cases = [
            (lambda v: ops.sparsestmax_packed(v, offsets, radius), lambda v: ref.sparsestmax_packed(v, offsets, radius)),
            (lambda v: ops.sparsemax_packed(v, offsets), lambda v: ref.sparsemax_packed(v, offsets)),
            (lambda v: ops.softmax_packed(v, offsets), lambda v: ref.softmax_packed(v, offsets)),
            (lambda v: ops.sorted_sparsestmax_packed(v, offsets, parent, 0.3, 0.2),
             lambda v: ref.sorted_sparsestmax_packed(v, offsets, parent, 0.3, 0.2)),
        ]
        for k in (1, 3, 4, 16, 17, 32, 40):
            x = torch.randn(64, k, generator=gen).to(dtype).cuda()
            x[0] = 0.5
            cases.append((x, 0.4))
        for case in cases:
            if isinstance(case[0], torch.Tensor):
                x, r = case
                compare(lambda v: ops.sparsestmax(v, r), lambda v: ref.sparsestmax(v, r), x, atol=atol,
                        grad_rtol=grad_rtol)
            else:
                compare(case[0], case[1], values, atol=atol, grad_rtol=grad_rtol)
    finally:
        ops.set_gpu_backend(previous)


@needs_cuda
def test_cuda_search_call_uses_at_most_two_launches_per_direction():
    from torch.profiler import ProfilerActivity, profile

    previous = ops.gpu_backend()
    ops.set_gpu_backend("cuda")
    try:
        sizes = [4] * 25 + [83]
        offsets = torch.tensor([0] + list(itertools.accumulate(sizes)), device="cuda")
        parent = torch.tensor([-1] * 100 + [-1] + [(i - 1) // 2 for i in range(1, 83)], device="cuda")
        lam = torch.tensor([0.0] * 25 + [0.01], device="cuda")
        radius = torch.full((26,), 0.3, device="cuda")
        v = torch.randn(183, device="cuda", requires_grad=True)
        out = ops.sorted_sparsestmax_packed(v, offsets, parent, radius, lam)
        grad = torch.randn_like(out)
        torch.cuda.synchronize()
        for direction in ("forward", "backward"):
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                if direction == "forward":
                    out = ops.sorted_sparsestmax_packed(v, offsets, parent, radius, lam)
                else:
                    torch.autograd.grad(out, v, grad)
                torch.cuda.synchronize()
            kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
            assert len(kernels) <= 2, (direction, [e.name for e in kernels])
    finally:
        ops.set_gpu_backend(previous)


@needs_cuda
def test_cuda_rows_forward_reaches_60_percent_of_copy_bandwidth():
    previous = ops.gpu_backend()
    ops.set_gpu_backend("cuda")
    try:
        x = torch.randn(1 << 20, 16, device="cuda")

        def timed(fn, reps=20):
            fn()
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(reps):
                fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / reps

        with torch.no_grad():
            t_copy = timed(lambda: x.clone())  # reads and writes x.numel() floats
            t_op = timed(lambda: ops.sparsestmax(x, 0.3))  # the same, plus one float per row
        assert t_op <= t_copy * (1 + 1 / 16) / 0.6, (t_op, t_copy)
    finally:
        ops.set_gpu_backend(previous)
