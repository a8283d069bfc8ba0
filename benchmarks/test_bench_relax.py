"""Relaxation ops: fused kernels vs the pure-torch reference vs entmax's sparsemax.

Benchmark id: ``test_relax[<op>-<provider>-<shape>-<direction>]``

- op: ``sparsestmax`` (radius 0.5 × circumradius per group) or ``sparsemax`` (r = 0);
- provider: ``fused`` (``trilevelnas.ops``: C++ on CPU, CUDA kernels on a GPU), ``triton`` (GPU
  only), ``reference`` (``trilevelnas.ops.reference``), ``entmax`` (``entmax.sparsemax``, r = 0 only);
- shape: ``search`` = the search step's groups: 25 cells × 4 candidates plus the 83-node tree of
  paths (a forest; for ``sparsestmax``: sorted sparsestmax, i.e. sparsestmax of every group plus the
  per-group ordering penalty with λ = 0 for the cells and 0.01 for the tree, both outputs), packed in
  one tensor and one call; or ``<rows>x<K>`` dense batches (1Kx4 … 64Kx64 on CPU; 1Mx16 and 256Kx64
  on a GPU only);
- direction: ``fwd`` (no autograd), ``bwd`` (backward of a fresh forward; the forward is done in
  the round's setup; with random upstream gradients for every output), ``fwdbwd`` (both).

``extra_info`` holds op/provider/shape/direction/elements for the sweep script. float32.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch

import trilevelnas.ops as ops
from trilevelnas.ops import reference as ref

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
ROW_SHAPES = ["1Kx4", "4Kx16", "16Kx32", "64Kx64"] + (["1Mx16", "256Kx64"] if CUDA else [])
PROVIDERS = ["fused", "reference", "entmax"] + (["triton"] if CUDA else [])
LAMBDA = 0.01
RHO = 0.5

try:
    import entmax
except ImportError:  # pragma: no cover - entmax is a dev requirement
    entmax = None


def tree_parents(n_rir: int = 5, n_up: int = 2) -> list[int]:
    """Parent indices of the tree of paths: every sequence of <= n_rir 0s and <= n_up 1s, in BFS order."""
    nodes = [()]
    index = {(): 0}
    parents = [-1]
    for seq in nodes:
        for op in (0, 1):
            child = seq + (op,)
            if child.count(0) <= n_rir and child.count(1) <= n_up:
                index[child] = len(nodes)
                nodes.append(child)
                parents.append(index[seq])
    return parents


def parse_rows(shape: str) -> tuple[int, int]:
    rows, k = shape.split("x")
    mult = {"K": 1024, "M": 1024 * 1024}
    return int(rows[:-1]) * mult[rows[-1]], int(k)


class Case:
    """Inputs and the callable of one (op, provider, shape)."""

    def __init__(self, op: str, provider: str, shape: str):
        gen = torch.Generator().manual_seed(0)
        if shape == "search":
            parents = [-1] * 100 + tree_parents()
            sizes = [4] * 25 + [len(parents) - 100]
            self.offsets = torch.tensor([0] + list(itertools.accumulate(sizes)), device=DEVICE)
            self.parent = torch.tensor(parents, device=DEVICE)
            self.x = torch.randn(len(parents), generator=gen).to(DEVICE)
            self.radius = torch.tensor([RHO * math.sqrt(1 - 1 / s) for s in sizes], device=DEVICE)
            self.lam = torch.tensor([0.0] * 25 + [LAMBDA], device=DEVICE)
            self.fn = self._search(op, provider)
        else:
            rows, k = parse_rows(shape)
            self.x = torch.randn(rows, k, generator=gen).to(DEVICE)
            self.fn = self._rows(op, provider, RHO * math.sqrt(1 - 1 / k))

    def _search(self, op, provider):
        """The callable of the search shape: values -> output tensor, or a tuple (q, penalty)."""
        o, p, lam = self.offsets, self.parent, self.lam
        r = self.radius if op == "sparsestmax" else 0.0
        if provider in ("fused", "triton"):
            if op == "sparsemax":
                return lambda v: ops.sparsemax_packed(v, o)
            return lambda v: ops.sorted_sparsestmax_packed(v, o, p, r, lam)
        if provider == "reference":
            if op == "sparsemax":
                return lambda v: ref.sparsemax_packed(v, o)
            return lambda v: ref.sorted_sparsestmax_packed(v, o, p, r, lam)
        # entmax: the two group sizes as two dense calls
        return lambda v: torch.cat([entmax.sparsemax(v[:100].view(25, 4), dim=-1).reshape(-1),
                                    entmax.sparsemax(v[100:], dim=-1)])

    def _rows(self, op, provider, r):
        r = r if op == "sparsestmax" else 0.0
        if provider in ("fused", "triton"):
            return lambda v: ops.sparsestmax(v, r)
        if provider == "reference":
            return lambda v: ref.sparsestmax(v, r)
        return lambda v: entmax.sparsemax(v, dim=-1)


@pytest.mark.parametrize("direction", ["fwd", "bwd", "fwdbwd"])
@pytest.mark.parametrize("shape", ["search"] + ROW_SHAPES)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("op", ["sparsestmax", "sparsemax"])
def test_relax(benchmark, quick, sync, op, provider, shape, direction):
    if provider == "entmax" and (op != "sparsemax" or entmax is None):
        pytest.skip("entmax provides sparsemax (r = 0) only")
    if shape != "search" and quick and math.prod(parse_rows(shape)) > 70_000:
        pytest.skip("large shape skipped in quick mode")
    case = Case(op, provider, shape)
    benchmark.group = f"relax-{op}-{shape}-{direction}"
    benchmark.extra_info.update(op=op, provider=provider, shape=shape, direction=direction,
                                elements=case.x.numel(), device=DEVICE)
    previous = ops.gpu_backend()
    if CUDA:
        ops.set_gpu_backend("triton" if provider == "triton" else "cuda")
    try:
        x = case.x.clone().requires_grad_(direction != "fwd")

        def outputs(v):
            out = case.fn(v)
            return out if isinstance(out, tuple) else (out,)

        with torch.no_grad():
            grad = tuple(torch.randn_like(o) for o in outputs(x))
        if direction == "fwd":
            def run():
                with torch.no_grad():
                    case.fn(x)
                sync()

            benchmark(run)
        elif direction == "fwdbwd":
            def run():
                torch.autograd.grad(outputs(x), x, grad)
                sync()

            benchmark(run)
        else:
            def setup():
                out = outputs(x)
                sync()
                return (out,), {}

            def run(out):
                torch.autograd.grad(out, x, grad)
                sync()

            rounds = 1 if quick else (50 if case.x.numel() <= 100_000 else 10)
            benchmark.pedantic(run, setup=setup, rounds=rounds, iterations=1)
    finally:
        if CUDA:
            ops.set_gpu_backend(previous)
