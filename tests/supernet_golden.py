"""The supernet's outputs and gradients on fixed seeds, as a regression reference for execution
changes (tests/test_supernet_golden.py). ``python tests/supernet_golden.py`` rewrites
tests/data/supernet_golden.pt from the current code; do that only when the function the supernet
computes is meant to change."""
from __future__ import annotations

from pathlib import Path

import torch

from trilevelnas.supernet import Supernet, SupernetConfig

GOLDEN = Path(__file__).resolve().parent / "data" / "supernet_golden.pt"
CASES = ([("tree", sparse, rho) for sparse in (True, False) for rho in (0.0, 0.5, 0.9, 1.0)]
         + [("trellis", sparse, rho) for sparse in (True, False) for rho in (0.0, 0.9)]
         + [("fixed", sparse, rho) for sparse in (True, False) for rho in (0.0, 1.0)])


def case_key(topology: str, sparse: bool, rho: float) -> str:
    return f"{topology}-{'sparse' if sparse else 'dense'}-rho{rho}"


def compute(topology: str, sparse: bool, rho: float) -> dict:
    """Output, loss, architecture gradients and per-weight gradient sums / squared sums of one
    training-mode step (Gumbel widths) of a small float64 supernet with N(0, 1) logits."""
    torch.manual_seed(5)
    cfg = SupernetConfig(backbone="B", topology=topology, channels=16, n_rir=2, n_up=1, scale=2,
                         sparse_execution=sparse)
    net = Supernet(cfg).double().train()
    with torch.no_grad():
        for p in net.arch_parameters().values():
            p.normal_(0.0, 1.0)
    net.set_radius(rho)
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    torch.manual_seed(9)
    y = net(x)
    loss = (y - 0.5).square().mean() + 1e-4 * net.expected_flops()
    loss.backward()
    out = {"y": y.detach(), "loss": float(loss.detach())}
    for name, p in net.named_parameters():
        g = torch.zeros_like(p) if p.grad is None else p.grad
        if name in net.arch_parameters():
            out[f"grad.{name}"] = g.clone()
        else:
            out[f"gsum.{name}"] = float(g.sum())
            out[f"gsq.{name}"] = float(g.square().sum())
    return out


def main() -> None:
    data = {case_key(*c): compute(*c) for c in CASES}
    GOLDEN.parent.mkdir(exist_ok=True)
    torch.save(data, GOLDEN)
    print(f"wrote {GOLDEN} ({len(data)} cases)")


if __name__ == "__main__":
    main()
