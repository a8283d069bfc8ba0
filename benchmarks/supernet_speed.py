"""Timing of supernet training steps on the current device: sparse vs dense execution at a given
radius, and one paper-size step with its peak memory.

``python benchmarks/supernet_speed.py [--channels 16] [--batch 4] [--size 16] [--rho 0.9]
[--backbone B] [--topology tree] [--repeats 5] [--paper]``

Architecture logits are drawn from N(0, 1) (a supernet some way into its search; the default
init is near-uniform); a step is forward + backward of an L1 loss plus the expected-FLOPs term.
Reports median seconds per step.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trilevelnas.cli import run_main  # noqa: E402
from trilevelnas.supernet import Supernet, SupernetConfig  # noqa: E402


def _step(net, x, target, seed):
    torch.manual_seed(seed)
    net.zero_grad(set_to_none=True)
    loss = (net(x) - target).abs().mean() + 1e-4 * net.expected_flops()
    loss.backward()
    return loss


def time_steps(net, x, target, repeats: int, warmup: bool = True,
               cpu_times: list | None = None) -> list[float]:
    """Wall seconds of ``repeats`` training steps (after one warm-up step), same Gumbel seed
    each; the process CPU seconds of each step are appended to ``cpu_times`` if given (on a
    shared machine they say more than wall time)."""
    if warmup:
        _step(net, x, target, 0)
    out = []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        _step(net, x, target, 0)
        out.append(time.perf_counter() - t)
        if cpu_times is not None:
            cpu_times.append(time.process_time() - c)
    return out


def sparse_vs_dense(cfg: SupernetConfig, batch: int, size: int, rho: float, repeats: int, seed=0):
    """Median wall seconds of one training step at radius ``rho``, sparse and dense, the number
    of non-zero network weights, and the median CPU seconds, sparse and dense."""
    torch.manual_seed(seed)
    net = Supernet(cfg)
    with torch.no_grad():
        for p in net.arch_parameters().values():
            p.normal_(0.0, 1.0)
    net.set_radius(rho)
    net.train()
    x = torch.randn(batch, 3, size, size)
    target = torch.randn(batch, 3, size * cfg.scale, size * cfg.scale)
    cpu_s, cpu_d = [], []
    net.config.sparse_execution = True
    sparse = statistics.median(time_steps(net, x, target, repeats, cpu_times=cpu_s))
    net.config.sparse_execution = False
    dense = statistics.median(time_steps(net, x, target, repeats, cpu_times=cpu_d))
    net.config.sparse_execution = True
    ctx = net.step_context()
    live = None if ctx.net_host is None else int((ctx.net_host > 0).sum())
    return sparse, dense, live, statistics.median(cpu_s), statistics.median(cpu_d)


def paper_step(batch=16, size=32, rho=0.0, repeats=1, sparse=True, checkpoint=True, arch_std=None):
    """Median wall seconds, peak RSS growth (MiB), computed-node count and median CPU seconds of
    a paper-size training step (backbone B, C = 64, tree of 83 nodes)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    torch.manual_seed(0)
    net = Supernet(SupernetConfig(backbone="B", channels=64, sparse_execution=sparse,
                                  checkpoint=checkpoint))
    if arch_std is not None:
        with torch.no_grad():
            for p in net.arch_parameters().values():
                p.normal_(0.0, arch_std)
    net.set_radius(rho)
    net.train()
    x = torch.randn(batch, 3, size, size)
    target = torch.randn(batch, 3, 4 * size, 4 * size)
    cpu = []
    times = time_steps(net, x, target, repeats, warmup=False, cpu_times=cpu)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ctx = net.step_context()
    live = int(net.topology.computed_nodes(ctx.net_host).sum()) if sparse else net.topology.n_nodes
    return statistics.median(times), (peak - before) / 1024.0, live, statistics.median(cpu)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python benchmarks/supernet_speed.py", description=__doc__)
    ap.add_argument("--backbone", default="B")
    ap.add_argument("--topology", default="tree")
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--batch", type=int, default=None, help="default 4 (--paper: 16)")
    ap.add_argument("--size", type=int, default=None, help="LR side, default 16 (--paper: 32)")
    ap.add_argument("--rho", type=float, default=None, help="default 0.9 (--paper: 0)")
    ap.add_argument("--dense", action="store_true", help="--paper: dense execution")
    ap.add_argument("--arch-std", type=float, default=None,
                    help="--paper: draw the architecture logits from N(0, std²) (default: the init)")
    ap.add_argument("--no-checkpoint", action="store_true",
                    help="--paper: store all activations (no recomputation; needs > 24 GiB at rho 0)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--paper", action="store_true", help="time one paper-size step instead")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.paper:
        a.batch, a.size, a.rho = a.batch or 16, a.size or 32, a.rho or 0.0
        t, mem, live, cpu = paper_step(a.batch, a.size, a.rho, a.repeats, not a.dense,
                                  not a.no_checkpoint, a.arch_std)
        print(f"paper-size step (B, C=64, tree, batch {a.batch}, {a.size}x{a.size}, rho {a.rho}, "
              f"{'sparse' if not a.dense else 'dense'}, checkpoint {not a.no_checkpoint}, "
              f"{live} live nodes): {t:.2f} s wall, {cpu:.2f} s CPU, "
              f"peak RSS growth {mem:.0f} MiB")
        return 0
    a.batch, a.size = a.batch or 4, a.size or 16
    a.rho = 0.9 if a.rho is None else a.rho
    n_up = 2
    scale = 4
    cfg = SupernetConfig(backbone=a.backbone, topology=a.topology, channels=a.channels, n_up=n_up,
                         scale=scale)
    s, d, live, cs, cd = sparse_vs_dense(cfg, a.batch, a.size, a.rho, a.repeats)
    print(f"{a.backbone}/{a.topology} C={a.channels} batch {a.batch} {a.size}x{a.size} rho {a.rho}: "
          f"sparse {s * 1e3:.1f} ms, dense {d * 1e3:.1f} ms, speedup {d / s:.2f}x "
          f"(CPU time: {cs * 1e3:.1f} / {cd * 1e3:.1f} ms, {cd / cs:.2f}x; "
          f"non-zero network weights: {live})")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main("supernet_speed.py", main))
