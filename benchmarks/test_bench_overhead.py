"""Supernet overhead: what the supernet's machinery costs beyond the network it computes.

Groups (``extra_info["provider"]``):

- ``supernet-overhead-onehot``: one training step (L1 loss, backward, Adam on the network weights)
  of the tree supernet at the paper's search size — backbone B, C = 64, 5 RiR + 2 convs, sparse
  execution, batch 16 of 32×32 LR patches — at radius 1 (one-hot α and β) with argmax widths
  (``supernet-rho1``), against the same step of the derived network it extracts
  (``derived``: :meth:`Supernet.extract`, the same function to float rounding). The ratio
  supernet / derived is the overhead; the floor is 1.0. ``supernet-rho0.9``: the same supernet at
  ρ = 0.9 (on a CPU a few more candidates and nodes run; the GPU target covers ρ ≥ 0.9).
  The architecture logits are N(0, 1) (a supernet late in its search) with the deepest node's β
  raised by 6, so that the derived path is the full one (5 RiR + 2 convs): the most cells, the
  most per-cell overhead.
- ``supernet-overhead-onehot-paired``: the same two steps interleaved (``paired``): each round
  runs both back to back, alternating which goes first; ``extra_info`` holds each step's median
  and their ratio. Run one after the other, the two rows above drift apart on a shared machine
  (1.08× to 1.39× in three runs on a 2-core machine); interleaved they do not, so the sweep's
  one-hot target reads this ratio.
- ``supernet-overhead-memory``: one paper-size step (as above, no optimiser) with activation
  recomputation (``checkpoint=True``, the setting under which the dense step fits in a CPU's
  memory) at ρ ∈ {0, 0.5, 0.9, 1}: ρ = 0 from the initial, near-uniform logits (every one of the 83
  tree nodes and every candidate runs: the dense worst case), the others from N(0, 1) logits. One
  round each; ``peak_memory_bytes`` is the point.

The supernet-vs-AGD-baseline comparison (fixed path, two sizes) is the ``supernet-step-fixed*``
groups of ``test_bench_supernet``; ``sweep.py`` reports both under the overhead targets.

With ``--benchmark-disable`` (CI smoke) or ``TNAS_BENCH_QUICK=1``: 2 RiR + 1 conv, C = 16, batch 2
of 16×16.
"""
from __future__ import annotations

import statistics
import time

import pytest
import torch
import torch.nn.functional as F

from sweep import peak_memory_bytes, time_with_peak
from trilevelnas.supernet import Supernet, SupernetConfig, enumerate_tree

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
ARCH_SEED = 11
STEP_SEED = 4321


def sizes(is_small: bool) -> dict:
    if is_small:
        return dict(channels=16, n_rir=2, n_up=1, batch=2, lr=16)
    return dict(channels=64, n_rir=5, n_up=2, batch=16, lr=32)


def make_supernet(s: dict, rho: float, arch_std: float | None, checkpoint: bool = False,
                  deep: bool = False) -> Supernet:
    """Tree supernet (backbone B, ×4, sparse execution) at radius ``rho``; logits N(0, std²), or the
    initialisation when ``arch_std`` is None; ``deep``: β of the deepest node (all cells, then
    all convs) raised by 6."""
    torch.manual_seed(ARCH_SEED)
    net = Supernet(SupernetConfig(backbone="B", channels=s["channels"], n_rir=s["n_rir"],
                                  n_up=s["n_up"], scale=4, checkpoint=checkpoint))
    if arch_std is not None:
        with torch.no_grad():
            for p in net.arch_parameters().values():
                p.normal_(0.0, arch_std)
    if deep:
        deepest = enumerate_tree(s["n_rir"], s["n_up"]).index((0,) * s["n_rir"] + (1,) * s["n_up"])
        with torch.no_grad():
            net.beta[deepest] += 6.0
    net.set_radius(rho)
    net.set_width_mode("argmax")
    return net.to(DEVICE).train()


def batch(s: dict):
    g = torch.Generator().manual_seed(2)
    x = torch.rand(s["batch"], 3, s["lr"], s["lr"], generator=g)
    y = torch.rand(s["batch"], 3, 4 * s["lr"], 4 * s["lr"], generator=g)
    return x.to(DEVICE), y.to(DEVICE)


