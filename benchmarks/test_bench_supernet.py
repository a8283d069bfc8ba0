"""Supernet search step: forward + backward + optimizer step (weights and architecture), backbone
B, C = 64, ×4.

Providers (one pytest-benchmark group per topology):

- ``ours-<topology>-<sparse|dense>-rho<ρ>``: :class:`trilevelnas.supernet.Supernet` with the paper's
  relaxations, sparse or dense execution, sparsestmax radius ρ ∈ {0, 0.5, 0.9, 1.0};
  topologies tree (paper), trellis (Auto-DeepLab) and fixed path;
- ``agd-<tree|fixed>``: :class:`agd_baseline.AGDSupernet` (softmax over all candidates, every
  candidate and node computed one by one, weights sliced with ``F.conv2d`` and zero-padded),
  holding the same weights as the tree supernet and sampling the same widths.

Sizes: on a GPU a batch of 16 LR 32×32 patches; on a CPU one LR 8×8 patch (the full 83-node tree at
C = 64 already takes seconds per step there). With ``--benchmark-disable`` (CI smoke) or
``TNAS_BENCH_QUICK=1`` the supernet is cut to 2 RiR + 1 conv, keeping C = 64.

Every round reseeds the generator, so each round (and each provider) samples the same widths; the
architecture logits are the supernet's (seeded) initialisation, restored before every round, so
ρ alone decides the sparsity.
The fraction of candidates and output nodes that run is stored in ``extra_info``.

Not measured: CUDA graphs / ``torch.compile`` of the step. The step reads the sampled widths and
the support of the relaxed weights on the host (they become slice sizes and skipped work), so the
graph changes from step to step by design; derived models are compiled in ``test_bench_models``.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from agd_baseline import AGDSupernet
from trilevelnas.supernet import Supernet, SupernetConfig

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
RHOS = (0.0, 0.5, 0.9, 1.0)
STEP_SEED = 1234
ARCH_SEED = 7


def sizes(is_small: bool) -> dict:
    depth = dict(n_rir=2, n_up=1) if is_small else dict(n_rir=5, n_up=2)
    batch, lr = (16, 32) if CUDA and not is_small else (1, 8)
    return dict(depth, batch=batch, lr=lr, channels=64, scale=4)


def make_supernet(topology: str, sparse: bool, rho: float, s: dict) -> Supernet:
    torch.manual_seed(ARCH_SEED)
    net = Supernet(SupernetConfig(backbone="B", topology=topology, channels=s["channels"],
                                  n_rir=s["n_rir"], n_up=s["n_up"], scale=s["scale"],
                                  sparse_execution=sparse))
    net.set_radius(rho)
    return net.to(DEVICE).train()


def make_agd(topology: str, s: dict) -> AGDSupernet:
    """The baseline with the tree supernet's weights and architecture logits (so the same widths)."""
    ours = make_supernet("tree" if topology == "tree" else "fixed", False, 0.0, s)
    agd = AGDSupernet(s["channels"], s["n_rir"], s["n_up"], s["scale"], topology=topology)
    agd.load_state_dict(ours.state_dict())
    return agd.to(DEVICE).train()


