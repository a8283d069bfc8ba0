"""Sparse execution pays off late in the search: a CPU training step of the tree supernet at
radius 0.9 is at least 2× faster sparse than dense (measured ratio is typically 4–16×), timed by
benchmarks/supernet_speed.py."""
import importlib.util
import pathlib

import torch

from trilevelnas.supernet import Supernet, SupernetConfig

_BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "supernet_speed.py"
_spec = importlib.util.spec_from_file_location("supernet_speed", _BENCH)
supernet_speed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(supernet_speed)
time_steps = supernet_speed.time_steps


def test_sparse_training_step_at_radius_0_9_is_at_least_2x_faster_than_dense():
    torch.manual_seed(0)
    cfg = SupernetConfig(backbone="B", channels=16, n_rir=5, n_up=2)
    net = Supernet(cfg)
    with torch.no_grad():
        for p in net.arch_parameters().values():
            p.normal_(0.0, 1.0)  # spread logits, as some way into a search
    net.set_radius(0.9)
    net.train()
    x = torch.randn(2, 3, 8, 8)
    target = torch.randn(2, 3, 32, 32)
    cfg.sparse_execution = True
    sparse = min(time_steps(net, x, target, 3))
    cfg.sparse_execution = False
    dense = min(time_steps(net, x, target, 3))
    assert dense >= 2.0 * sparse, (sparse, dense)
