"""Supernet search step: forward + backward + optimizer step (weights and architecture), backbone
B, C = 64, ×4.

Groups ``supernet-step-<tree|trellis|fixed>``; providers (``extra_info["provider"]``):

- ``ours-<sparse|dense>-rho<ρ>`` (test ids ``ours-<topology>-<execution>-rho<ρ>``):
  :class:`trilevelnas.supernet.Supernet` with the paper's relaxations (sparsestmax for α and the
  trellis edges, sorted sparsestmax for the tree's nodes), sparse or dense execution, radius
  ρ ∈ {0, 0.5, 0.9, 1.0} (fixed path: ρ ∈ {0, 1}); ``-deep`` (tree, sparse, ρ ∈ {0.9, 1}): the
  node weights biased to the deepest node (see :func:`make_supernet`) — from the initial logits
  the order penalty makes the tree's support collapse onto the root at ρ = 1; group
  ``supernet-step-fixed-lr32``: the fixed path with 32×32 LR patches also on a CPU, where the
  convolutions rather than per-op overheads dominate;
- ``agd-baseline`` (tree and fixed path): :class:`agd_baseline.AGDSupernet` — softmax over all
  candidates, every candidate and node computed one by one, weights sliced with ``F.conv2d`` and
  zero-padded — holding the same weights as the supernet and sampling the same widths.

Sizes: on a GPU a batch of 16 LR 32×32 patches; on a CPU one LR 8×8 patch (the full 83-node tree
at C = 64 takes seconds per step there). With ``--benchmark-disable`` (CI smoke) or
``TNAS_BENCH_QUICK=1`` the supernet is cut to 2 RiR + 1 conv, keeping C = 64.

Every round reseeds the generator, so each round (and each provider) samples the same widths; the
architecture logits are the supernet's (seeded) initialisation, restored before every round, so ρ
alone decides the sparsity. ``extra_info``: the fraction of candidates that run and of non-zero
network-level weights, the step's FLOPs (the work actually done, for the hardware floor) and the
peak memory.

Not measured: CUDA graphs / ``torch.compile`` of the step. The step reads the sampled widths and
the support of the relaxed weights on the host (they become slice sizes and skipped work), so the
graph changes from step to step by design; derived models are compiled in ``test_bench_models``.
"""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from agd_baseline import AGDSupernet
from trilevelnas.supernet import Supernet, SupernetConfig, enumerate_tree
from sweep import time_with_peak

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
RHOS = (0.0, 0.5, 0.9, 1.0)
STEP_SEED = 1234
ARCH_SEED = 7


def sizes(is_small: bool) -> dict:
    depth = dict(n_rir=2, n_up=1) if is_small else dict(n_rir=5, n_up=2)
    batch, lr = (16, 32) if CUDA and not is_small else (1, 8)
    return dict(depth, batch=batch, lr=lr, channels=64, scale=4)


def make_supernet(topology: str, sparse: bool, rho: float, s: dict, deep: bool = False) -> Supernet:
    """The supernet at its seeded initialisation; ``deep`` (tree only): β of the deepest node (all
    cells, then all convs) raised by 1, so the sparse support ends on the longest path — what a
    search that settled on a deep path runs, rather than the root-ward collapse of the initial
    logits under the order penalty."""
    torch.manual_seed(ARCH_SEED)
    net = Supernet(SupernetConfig(backbone="B", topology=topology, channels=s["channels"],
                                  n_rir=s["n_rir"], n_up=s["n_up"], scale=s["scale"],
                                  sparse_execution=sparse))
    if deep:
        deepest = enumerate_tree(s["n_rir"], s["n_up"]).index((0,) * s["n_rir"] + (1,) * s["n_up"])
        with torch.no_grad():
            net.arch_parameters()["beta"][deepest] += 1.0
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


def _conv_macs(n: int, out_hw, w_shape) -> int:
    """Multiply-accumulates of a convolution: every output pixel of every output channel reads
    ``w_shape[1:]`` (in/groups × k × k) inputs."""
    return n * out_hw[0] * out_hw[1] * w_shape[0] * w_shape[1] * w_shape[2] * w_shape[3]


def _superconv_fwd(x_shape, w_shape, bias, in_width, out_width, stride, padding, groups, *args,
                   out_shape=None, **kwargs):
    per_output = 1 if groups > 1 else in_width
    return 2 * _conv_macs(x_shape[0], out_shape[0][2:], (out_width, per_output, *w_shape[2:]))


