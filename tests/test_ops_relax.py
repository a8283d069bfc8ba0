"""Relaxation ops (sparsestmax family, packed softmax, the forest ordering penalty) against the
reference, a brute-force solver and plain-Python loops."""
import itertools
import os
import math

import numpy as np
import pytest
import torch

import trilevelnas.ops as ops
from trilevelnas.errors import OpArgumentError
from trilevelnas.ops import reference as ref


# ---------------------------------------------------------------------------------------------
# Independent brute-force solver of the definition (paper Eq. 2), numpy, small K.


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
    """Outputs (a tensor or a tuple of tensors) and the gradient of a random projection of them agree."""
    v1 = values.clone().requires_grad_(True)
    v2 = values.clone().requires_grad_(True)
    a, b = fn_ops(v1), fn_ref(v2)
    a, b = (a if isinstance(a, tuple) else (a,)), (b if isinstance(b, tuple) else (b,))
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        torch.testing.assert_close(x, y, atol=atol, rtol=0)
    g = [torch.randn_like(x) for x in a]
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
    for lam_, r in ((0.01, 0.2), (lam, r_groups), (0.0, 0.0)):
        compare(lambda v: ops.sorted_sparsestmax_packed(v, offsets, parent, r, lam_),
                lambda v: ref.sorted_sparsestmax_packed(v, offsets, parent, r, lam_), values, atol=atol)
    for relax in (lambda v: ops.softmax_packed(v, offsets), lambda v: ops.sparsemax_packed(v, offsets),
                  lambda v: ops.sparsestmax_packed(v, offsets, r_groups)):
        compare(lambda v: ops.order_penalty_packed(relax(v), offsets, parent),
                lambda v: ref.order_penalty_packed(relax(v), offsets, parent), values, atol=atol)


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
    # the penalty on the inputs themselves (distinct values: no tie, no kink within eps)
    assert torch.autograd.gradcheck(lambda x: ops.order_penalty_packed(x, offsets, parent), (v,))
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
# Ordering penalty and sorted sparsestmax's (q, penalty): against plain-Python loops over the edges.


def loop_penalty(q, offsets, parent):
    """Per group, the sum over its edges of max(0, q_child - q_parent): a plain Python loop."""
    q, offsets, parent = q.tolist(), offsets.tolist(), parent.tolist()
    out = []
    for a, b in zip(offsets[:-1], offsets[1:]):
        total = 0.0
        for i in range(a, b):
            if parent[i] >= 0:
                total += max(0.0, q[i] - q[a + parent[i]])
        out.append(total)
    return out


def loop_penalty_grad(q, offsets, parent, upstream):
    """Gradient of sum_g upstream[g] * penalty[g] by the edge rule, a plain Python loop: an edge with
    q_child > q_parent gives +upstream to the child and -upstream to the parent; a tie gives 0."""
    q, offsets, parent, upstream = q.tolist(), offsets.tolist(), parent.tolist(), upstream.tolist()
    grad = [0.0] * len(q)
    for g, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
        for i in range(a, b):
            if parent[i] >= 0 and q[i] > q[a + parent[i]]:
                grad[i] += upstream[g]
                grad[a + parent[i]] -= upstream[g]
    return grad


def packed_forests(sizes, rng):
    return torch.tensor([p for s in sizes for p in random_forest(s, rng)], dtype=torch.int64)


def paper_tree_parents() -> torch.Tensor:
    """Parents of the paper's tree of paths (5 RiR steps, 2 upsamplings), as TreeTopology builds them."""
    from trilevelnas.supernet.tree import enumerate_tree

    seqs = enumerate_tree(5, 2)
    index = {s: i for i, s in enumerate(seqs)}
    return torch.tensor([-1] + [index[s[:-1]] for s in seqs[1:]], dtype=torch.int64)


# One group with ties (q_child == q_parent on edges 1->0 and 4->2) and one violation (3 -> 1).
TIE_Q = [0.4, 0.4, 0.1, 0.5, 0.1]
TIE_PARENT = [-1, 0, 0, 1, 2]
TIE_PENALTY = 0.1
TIE_GRAD = [0.0, -1.0, 0.0, 1.0, 0.0]