def make_step(model, s: dict, optimise: bool = True):
    """forward + L1 + backward (+ Adam on the network weights); returns the loss."""
    x, y = batch(s)
    params = (model.weight_parameters() if isinstance(model, Supernet)
              else list(model.parameters()))
    opt = torch.optim.Adam(params, lr=1e-4) if optimise else None

    def step():
        torch.manual_seed(STEP_SEED)
        model.zero_grad(set_to_none=True)
        loss = F.l1_loss(model(x), y)
        loss.backward()
        if opt is not None:
            opt.step()
        if CUDA:
            torch.cuda.synchronize()
        return loss

    return step


def live_nodes(net: Supernet) -> int:
    """Tree nodes the step computes (:meth:`TreeTopology.computed_nodes`)."""
    with torch.no_grad():
        ctx = net.step_context()
    return int(net.topology.computed_nodes(ctx.net_host).sum())


ONEHOT = [("supernet", 1.0), ("supernet", 0.9), ("derived", 1.0)]


@pytest.mark.parametrize("kind,rho", ONEHOT, ids=["supernet-rho1", "supernet-rho0.9", "derived"])
def test_onehot_step(benchmark, quick, kind, rho):
    s = sizes(quick)
    benchmark.group = "supernet-overhead-onehot"
    net = make_supernet(s, rho, 1.0, deep=True)
    arch = net.derive()
    assert list(arch.path) == [0] * s["n_rir"] + [1] * s["n_up"]
    model = net if kind == "supernet" else net.extract(arch).train()
    info = dict(provider=f"supernet-rho{rho:g}" if kind == "supernet" else "derived",
                rho=rho, path=list(arch.path), live_nodes=live_nodes(net) if kind == "supernet" else None,
                **s)
    benchmark.extra_info.update(info, device=DEVICE)
    time_with_peak(benchmark, make_step(model, s), 5)


def test_onehot_paired(benchmark, quick):
    """The one-hot overhead ratio measured interleaved: each round runs the ρ = 1 supernet's step
    and the derived network's step back to back (alternating which goes first), so drift in a
    shared machine's speed hits both alike. The row times the pair; ``extra_info`` holds the
    median of each step and their ratio, which the sweep's one-hot target reads."""
    s = sizes(quick)
    benchmark.group = "supernet-overhead-onehot-paired"
    net = make_supernet(s, 1.0, 1.0, deep=True)
    steps = {"supernet": make_step(net, s), "derived": make_step(net.extract(net.derive()).train(), s)}
    times = {k: [] for k in steps}
    order = list(steps)

    def pair():
        for k in order:
            t0 = time.perf_counter()
            steps[k]()
            if DEVICE != "cpu":
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t0)
        order.reverse()

    benchmark.extra_info.update(provider="paired", rho=1.0, device=DEVICE, **s)
    time_with_peak(benchmark, pair, 8, warmup_rounds=1)
    if not benchmark.disabled:
        rounds = len(benchmark.stats.stats.data)  # the timed rounds are the last calls
        med = {k: statistics.median(v[-rounds:]) for k, v in times.items()}
        benchmark.extra_info.update(supernet_s=med["supernet"], derived_s=med["derived"],
                                    ratio=med["supernet"] / med["derived"])


def test_onehot_supernet_equals_derived():
    """The two providers of the one-hot group compute the same function (eval mode, ρ = 1)."""
    s = sizes(True)
    net = make_supernet(s, 1.0, 1.0, deep=True).eval()
    model = net.extract(net.derive()).eval()
    x, _ = batch(s)
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=1e-5, atol=1e-5)


MEMORY_RHOS = (0.0, 0.5, 0.9, 1.0)


@pytest.mark.parametrize("rho", MEMORY_RHOS, ids=[f"rho{r}" for r in MEMORY_RHOS])
def test_paper_step_memory(benchmark, quick, rho):
    s = sizes(quick)
    benchmark.group = "supernet-overhead-memory"
    net = make_supernet(s, rho, None if rho == 0.0 else 1.0, checkpoint=True)
    net.set_width_mode(None)  # Gumbel widths, as in the search
    info = dict(provider=f"checkpoint-rho{rho}", rho=rho, live_nodes=live_nodes(net),
                logits="init" if rho == 0.0 else "N(0,1)", **s)
    step = make_step(net, s, optimise=False)
    benchmark.extra_info.update(info, device=DEVICE)
    if benchmark.disabled:
        benchmark(step)
        return
    peak = {}

    def once():
        peak["bytes"] = peak_memory_bytes(step)

    benchmark.pedantic(once, rounds=1, iterations=1, warmup_rounds=0)
    if peak.get("bytes") is not None:
        benchmark.extra_info["peak_memory_bytes"] = peak["bytes"]