def _superconv_bwd(grad_shape, x_shape, w_shape, conv_out, in_width, out_width, stride, padding,
                   groups, activation, slope, scale, factor, output_mask, out_shape=None, **kwargs):
    per_output = 1 if groups > 1 else in_width
    n_grads = int(bool(output_mask[0])) + int(bool(output_mask[1]))
    return 2 * n_grads * _conv_macs(x_shape[0], grad_shape[2:], (out_width, per_output, *w_shape[2:]))


def _conv_bwd(grad_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed,
              output_padding, groups, output_mask, out_shape=None, **kwargs):
    # torch's own formula ignores groups for the weight gradient (a depthwise conv's counts
    # come out ×channels); the step only runs non-transposed convs.
    if transposed:
        raise ValueError("transposed convolution: no FLOP formula here")
    n_grads = int(bool(output_mask[0])) + int(bool(output_mask[1]))
    return 2 * n_grads * _conv_macs(x_shape[0], grad_shape[2:], w_shape)


def step_flops(step) -> int:
    """FLOPs of one step (convolutions and matmuls, forward and backward, 2 per multiply-add):
    the work actually done, so sparse execution counts only the candidates and nodes it runs.
    Counted with ``FlopCounterMode`` plus formulas for the superconv ops and a grouped-conv-aware
    convolution backward."""
    mapping = {torch.ops.trilevelnas.superconv2d: _superconv_fwd,
               torch.ops.trilevelnas.superconv2d_backward: _superconv_bwd,
               torch.ops.aten.convolution_backward: _conv_bwd}
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with counter:
        step()
    return int(counter.get_total_flops())


def run(benchmark, step, info: dict) -> None:
    """Warm up, time ``step`` (median over rounds in the report), record peak memory: CUDA
    ``max_memory_allocated`` over one step beyond what was allocated before it; CPU the resident-set
    high-water mark over one step beyond the resident set before it (``sweep.cpu_peak_memory``)."""
    benchmark.extra_info.update(info, device=DEVICE)
    if not benchmark.disabled:
        benchmark.extra_info["flops"] = step_flops(step)
    time_with_peak(benchmark, step, 3, warmup_rounds=0)


CASES = ([("tree", ex, rho, "") for ex in ("sparse", "dense") for rho in RHOS]
         + [("tree", "sparse", rho, "-deep") for rho in (0.9, 1.0)]
         + [("trellis", ex, rho, "") for ex in ("sparse", "dense") for rho in RHOS]
         + [("fixed", ex, rho, "") for ex in ("sparse", "dense") for rho in (0.0, 1.0)]
         + [("fixed", "dense", 0.0, "-lr32"), ("fixed", "sparse", 1.0, "-lr32")])
LARGE_LR = 32


def group_of(topology: str, variant: str) -> str:
    return f"supernet-step-{topology}" + ("-lr32" if variant == "-lr32" else "")


@pytest.mark.parametrize("topology,execution,rho,variant", CASES,
                         ids=[f"ours-{t}-{e}-rho{r}{v}" for t, e, r, v in CASES])
def test_supernet_step(benchmark, quick, topology, execution, rho, variant):
    s = sizes(quick)
    if variant == "-lr32" and not quick:
        s["lr"] = max(s["lr"], LARGE_LR)
    benchmark.group = group_of(topology, variant)
    net = make_supernet(topology, execution == "sparse", rho, s, deep=variant == "-deep")
    info = dict(provider=f"ours-{execution}-rho{rho}{'-deep' if variant == '-deep' else ''}",
                topology=topology,
                execution=execution, rho=rho, **{k: s[k] for k in ("batch", "lr", "channels", "n_rir", "n_up")},
                **live_fractions(net))
    run(benchmark, make_step(net, s), info)


@pytest.mark.parametrize("topology,variant", [("tree", ""), ("fixed", ""), ("fixed", "-lr32")],
                         ids=["agd-tree", "agd-fixed", "agd-fixed-lr32"])
def test_agd_baseline_step(benchmark, quick, topology, variant):
    s = sizes(quick)
    if variant == "-lr32" and not quick:
        s["lr"] = max(s["lr"], LARGE_LR)
    benchmark.group = group_of(topology, variant)
    agd = make_agd(topology, s)
    info = dict(provider="agd-baseline", topology=topology, execution="dense-softmax", rho=None,
                **{k: s[k] for k in ("batch", "lr", "channels", "n_rir", "n_up")})
    run(benchmark, make_step(agd, s), info)


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