# Empty groups, a single node, a forest with two roots, a chain of equal weights, an empty last group.
DEGENERATE_OFFSETS = [0, 0, 1, 1, 6, 9, 9]
DEGENERATE_PARENT = [-1, -1, 0, -1, 2, 2, -1, 0, 1]
DEGENERATE_Q = [0.7, 0.1, 0.3, 0.2, 0.2, 0.6, 0.5, 0.5, 0.5]
DEGENERATE_PENALTY = [0.0, 0.0, 0.0, 0.6, 0.0, 0.0]  # group 3: (0.3 - 0.1) + 0 + (0.6 - 0.2)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_order_penalty_matches_python_loop_and_reference(dtype, atol):
    rng = np.random.default_rng(41)
    gen = torch.Generator().manual_seed(41)
    for trial in range(24):
        sizes = [int(k) for k in rng.integers(0, 14, size=int(rng.integers(1, 7)))]
        values, offsets = random_packed(sizes, dtype, gen)
        parent = packed_forests(sizes, rng)
        kind = trial % 4
        if kind == 1:
            values = torch.round(values)  # parent/child ties
        elif kind == 2:
            values = ops.sparsemax_packed(values, offsets)  # exact zeros: ties at 0
        elif kind == 3:
            values = ops.softmax_packed(values, offsets)
        out = ops.order_penalty_packed(values, offsets, parent)
        assert out.dtype == dtype and out.shape == (len(sizes),)
        np.testing.assert_allclose(out.tolist(), loop_penalty(values, offsets, parent), atol=atol, rtol=1e-6)
        torch.testing.assert_close(out, ref.order_penalty_packed(values, offsets, parent), atol=atol, rtol=0)
        upstream = torch.randn(len(sizes), dtype=dtype, generator=gen)
        v = values.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(ops.order_penalty_packed(v, offsets, parent), v, upstream)
        np.testing.assert_allclose(grad.tolist(), loop_penalty_grad(values, offsets, parent, upstream), atol=atol)
        v_ref = values.clone().requires_grad_(True)
        (grad_ref,) = torch.autograd.grad(ref.order_penalty_packed(v_ref, offsets, parent), v_ref, upstream)
        torch.testing.assert_close(grad, grad_ref, atol=atol, rtol=0)


def test_order_penalty_gradcheck_on_random_forests():
    """Finite differences (float64) on distinct weights, so that no edge crosses its kink within eps."""
    rng = np.random.default_rng(43)
    gen = torch.Generator().manual_seed(43)
    sizes = [7, 0, 1, 12, 3]
    offsets = torch.tensor([0] + list(itertools.accumulate(sizes)))
    parent = packed_forests(sizes, rng)
    v = spaced(sum(sizes), gen).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: ops.order_penalty_packed(x, offsets, parent), (v,))
    assert torch.autograd.gradcheck(lambda x: ref.order_penalty_packed(x, offsets, parent), (v,))
    for r, lam in ((0.0, 0.3), (0.2, torch.tensor([0.5, 0.0, 1.0, 2.0, 0.1], dtype=torch.float64))):
        assert torch.autograd.gradcheck(lambda x: ops.sorted_sparsestmax_packed(x, offsets, parent, r, lam), (v,))


@pytest.mark.parametrize("impl", [ops, ref], ids=["ops", "reference"])
def test_order_penalty_ties_give_zero_gradient_on_that_edge(impl):
    q = torch.tensor(TIE_Q, dtype=torch.float64, requires_grad=True)
    offsets, parent = torch.tensor([0, 5]), torch.tensor(TIE_PARENT)
    out = impl.order_penalty_packed(q, offsets, parent)
    assert out.item() == pytest.approx(TIE_PENALTY, abs=1e-15)
    (grad,) = torch.autograd.grad(out.sum(), q)
    assert grad.tolist() == TIE_GRAD


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_order_penalty_degenerate_inputs(dtype):
    offsets, parent = torch.tensor(DEGENERATE_OFFSETS), torch.tensor(DEGENERATE_PARENT)
    q = torch.tensor(DEGENERATE_Q, dtype=dtype, requires_grad=True)
    out = ops.order_penalty_packed(q, offsets, parent)
    torch.testing.assert_close(out, torch.tensor(DEGENERATE_PENALTY, dtype=dtype), atol=1e-7, rtol=0)
    torch.testing.assert_close(out, ref.order_penalty_packed(q, offsets, parent), atol=1e-7, rtol=0)
    upstream = torch.arange(1.0, 7.0, dtype=dtype)
    (grad,) = torch.autograd.grad(out, q, upstream)
    assert grad.tolist() == loop_penalty_grad(q.detach(), offsets, parent, upstream)
    assert grad.tolist() == [0.0, -4.0, 4.0, -4.0, 0.0, 4.0, 0.0, 0.0, 0.0]
    # all-equal weights and forests of roots only: zero penalty and zero gradient
    for q_const, par in ((torch.full((9,), 0.25, dtype=dtype), parent), (torch.rand(9, dtype=dtype),
                                                                       torch.full((9,), -1))):
        x = q_const.requires_grad_(True)
        out = ops.order_penalty_packed(x, offsets, par)
        assert out.tolist() == [0.0] * 6
        (grad,) = torch.autograd.grad(out, x, upstream)
        assert grad.tolist() == [0.0] * 9
    # no group at all, and only empty groups
    for offs in (torch.tensor([0]), torch.tensor([0, 0, 0])):
        x = torch.zeros(0, dtype=dtype, requires_grad=True)
        out = ops.order_penalty_packed(x, offs, torch.zeros(0, dtype=torch.int64))
        assert out.shape == (offs.numel() - 1,) and out.tolist() == [0.0] * (offs.numel() - 1)
        out.sum().backward()
        assert x.grad.shape == (0,)