def make_step(net, s: dict):
    """One search step: L1 loss, backward, Adam on the weights and on the architecture. The
    architecture logits are restored before each step (a copy of a few hundred numbers), so every
    round runs the same support and widths."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(s["batch"], 3, s["lr"], s["lr"], generator=g).to(DEVICE)
    y = torch.rand(s["batch"], 3, s["lr"] * s["scale"], s["lr"] * s["scale"], generator=g).to(DEVICE)
    wopt = torch.optim.Adam(net.weight_parameters(), lr=1e-4)
    arch = list(net.arch_parameters().values())
    aopt = torch.optim.Adam(arch, lr=3e-4)
    start = [p.detach().clone() for p in arch]

    def step():
        torch.manual_seed(STEP_SEED)
        with torch.no_grad():
            for p, p0 in zip(arch, start):
                p.copy_(p0)
        wopt.zero_grad(set_to_none=True)
        aopt.zero_grad(set_to_none=True)
        loss = F.l1_loss(net(x), y)
        loss.backward()
        wopt.step()
        aopt.step()
        if CUDA:
            torch.cuda.synchronize()
        return loss

    return step


def live_fractions(net: Supernet) -> dict:
    """Fraction of (cell, slot, candidate) triples and of network-level weights that are non-zero
    in the step the benchmark runs (same seed)."""
    torch.manual_seed(STEP_SEED)
    with torch.no_grad():
        ctx = net.step_context()
    n = sum(len(slot) for cell in ctx.live_ops for slot in cell)
    total = 4 * sum(len(cell) for cell in ctx.live_ops)
    out = {"live_candidates": n / max(total, 1)}
    if ctx.net_host is not None:
        out["nonzero_net_weights"] = float((ctx.net_host > 0).mean())
    return out


def peak_case(provider: str, topology: str, execution: str = "dense", rho: float = 0.0,
              is_small: bool = False):
    """Entry point for ``sweep.cpu_peak_memory``: the warmed-up step of one case."""
    s = sizes(is_small)
    net = (make_agd(topology, s) if provider == "agd"
           else make_supernet(topology, execution == "sparse", rho, s))
    step = make_step(net, s)
    step()
    return step


def run(benchmark, step, info: dict, peak_args: dict, quick: bool) -> None:
    """Warm up, time ``step`` (median over rounds in the report), record peak memory: CUDA
    ``max_memory_allocated`` over one step beyond what was allocated before it; CPU the growth of
    ``ru_maxrss`` over one step in a fresh subprocess (``sweep.cpu_peak_memory``)."""
    benchmark.extra_info.update(info, device=DEVICE)
    if benchmark.disabled:
        benchmark(step)
        return
    step()
    if CUDA:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        benchmark.extra_info["peak_memory_bytes"] = torch.cuda.max_memory_allocated() - base
    elif os.environ.get("TNAS_BENCH_PEAK", "1") == "1":
        from sweep import cpu_peak_memory
        benchmark.extra_info["peak_memory_bytes"] = cpu_peak_memory(
            "test_bench_supernet", "peak_case", dict(peak_args, is_small=quick))
    rounds = int(os.environ.get("TNAS_BENCH_ROUNDS", "3"))
    benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=0)


CASES = ([("tree", ex, rho) for ex in ("sparse", "dense") for rho in RHOS]
         + [("trellis", ex, rho) for ex in ("sparse", "dense") for rho in RHOS]
         + [("fixed", "sparse", 0.0), ("fixed", "sparse", 1.0), ("fixed", "dense", 0.0)])


@pytest.mark.parametrize("topology,execution,rho", CASES,
                         ids=[f"ours-{t}-{e}-rho{r}" for t, e, r in CASES])
def test_supernet_step(benchmark, quick, topology, execution, rho):
    s = sizes(quick)
    benchmark.group = f"supernet-step-{topology}"
    net = make_supernet(topology, execution == "sparse", rho, s)
    info = dict(provider=f"ours-{execution}-rho{rho}", topology=topology, execution=execution,
                rho=rho, **{k: s[k] for k in ("batch", "lr", "channels", "n_rir", "n_up")},
                **live_fractions(net))
    run(benchmark, make_step(net, s), info,
        dict(provider="ours", topology=topology, execution=execution, rho=rho), quick)


@pytest.mark.parametrize("topology", ["tree", "fixed"], ids=["agd-tree", "agd-fixed"])
def test_agd_baseline_step(benchmark, quick, topology):
    s = sizes(quick)
    benchmark.group = f"supernet-step-{topology}"
    agd = make_agd(topology, s)
    info = dict(provider="agd-baseline", topology=topology, execution="dense-softmax", rho=None,
                **{k: s[k] for k in ("batch", "lr", "channels", "n_rir", "n_up")})
    run(benchmark, make_step(agd, s), info, dict(provider="agd", topology=topology), quick)


@pytest.mark.parametrize("topology", ["tree", "fixed"])
def test_agd_baseline_equals_dense_softmax_supernet(topology):
    """The baseline is the same search space: with softmax relaxations, dense execution, the same
    weights and the same seed it gives the Supernet's output and gradients (small config)."""
    cfg = SupernetConfig(backbone="B", topology=topology, channels=16, n_rir=2, n_up=1, scale=2,
                         sparse_execution=False, relaxations={"op": "softmax", "node": "softmax"})
    torch.manual_seed(3)
    ours = Supernet(cfg).train()
    with torch.no_grad():
        for p in ours.arch_parameters().values():
            p.normal_()
    agd = AGDSupernet(16, 2, 1, 2, topology=topology).train()
    agd.load_state_dict(ours.state_dict())
    x = torch.rand(2, 3, 6, 6)
    torch.manual_seed(11)
    y_ours = ours(x)
    torch.manual_seed(11)
    y_agd = agd(x)
    torch.testing.assert_close(y_agd, y_ours, rtol=1e-5, atol=1e-6)
    names = [n for n, _ in ours.named_parameters()]
    g_ours = torch.autograd.grad(y_ours.square().sum(), list(ours.parameters()), allow_unused=True)
    g_agd = torch.autograd.grad(y_agd.square().sum(), list(agd.parameters()), allow_unused=True)
    for name, a, b in zip(names, g_agd, g_ours):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
