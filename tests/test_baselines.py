"""The textbook baselines (models/baselines.py): the papers' parameter counts, their GFLOPs by
profile(), model files of kind "baseline", and training them with ``train --baseline``."""
import json
import os

import pytest
import torch

from trilevelnas.cli import evaluate, run_main, train
from trilevelnas.complexity import profile
from trilevelnas.errors import InputFileError, UserError
from trilevelnas.models import ESPCN, FSRCNN, PlainSR, build_baseline, load_model, save_model

HW = 256 * 256


def espcn_params(s, n1=64, n2=32):
    """Shi et al. 2016: (f1, n1) = (5, 64), (f2, n2) = (3, 32), f3 = 3, on RGB, with biases."""
    out = 3 * s * s
    return (3 * 25 * n1 + n1) + (n1 * 9 * n2 + n2) + (n2 * 9 * out + out)


def fsrcnn_params(d=56, s=12, m=4):
    """Dong et al. 2016: d·25 + s·d + m·9·s² + d·s + 81·d weights (12,464 for one channel) on RGB,
    plus biases and the per-channel PReLU slopes."""
    weights = 3 * 25 * d + s * d + m * 9 * s * s + d * s + 81 * d * 3
    biases = d + s + m * s + d + 3
    prelu = d + s + m * s + d
    return weights + biases + prelu


def plain_params(scale, c=32, n=6):
    out = 3 * scale * scale
    return (27 * c + c) + (n - 1) * (9 * c * c + c) + (9 * c * out + out)


def test_fsrcnn_weights_are_the_papers_12464_on_one_channel():
    d, s, m = 56, 12, 4
    assert d * 25 + s * d + m * 9 * s * s + d * s + 81 * d == 12464


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_parameter_counts_follow_the_papers_formulas(scale):
    assert profile(ESPCN(scale))["params"] == espcn_params(scale)
    assert profile(FSRCNN(scale))["params"] == fsrcnn_params()
    assert profile(PlainSR(scale))["params"] == plain_params(scale)
    if scale == 4:  # the sizes the comparison of issue #29 quotes: 37 K, 25 K, 61 K
        assert (espcn_params(4), fsrcnn_params(), plain_params(4)) == (37200, 24683, 61008)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_profile_gives_the_gflops_of_every_layer(scale):
    # every ESPCN / plain layer runs on the LR grid: one MAC per weight and one add per bias per pixel
    assert profile(ESPCN(scale))["gflops"] == pytest.approx(espcn_params(scale) * HW / 1e9)
    assert profile(PlainSR(scale))["gflops"] == pytest.approx(plain_params(scale) * HW / 1e9)
    # FSRCNN: LR convolutions, then the deconvolution (81·3 MACs per LR pixel and feature, 3 bias
    # adds per HR pixel); PReLU costs nothing in the paper's convention
    d, s, m = 56, 12, 4
    lr = 3 * 25 * d + d + s * d + s + m * (9 * s * s + s) + d * s + d + 81 * 3 * d
    assert profile(FSRCNN(scale))["gflops"] == pytest.approx((lr * HW + 3 * HW * scale * scale) / 1e9)


@pytest.mark.parametrize("name", ["espcn", "fsrcnn", "plain"])
def test_baselines_upscale_by_their_scale_and_round_trip_through_model_files(tmp_path, name):
    for scale in (2, 3, 4):
        model = build_baseline(name, scale).eval()
        x = torch.rand(1, 3, 9, 11)
        y = model(x)
        assert y.shape == (1, 3, 9 * scale, 11 * scale)
        path = tmp_path / f"{name}{scale}.pt"
        save_model(model, path)
        loaded = load_model(path)
        assert type(loaded) is type(model) and loaded.config() == model.config()
        assert torch.equal(loaded(x), y)


def test_a_bad_baseline_config_is_named():
    with pytest.raises(UserError, match="unknown baseline 'vdsr'"):
        build_baseline("vdsr", 4)
    with pytest.raises(UserError, match="n1 = 0"):
        build_baseline({"name": "espcn", "scale": 4, "n1": 0, "n2": 32})
    with pytest.raises(UserError, match="takes the fields"):
        build_baseline({"name": "fsrcnn", "scale": 4, "d": 56})


def test_a_model_file_declaring_another_baseline_size_is_refused(tmp_path):
    path = tmp_path / "e.pt"
    save_model(ESPCN(4, n1=16), path)
    from trilevelnas.fileio import save_torch
    from trilevelnas.models.io import read_model_file

    obj = read_model_file(path)
    obj["arch"]["n1"] = 64
    obj.pop("sha256", None)
    save_torch(obj, str(path), "model file", seal=True)
    with pytest.raises(InputFileError, match="conv1.weight"):
        load_model(path)


@pytest.mark.parametrize("name,params", [("espcn", 37200), ("fsrcnn", 24683), ("plain", 61008)])
def test_train_baseline_on_the_smoke_preset_and_evaluate_its_model(tmp_path, capsys, name, params):
    out = tmp_path / name
    code = run_main("train", train.main, ["--baseline", name, "--preset", "smoke", "--set", "train.steps=3",
                                          "--out", str(out), "--no-progress"])
    assert code == 0
    summary = json.load(open(out / "summary.json"))
    assert summary["architecture"]["name"] == name and summary["params"] == params
    assert summary["trained"] and summary["train_init"] == "scratch"
    assert f"baseline {name}" in capsys.readouterr().out
    model = load_model(out / "model.pt")
    assert model.config() == summary["architecture"]
    report = tmp_path / f"{name}.json"
    assert run_main("evaluate", evaluate.main, ["--model", str(out / "model.pt"), "--json", str(report),
                                                "--no-progress"]) == 0
    assert os.path.getsize(report) > 0


def test_train_baseline_refuses_init(tmp_path, capsys):
    code = run_main("train", train.main, ["--baseline", "espcn", "--preset", "smoke", "--init", "x.pt",
                                          "--out", str(tmp_path / "o")])
    assert code == 2 and "starts from scratch" in capsys.readouterr().err


def test_resume_continues_the_same_baseline_only(tmp_path, capsys):
    out = str(tmp_path / "r")
    argv = ["--preset", "smoke", "--set", "train.steps=2", "--out", out, "--no-progress"]
    assert run_main("train", train.main, ["--baseline", "fsrcnn", *argv]) == 0
    assert run_main("train", train.main, ["--baseline", "fsrcnn", *argv, "--resume"]) == 0
    capsys.readouterr()
    assert run_main("train", train.main, ["--baseline", "espcn", *argv, "--resume"]) == 2
    assert "give the same --baseline" in capsys.readouterr().err