@pytest.mark.parametrize("r", [0.0, 0.3, "per-group"])
def test_sorted_sparsestmax_is_sparsestmax_plus_a_lambda_scaled_penalty(r):
    gen = torch.Generator().manual_seed(47)
    sizes = [4] * 5 + [83, 0, 1]
    values, offsets = random_packed(sizes, torch.float64, gen)
    parent = torch.cat([torch.full((20,), -1), paper_tree_parents(), torch.tensor([-1])])
    if r == "per-group":
        r = torch.rand(len(sizes), dtype=torch.float64, generator=gen) * 0.5
    base = ops.sparsestmax_packed(values, offsets, r)
    base_penalty = ops.order_penalty_packed(base, offsets, parent)
    assert float(base_penalty[5]) > 0  # the tree's sparsestmax violates the order: the test has teeth

    # lam = 0: exactly sparsestmax, a zero penalty, and exactly sparsestmax's gradient
    v = values.clone().requires_grad_(True)
    q, penalty = ops.sorted_sparsestmax_packed(v, offsets, parent, r, 0.0)
    assert torch.equal(q, base) and torch.equal(penalty, torch.zeros(len(sizes), dtype=torch.float64))
    g, h = torch.randn_like(q), torch.randn_like(penalty)
    (grad,) = torch.autograd.grad((q, penalty), v, (g, h))
    (grad_base,) = torch.autograd.grad(ops.sparsestmax_packed(v, offsets, r), v, g)
    assert torch.equal(grad, grad_base)

    # any lam: q is still sparsestmax; the penalty is lam_g times the penalty of q
    lam_groups = torch.tensor([0.0, 0.5, 1.0, 2.0, 0.0, 0.1, 3.0, 1.0], dtype=torch.float64)
    for lam in (0.01, 0.1, 1.0, 7.5, lam_groups):
        q, penalty = ops.sorted_sparsestmax_packed(values, offsets, parent, r, lam)
        assert torch.equal(q, base)
        torch.testing.assert_close(penalty, lam * base_penalty, atol=1e-15, rtol=0)
        q_ref, penalty_ref = ref.sorted_sparsestmax_packed(values, offsets, parent, r, lam)
        torch.testing.assert_close(q, q_ref, atol=1e-12, rtol=0)
        torch.testing.assert_close(penalty, penalty_ref, atol=1e-12, rtol=0)


def test_penalty_orders_the_paper_tree_as_lambda_grows():
    """Minimise -<c, q> + lam * penalty over the logits of the paper's 83-node tree (q = sparsemax, r = 0)
    by 300 Adam steps from small noise: the final penalty decreases as lam grows (0, 0.01, 0.1, 1), and
    at lam = 1 the weights do not increase along any edge. (An exact minimiser's penalty is only
    non-increasing in lam, piecewise constant for this linear objective; after these 300 steps from
    this seed it decreases strictly, by >= 0.03 per step.)"""
    parent = paper_tree_parents()
    n = parent.numel()
    offsets = torch.tensor([0, n])
    gen = torch.Generator().manual_seed(1)
    c = 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)
    noise = 1e-3 * torch.randn(n, generator=gen, dtype=torch.float64)
    penalties = []
    for lam in (0.0, 0.01, 0.1, 1.0):
        x = noise.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=0.003)
        steps = 300
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)  # settles the hinge's kinks
        for _ in range(steps):
            q, penalty = ops.sorted_sparsestmax_packed(x, offsets, parent, 0.0, lam)
            loss = -(c * q).sum() + penalty.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            q = ops.sparsemax_packed(x, offsets)
            penalties.append(float(ops.order_penalty_packed(q, offsets, parent)))
    assert all(b < a for a, b in zip(penalties, penalties[1:])), penalties
    assert penalties[0] > 0.5 and penalties[-1] < 1e-3, penalties
    rise = q[1:] - q[parent[1:]]  # q from lam = 1
    assert float(rise.max()) <= 1e-3, float(rise.max())
    assert int((q > 0).sum()) > 1  # ordered without collapsing to one node


