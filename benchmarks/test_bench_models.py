"""Derived models: inference time, images per second and peak memory of the paper's four preset
architectures (``Architecture.preset(name)`` + ``models.build``) and the RRDBNet teacher
(ESRGAN: nf 64, nb 23, gc 32), ×4, fp32, random weights (speed does not depend on them).

LR size: 256×256 on a GPU (the paper's FLOPs convention); 32×32 on a CPU (RRDBNet alone is
~1.2 TFLOP at 256×256, minutes per image there), 16×16 with ``--benchmark-disable`` (CI smoke) or
``TNAS_BENCH_QUICK=1``. Batch 1.

Providers (one pytest-benchmark group per model): ``eager``; ``compile`` (``torch.compile``; on a
GPU, or on a CPU with ``TNAS_BENCH_COMPILE=1`` — compiling takes minutes on 2 cores);
``cuda-graph`` (one captured forward replayed; GPU only).

``extra_info``: ``macs`` at the measured LR size (:func:`trilevelnas.profile`), ``images_per_s``
(from the median, set by the sweep), ``peak_memory_bytes`` (CUDA: ``max_memory_allocated`` of one
forward; CPU: the resident-set high-water mark over one forward beyond the resident set before
it, see ``sweep.cpu_peak_memory``).
"""
from __future__ import annotations

import os

import pytest
import torch

import trilevelnas
from trilevelnas import models
from trilevelnas.arch import PRESET_NAMES, Architecture
from sweep import time_with_peak

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
MODELS = list(PRESET_NAMES) + ["rrdbnet"]
PROVIDERS = ["eager", "compile", "cuda-graph"]


def lr_size(is_small: bool) -> int:
    if is_small:
        return 16
    return 256 if CUDA else 32


def build_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    net = models.RRDBNet() if name == "rrdbnet" else models.build(Architecture.preset(name))
    return net.eval().to(DEVICE)


def make_forward(name: str, provider: str, lr: int, batch: int = 1):
    """A no-argument callable running one (synchronised) inference of ``name`` with ``provider``."""
    net = build_model(name)
    x = torch.rand(batch, 3, lr, lr, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    if provider == "eager":
        fn = net
    elif provider == "compile":
        fn = torch.compile(net)
    elif provider == "cuda-graph":
        static_x = x.clone()
        with torch.no_grad():
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    net(static_x)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_y = net(static_x)

        def fn(inp):
            static_x.copy_(inp)
            graph.replay()
            return static_y
    else:
        raise ValueError(f"unknown provider {provider!r}")

    def forward():
        with torch.no_grad():
            y = fn(x)
        if CUDA:
            torch.cuda.synchronize()
        return y

    return forward


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("name", MODELS)
def test_model_inference(benchmark, quick, name, provider):
    if provider == "cuda-graph" and not CUDA:
        pytest.skip("CUDA graphs need a GPU")
    if provider == "compile" and not CUDA and os.environ.get("TNAS_BENCH_COMPILE") != "1":
        pytest.skip("torch.compile on CPU only with TNAS_BENCH_COMPILE=1 (minutes to compile)")
    lr = lr_size(quick)
    benchmark.group = f"model-{name}"
    fwd = make_forward(name, provider, lr)
    macs = trilevelnas.profile(build_model(name), lr_size=(lr, lr))["macs"]
    benchmark.extra_info.update(provider=provider, model=name, lr=lr, batch=1, macs=macs,
                                flops=2 * macs, device=DEVICE)
    out = fwd()
    assert out.shape == (1, 3, 4 * lr, 4 * lr)
    time_with_peak(benchmark, fwd, 5)
