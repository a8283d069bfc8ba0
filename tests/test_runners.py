"""Inference paths (:mod:`trilevelnas.runners`) and ``upscale --runtime``: every available path
reproduces eager PyTorch within the tolerance on fresh inputs of odd sizes; auto picks the first
verified path of the preference and says why it passed over the others; upscale's output is the
eager output's."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from trilevelnas import runners
from trilevelnas.cli import upscale
from trilevelnas.data.io import read_image, write_image
from trilevelnas.zoo import load_pretrained

from program_helpers import one_line_error, run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return load_pretrained()


@pytest.mark.parametrize("path", [p for p in runners.PATHS if p != "compile"])
def test_every_path_reproduces_eager(model, path):
    if runners.unavailable(path, torch.device("cpu")):
        pytest.skip(runners.unavailable(path, torch.device("cpu")))
    run_ = runners.make_runner(copy.deepcopy(model), path)
    for seed, shape in enumerate([(1, 3, 37, 29), (2, 3, 16, 53), (1, 3, 8, 8)]):
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(100 + seed))
        with torch.no_grad():
            ref = model(x)
        got = run_(x)
        assert got.shape == ref.shape and got.is_contiguous()
        assert (got - ref).abs().max() <= runners.TOLERANCE, path


def test_auto_takes_the_first_verified_path_and_says_why_not_the_others(model, monkeypatch):
    path, _, notes = runners.choose_runner(copy.deepcopy(model), ["channels_last", "eager"])
    assert (path, notes) == ("channels_last", [])
    monkeypatch.setattr(runners, "TOLERANCE", 0.0)  # channels-last differs from eager by rounding
    net = copy.deepcopy(model)
    path, run_, notes = runners.choose_runner(net, ["channels_last", "eager"])
    assert path == "eager" and len(notes) == 1 and "channels_last not used: it differs from eager" in notes[0]
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous()  # the rejected path's layout is undone


def test_unknown_and_unavailable_paths():
    with pytest.raises(ValueError, match="unknown inference path"):
        runners.make_runner(torch.nn.Conv2d(3, 3, 1), "tensorrt")
    assert runners.unavailable("onnxruntime", torch.device("cuda")) is not None


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("in") / "noise.png"
    write_image(str(path), rng.integers(0, 256, (23, 31, 3), dtype=np.uint8))
    return path


@pytest.mark.parametrize("runtime", ["auto", "torchscript", "onnxruntime"])
def test_upscale_runtime_gives_the_eager_image(photo, tmp_path, capsys, runtime):
    outs = {}
    for rt in ("eager", runtime):
        out = tmp_path / f"{rt}.png"
        code, _, err = run(upscale, ["-i", photo, "-o", out, "--runtime", rt, "--no-progress"], capsys)
        assert code == 0, err
        outs[rt] = read_image(str(out)).rgb.astype(int)
    diff = np.abs(outs[runtime] - outs["eager"])
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # equal but for a rounding tie now and then


def test_upscale_unknown_runtime_is_one_line(photo, tmp_path, capsys):
    code, _, err = run(upscale, ["-i", photo, "-o", tmp_path / "x.png", "--runtime", "tensorrt"], capsys)
    one_line_error(code, err, "--runtime", "tensorrt")


def test_default_cpu_order_prefers_onnxruntime_then_channels_last(model, monkeypatch):
    if runners.unavailable("onnxruntime", torch.device("cpu")):
        pytest.skip("onnxruntime is not installed")
    assert runners.choose_runner(copy.deepcopy(model))[0] == "onnxruntime"

    def broken(_model):
        raise RuntimeError("Exporting the operator 'trilevelnas::op' is not supported")
    monkeypatch.setitem(runners._MAKERS, "onnxruntime", broken)
    path, _, notes = runners.choose_runner(copy.deepcopy(model))
    assert path == "channels_last"
    assert notes == ["onnxruntime not used: it failed: RuntimeError: Exporting the operator "
                     "'trilevelnas::op' is not supported"]