def test_lambda_point_one_keeps_the_tree_and_reaches_every_logit():
    """The withdrawn telescoped form made the root one-hot at lam = 0.1; the hinge does not, and every
    logit of the near-uniform start gets a gradient."""
    parent = paper_tree_parents()
    n = parent.numel()
    offsets = torch.tensor([0, n])
    gen = torch.Generator().manual_seed(53)
    x = (1e-3 * torch.randn(n, generator=gen, dtype=torch.float64)).requires_grad_(True)
    c = torch.randn(n, generator=gen, dtype=torch.float64)
    q, penalty = ops.sorted_sparsestmax_packed(x, offsets, parent, 0.0, 0.1)
    assert float(q[0].detach()) < 0.5
    (grad,) = torch.autograd.grad(q.sum() * 0 + (q * c).sum() + penalty.sum(), x)
    assert bool((grad != 0).all()), int((grad == 0).sum())
    x_ref = x.detach().clone().requires_grad_(True)
    q_ref, penalty_ref = ref.sorted_sparsestmax_packed(x_ref, offsets, parent, 0.0, 0.1)
    (grad_ref,) = torch.autograd.grad(q_ref.sum() * 0 + (q_ref * c).sum() + penalty_ref.sum(), x_ref)
    torch.testing.assert_close(grad, grad_ref, atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------
# Dispatcher integration: torch.compile.


# opcheck of every op (C++ and Triton, CPU and CUDA) on its sample_inputs: tests/test_ops_opcheck.py.


def test_torch_compile_fullgraph():
    offsets = torch.tensor([0, 4, 8, 11])
    parent = torch.tensor([-1, 0, 1, 2] * 2 + [-1, 0, 0])

    lam = torch.tensor([0.0, 0.5, 1.0])

    def f(v):
        a = ops.sparsestmax_packed(v, offsets, 0.3)
        b, penalty = ops.sorted_sparsestmax_packed(v, offsets, parent, 0.2, 0.01)
        _, penalty_g = ops.sorted_sparsestmax_packed(v, offsets, parent, 0.0, lam)
        soft = ops.softmax_packed(v, offsets)
        order = ops.order_penalty_packed(soft, offsets, parent)
        return (a * b).sum() + soft.square().sum() + penalty.sum() + penalty_g.sum() + order.sum()

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


V5 = torch.randn(5, dtype=torch.float64)
OFF = torch.tensor([0, 2, 5])
PARENT = torch.tensor([-1, 0, -1, 0, 1])
GAIN = torch.zeros(2, dtype=torch.float64)

# (op, arguments, the message's pattern): metadata every kernel checks (csrc/relax_checks.h).
BAD_ARGUMENTS = [
    ("sparsestmax_packed", (V5, OFF.to(torch.int32), None, 0.1), "offsets must be a 1-D int64 tensor"),
    ("sparsestmax_packed", (V5.reshape(5, 1), OFF, None, 0.1), "values must be 1-D"),
    ("sparsestmax_packed", (V5.to(torch.int32), OFF, None, 0.1), "values has dtype Int"),
    ("sparsestmax_packed", (V5, OFF[:0], None, 0.1), "offsets must hold at least one entry"),
    ("sparsestmax_packed", (V5, OFF, None, -0.1), "radius must be finite and >= 0, got -0.1"),
    ("sparsestmax_packed", (V5, OFF, None, math.nan), "radius must be finite"),
    ("sparsestmax_packed", (V5, OFF, torch.ones(3), 0.0), r"radius must have one entry per group \(2\)"),
    ("sparsestmax_rows", (V5[0], None, 0.1), "x must have at least one dimension"),
    ("sparsestmax_rows", (V5.reshape(5, 1), torch.ones(4), 0.0), r"radius must have one entry per group \(5\)"),
    ("sparsestmax_packed_backward", (V5.float(), V5, GAIN, OFF), "grad must match out"),
    ("sparsestmax_packed_backward", (V5, V5, GAIN.float(), OFF), "gain must be the forward's gain"),
    ("sparsestmax_packed_backward", (V5, V5, GAIN[:1], OFF), "gain must be the forward's gain"),
    ("sparsestmax_rows_backward", (V5, V5, GAIN, ), "gain must be the forward's gain"),
    ("softmax_packed", (V5, OFF.reshape(3, 1)), "offsets must be a 1-D int64 tensor"),
    ("softmax_packed_backward", (V5[:4], V5, OFF), "grad must match out"),
    ("order_penalty_packed", (V5, OFF, PARENT[:3]), "parent must be shaped like q"),
    ("order_penalty_packed", (V5, OFF, PARENT.to(torch.int32)), "parent must be a 1-D int64 tensor"),
    ("order_penalty_packed", (V5.reshape(5, 1), OFF, PARENT), "q must be 1-D"),
    ("order_penalty_packed_backward", (torch.ones(3, dtype=torch.float64), V5, OFF, PARENT),
     r"grad must be a 1-D tensor with one entry per group \(2\)"),
]


@pytest.mark.parametrize("backend", [None, "triton"])
@pytest.mark.parametrize("op, args, message", BAD_ARGUMENTS, ids=[f"{o}-{i}" for i, (o, _, _) in
                                                                  enumerate(BAD_ARGUMENTS)])
def test_every_kernel_checks_its_arguments_alike(op, args, message, backend):
    """The C++ op (CPU kernel) and its Triton variant (through the check op, before any Triton code
    runs) reject the same bad metadata with the same ValueError, naming the op and the culprit."""
    name = op if backend is None else f"{op}_{backend}"
    with pytest.raises(ValueError, match=f"^{op}: .*{message}"):
        getattr(torch.ops.trilevelnas, name)(*args)
    with pytest.raises(ValueError, match=f"^{op}: .*{message}"):
        getattr(torch.ops.trilevelnas, f"{op}_check")(*args)


def test_the_check_ops_accept_what_the_kernels_take():
    for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):  # the Triton dtypes
        v = V5.to(dtype)
        torch.ops.trilevelnas.sparsestmax_packed_check(v, OFF, torch.ones(2), 0.0)
        torch.ops.trilevelnas.sparsestmax_rows_check(v.reshape(5, 1), None, 0.3)
        torch.ops.trilevelnas.order_penalty_packed_check(v, OFF, PARENT)
    torch.ops.trilevelnas.sparsestmax_packed_check(V5, OFF, None, 0.0)
    # Devices must agree (a meta tensor stands in for another device: with one among the
    # arguments the dispatcher would pick the fake kernel, so only the check op is called here).
    with pytest.raises(ValueError, match="^sparsestmax_packed: offsets is on meta but the values on cpu"):
        torch.ops.trilevelnas.sparsestmax_packed_check(V5, OFF.to("meta"), None, 0.0)
    with pytest.raises(ValueError, match="^sparsestmax_rows: radius is on meta but the values on cpu"):
        torch.ops.trilevelnas.sparsestmax_rows_check(V5.reshape(5, 1), torch.ones(5, device="meta"), 0.0)
    with pytest.raises(ValueError, match="^order_penalty_packed: parent is on meta"):
        torch.ops.trilevelnas.order_penalty_packed_check(V5, OFF, PARENT.to("meta"))
    with pytest.raises(ValueError, match="dtype Half; supported on cpu: float32, float64$"):
        torch.ops.trilevelnas.sparsestmax_packed(V5.half(), OFF, None, 0.1)


