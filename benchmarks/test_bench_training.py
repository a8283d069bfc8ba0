"""The training step as a pytest-benchmark suite (the sweep's ``training`` suite): one step of the
demo recipe per call, per provider of ``benchmarks/training_step.py`` (which also times them
interleaved and writes the roofline table). ``extra_info["flops"]``: forward + backward FLOPs of
the step (the floor: FLOPs / the measured peak). Under ``--benchmark-disable`` (CI smoke) or
``TNAS_BENCH_QUICK=1`` each provider runs a few steps untimed. On a GPU the step runs there (the
same suite is part of benchmarks/gpu_check.sh)."""
from __future__ import annotations

import pytest
import torch

from sweep import time_with_peak
from training_step import _arch, plain_step, step_flops, trainer_step

PROVIDERS = ["plain-resize", "plain", "trainer", "trainer-channels-last"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_training_step(benchmark, quick, tmp_path, provider):
    arch = _arch("trilevelnas-demo-psnr")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if provider.startswith("plain"):
        step = plain_step(arch, provider == "plain", device)
    else:
        step = trainer_step(arch, provider.endswith("channels-last"), device, str(tmp_path / "run"))
    losses = [step() for _ in range(3 if quick else 15)]  # warm-up; the loss is finite and moves
    assert all(torch.isfinite(torch.tensor(losses))) and len(set(losses)) > 1
    benchmark.group = "training-step"
    benchmark.extra_info.update(provider=provider, network="trilevelnas-demo-psnr", batch=16, patch=64,
                                flops=step_flops(arch))
    time_with_peak(benchmark, step, 20, warmup_rounds=3)