def test_the_cpu_kernels_check_values():
    v = V5
    with pytest.raises(ValueError, match="non-decreasing"):
        ops.sparsestmax_packed(v, torch.tensor([0, 3, 2, 5]), 0.1)
    with pytest.raises(ValueError, match="start at 0 and end at values.numel"):
        ops.softmax_packed(v, torch.tensor([0, 2, 4]))
    with pytest.raises(ValueError, match=r"radius\[1\] must be finite and >= 0"):
        ops.sparsestmax_packed(v, OFF, torch.tensor([0.1, -0.2]))
    with pytest.raises(ValueError, match="parent"):
        ops.sorted_sparsestmax_packed(v, OFF, torch.tensor([-1, 1, -1, 0, 3]), 0.1, 0.1)
    for bad_parent in ([-1, 1, -1, 0, 1], [-1, 0, -1, 0, 5], [-2, 0, -1, 0, 1]):  # self, later, < -1
        with pytest.raises(ValueError, match="parent"):
            ops.order_penalty_packed(v, OFF, torch.tensor(bad_parent))
        with pytest.raises(ValueError, match="parent"):
            torch.ops.trilevelnas.order_penalty_packed_backward(torch.ones(2, dtype=v.dtype), v, OFF,
                                                                 torch.tensor(bad_parent))
    with pytest.raises(ValueError, match="non-decreasing"):
        ops.order_penalty_packed(v, torch.tensor([0, 3, 2, 5]), PARENT)


def test_public_functions_pass_bad_arguments_to_the_ops_checks():
    v = torch.randn(5)
    with pytest.raises(ValueError, match="^sparsestmax_packed: offsets must be a 1-D int64"):
        ops.sparsestmax_packed(v, OFF.to(torch.int32), 0.1)
    with pytest.raises(ValueError, match="^sparsestmax_packed: values has dtype Half"):
        ops.sparsemax_packed(v.to(torch.float16), OFF)
    with pytest.raises(ValueError, match="^sparsestmax_packed: radius must be finite and >= 0"):
        ops.sparsestmax_packed(v, OFF, -0.1)
    with pytest.raises(ValueError, match="^order_penalty_packed: parent must be shaped like q"):
        ops.sorted_sparsestmax_packed(v, OFF, torch.tensor([-1, 0, -1]), 0.1, 0.1)
    with pytest.raises(ValueError, match="^order_penalty_packed: q has dtype Half"):
        ops.order_penalty_packed(v.to(torch.float16), OFF, PARENT)


def test_wrapper_arguments_raise_op_argument_error():
    """What no op sees is checked by the public functions: Python types, dim, broadcasting, lam."""
    v = torch.randn(5)
    with pytest.raises(OpArgumentError, match="offsets must be a torch.Tensor, got list"):
        ops.sparsestmax_packed(v, [0, 2, 5], 0.1)
    with pytest.raises(OpArgumentError, match="r must be a float or a tensor, got str"):
        ops.sparsestmax_packed(v, OFF, "0.1")
    with pytest.raises(OpArgumentError, match="r must be a float or hold one entry per group"):
        ops.sparsestmax_packed(v, OFF, torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(OpArgumentError, match="lam must be finite and >= 0"):
        ops.sorted_sparsestmax_packed(v, OFF, PARENT, 0.1, -0.1)
    with pytest.raises(OpArgumentError, match="lam must be finite and >= 0"):
        ops.sorted_sparsestmax_packed(v, OFF, PARENT, 0.1, math.inf)
    with pytest.raises(OpArgumentError, match=r"lam\[1\] must be finite and >= 0"):
        ops.sorted_sparsestmax_packed(v, OFF, PARENT, 0.1, torch.tensor([0.1, -1.0]))
    with pytest.raises(OpArgumentError, match="lam must be a float or hold one entry per group"):
        ops.sorted_sparsestmax_packed(v, OFF, PARENT, 0.1, torch.tensor([0.1, 0.1, 0.1]))
    with pytest.raises(OpArgumentError, match="lam is on meta"):
        ops.sorted_sparsestmax_packed(v, OFF, PARENT, 0.1, torch.tensor([0.1, 0.1], device="meta"))
    with pytest.raises(OpArgumentError, match="does not broadcast"):
        ops.sparsestmax(torch.randn(3, 4), torch.rand(4), dim=-1)
    with pytest.raises(OpArgumentError, match="dim 2 is out of range for a 2-D tensor"):
        ops.sparsemax(torch.randn(3, 4), dim=2)
    with pytest.raises(OpArgumentError, match="dim -1 is out of range for a 0-D tensor"):
        ops.sparsemax(torch.tensor(1.0))


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
    values[12:30] = torch.round(values[12:30])  # parent/child ties in the 37-node forest
    values, offsets = values.to(TRITON_DEVICE), offsets.to(TRITON_DEVICE)
    atol = 1e-12 if dtype == torch.float64 else 3e-6
    radius = (torch.rand(len(sizes), generator=gen, dtype=dtype) * 0.6).to(TRITON_DEVICE)
    parent = torch.cat([torch.tensor(random_forest(s, np.random.default_rng(s)), dtype=torch.int64)
                        for s in sizes]).to(TRITON_DEVICE)
    cases = [
        (lambda v: lib.sparsestmax_packed_triton(v, offsets, None, 0.35)[0],
         lambda v: ref.sparsestmax_packed(v, offsets, 0.35)),
        (lambda v: lib.sparsestmax_packed_triton(v, offsets, radius, 0.0)[0],
         lambda v: ref.sparsestmax_packed(v, offsets, radius)),
        (lambda v: lib.sparsestmax_packed_triton(v, offsets, None, 0.0)[0],
         lambda v: ref.sparsemax_packed(v, offsets)),
        (lambda v: lib.sparsestmax_packed_triton(v, offsets, None, 2.0)[0],
         lambda v: ref.sparsestmax_packed(v, offsets, 2.0)),
        (lambda v: lib.softmax_packed_triton(v, offsets), lambda v: ref.softmax_packed(v, offsets)),
        # the penalty on the raw values (ties from the grid below) and on a relaxation's output
        (lambda v: lib.order_penalty_packed_triton(v, offsets, parent),
         lambda v: ref.order_penalty_packed(v, offsets, parent)),
        (lambda v: lib.order_penalty_packed_triton(lib.sparsestmax_packed_triton(v, offsets, radius, 0.0)[0],
                                                   offsets, parent),
         lambda v: ref.order_penalty_packed(ref.sparsestmax_packed(v, offsets, radius), offsets, parent)),
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
        out, gain = lib.sparsestmax_rows_triton(x.to(TRITON_DEVICE), None, r)
        out_c, gain_c = lib.sparsestmax_rows(x, None, r)
        torch.testing.assert_close(out.cpu(), out_c, atol=1e-12, rtol=0)
        torch.testing.assert_close(gain.cpu(), gain_c, atol=1e-9, rtol=1e-9)
        g = torch.randn_like(x)
        d = lib.sparsestmax_rows_backward_triton(g.to(TRITON_DEVICE), out, gain)
        assert torch.isfinite(d).all()
        torch.testing.assert_close(d.cpu(), lib.sparsestmax_rows_backward(g, out_c, gain_c), atol=1e-9, rtol=1e-9)
    empty_out, empty_gain = lib.sparsestmax_rows_triton(torch.zeros(0, 4, device=TRITON_DEVICE), None, 0.2)
    assert empty_out.shape == (0, 4) and empty_gain.shape == (0,)


@needs_triton
def test_triton_gradcheck():
    lib = torch.ops.trilevelnas
    gen = torch.Generator().manual_seed(29)
    offsets = torch.tensor([0, 3, 3, 8], device=TRITON_DEVICE)
    v = spaced(8, gen).to(TRITON_DEVICE).requires_grad_(True)
    parent = torch.tensor([-1, 0, 0, -1, 0, 1, 1, -1], device=TRITON_DEVICE)
    assert torch.autograd.gradcheck(lambda x: lib.sparsestmax_packed_triton(x, offsets, None, 0.3)[0], (v,))
    assert torch.autograd.gradcheck(lambda x: lib.softmax_packed_triton(x, offsets), (v,))
    assert torch.autograd.gradcheck(lambda x: lib.order_penalty_packed_triton(x, offsets, parent), (v,))
    torch.library.opcheck(lib.order_penalty_packed_triton.default, (v, offsets, parent))
    torch.library.opcheck(lib.order_penalty_packed_backward_triton.default,
                          (torch.randn(3, dtype=torch.float64, generator=gen).to(TRITON_DEVICE), v.detach(),
                           offsets, parent))


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_triton_order_penalty_ties_and_degenerate_inputs(dtype):
    lib = torch.ops.trilevelnas
    for q, offsets, parent, penalty in ((TIE_Q, [0, 5], TIE_PARENT, [TIE_PENALTY]),
                                        (DEGENERATE_Q, DEGENERATE_OFFSETS, DEGENERATE_PARENT, DEGENERATE_PENALTY)):
        x = torch.tensor(q, dtype=dtype, device=TRITON_DEVICE, requires_grad=True)
        offsets = torch.tensor(offsets, device=TRITON_DEVICE)
        parent = torch.tensor(parent, device=TRITON_DEVICE)
        out = lib.order_penalty_packed_triton(x, offsets, parent)
        torch.testing.assert_close(out.cpu(), torch.tensor(penalty, dtype=dtype), atol=1e-7, rtol=0)
        upstream = torch.arange(1.0, len(penalty) + 1, dtype=dtype)
        (grad,) = torch.autograd.grad(out, x, upstream.to(TRITON_DEVICE))
        assert grad.cpu().tolist() == loop_penalty_grad(x.detach().cpu(), offsets.cpu(), parent.cpu(), upstream)
    out = lib.order_penalty_packed_triton(torch.zeros(0, dtype=dtype, device=TRITON_DEVICE),
                                          torch.tensor([0], device=TRITON_DEVICE),
                                          torch.zeros(0, dtype=torch.int64, device=TRITON_DEVICE))
    assert out.shape == (0,)


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
        if dtype in (torch.float32, torch.float64):  # fp16/bf16: test_cuda_order_penalty_is_exact_on_a_grid
            cases += [
                (lambda v: ops.order_penalty_packed(v, offsets, parent),
                 lambda v: ref.order_penalty_packed(v, offsets, parent)),
                (lambda v: ops.order_penalty_packed(ops.softmax_packed(v, offsets), offsets, parent),
                 lambda v: ref.order_penalty_packed(ref.softmax_packed(v, offsets), offsets, parent)),
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
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_cuda_order_penalty_is_exact_on_a_grid(dtype):
    """Weights on a grid of 1/16 (exact in every dtype, with parent/child ties) and integer upstream
    gradients: the backward is exact in every dtype, the forward exact up to the output's rounding."""
    previous = ops.gpu_backend()
    ops.set_gpu_backend("cuda")
    try:
        rng = np.random.default_rng(59)
        sizes = [4] * 25 + [83, 0, 1, 2, 33, 100, 0]
        offsets = torch.tensor([0] + list(itertools.accumulate(sizes)))
        parent = packed_forests(sizes, rng)
        q = torch.tensor(np.round(rng.normal(size=int(offsets[-1])) * 4) / 4, dtype=torch.float64) / 4
        upstream = torch.tensor(rng.integers(-2, 3, size=len(sizes)), dtype=torch.float64)
        want = torch.tensor(loop_penalty(q, offsets, parent), dtype=torch.float64)
        want_grad = torch.tensor(loop_penalty_grad(q, offsets, parent, upstream), dtype=torch.float64)
        x = q.to(dtype).cuda().requires_grad_(True)
        out = ops.order_penalty_packed(x, offsets.cuda(), parent.cuda())
        assert out.dtype == dtype and out.shape == (len(sizes),)
        torch.testing.assert_close(out.double().cpu(), want, atol=0, rtol=2 ** -7)  # bf16 keeps 8 bits
        (grad,) = torch.autograd.grad(out, x, upstream.to(dtype).cuda())
        assert torch.equal(grad.double().cpu(), want_grad)
    finally:
        ops.set_gpu_backend(previous)


def _cuda_kernel_names(fn):
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


@needs_cuda
def test_cuda_search_call_launch_counts():
    """On the search's groups: sparsestmax and the ordering penalty are one launch per direction each;
    sorted sparsestmax composes them with the λ scaling (forward: sparsestmax, penalty, scale;
    backward: scale, penalty, the sum of q's two gradients, sparsestmax)."""
    previous = ops.gpu_backend()
    ops.set_gpu_backend("cuda")
    try:
        sizes = [4] * 25 + [83]
        offsets = torch.tensor([0] + list(itertools.accumulate(sizes)), device="cuda")
        parent = torch.tensor([-1] * 100 + [-1] + [(i - 1) // 2 for i in range(1, 83)], device="cuda")
        lam = torch.tensor([0.0] * 25 + [0.01], device="cuda")
        radius = torch.full((26,), 0.3, device="cuda")
        v = torch.randn(183, device="cuda", requires_grad=True)
        for fn, fwd_max, bwd_max in (
                (lambda x: (ops.sparsestmax_packed(x, offsets, radius),), 1, 1),
                (lambda x: (ops.order_penalty_packed(x, offsets, parent),), 1, 1),
                (lambda x: ops.sorted_sparsestmax_packed(x, offsets, parent, radius, lam), 3, 4)):
            outs = fn(v)
            grads = [torch.randn_like(o) for o in outs]
            fwd = _cuda_kernel_names(lambda: fn(v))
            bwd = _cuda_kernel_names(lambda: torch.autograd.grad(outs, v, grads))
            assert len(fwd) <= fwd_max, fwd
            assert len(bwd) <= bwd_max, bwd
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
