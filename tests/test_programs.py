"""The evaluate / upscale / export programs and tiled inference, on tiny models and images."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from trilevelnas import profile
from trilevelnas.arch import Architecture
from trilevelnas.cli import evaluate, export, run_main, upscale
from trilevelnas.data import imresize, modcrop, read_image, write_image
from trilevelnas.inference import receptive_radius, upscale_tensor
from trilevelnas.metrics import psnr, ssim
from trilevelnas.models import RRDBNet, build, load_model, save_model

CELL = [["conv3x3", 8], ["resblock", 8], ["dwsblock", 16], ["conv1x1", 8], ["conv3x3", 16]]
# receptive-field radius in LR pixels: conv_first 1 + cell (1 + 2 + 1 + 0 + 1) + step 1 + conv_last 1
RADIUS_B = 8
# A: conv_first 1 + cell 5 + up convs at x2 and x4 (1/2 + 1/4) + conv_hr, conv_last at x4 (1/4 + 1/4)
RADIUS_A = 8


# tiny convolutions: one thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    b2 = build(Architecture.from_dict({"backbone": "B", "path": [0, 1], "channels": 16, "scale": 2, "cells": [CELL]}))
    a4 = build(Architecture.from_dict({"backbone": "A", "path": [0, 1], "channels": 16, "scale": 4, "cells": [CELL]}))
    for m in (b2, a4):  # larger weights than the default init, so that errors are visible
        for p in m.parameters():
            p.data.mul_(1.5)
    save_model(b2, d / "b2.pt")
    save_model(a4, d / "a4.pt")
    rrdb = RRDBNet(nf=8, nb=1, gc=4, scale=2)
    torch.save({"params_ema": rrdb.state_dict()}, d / "esrgan_style.pth")
    return {"b2": str(d / "b2.pt"), "a4": str(d / "a4.pt"), "rrdb": str(d / "esrgan_style.pth"), "dir": d}


def run(module, argv, capsys):
    code = run_main(module.__name__, module.main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def sr_numpy(model, img_u, dtype=np.uint8):
    """Independent reference: the model on a whole image, rounded like BasicSR's tensor2img."""
    top = np.iinfo(dtype).max
    x = torch.from_numpy(img_u.astype(np.float32) / top).permute(2, 0, 1)[None]
    with torch.no_grad():
        y = model(x)[0].permute(1, 2, 0).double().numpy()
    return np.round(np.clip(y, 0, 1) * top).astype(dtype)


# ----------------------------------------------------------------------------------- tiling
@pytest.mark.parametrize("name,radius", [("b2", RADIUS_B), ("a4", RADIUS_A)])
def test_tiled_equals_whole_image_once_pad_covers_receptive_field(models, name, radius):
    model = load_model(models[name])
    x = torch.rand(2, 3, 37, 29)
    with torch.no_grad():
        whole = model(x)
    tiled = upscale_tensor(model, x, tile=12, tile_pad=radius)
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max() < 1e-4
    seams = upscale_tensor(model, x, tile=12, tile_pad=1)
    assert (seams - whole).abs().max() > 1e-4  # too little padding shows


def _measured_radius(model, scale, n=41):
    """Largest LR distance whose input pixel gets a gradient from the centre LR pixel's outputs."""
    radius = 0
    for seed in range(2):
        x = torch.rand(1, 3, n, n, generator=torch.Generator().manual_seed(seed), requires_grad=True)
        c = n // 2
        model(x)[:, :, c * scale:(c + 1) * scale, c * scale:(c + 1) * scale].sum().backward()
        hit = (x.grad.abs().sum((0, 1)) > 0).nonzero()
        radius = max(radius, int((hit - c).abs().max()))
    return radius


@pytest.mark.parametrize("name,scale,radius", [("b2", 2, RADIUS_B), ("a4", 4, RADIUS_A), ("rrdb", 2, None)])
def test_receptive_radius_bounds_the_autograd_measured_radius(models, name, scale, radius):
    model = load_model(models[name])
    bound, measured = receptive_radius(model), _measured_radius(model, scale)
    if radius is not None:
        assert measured == radius
    assert measured <= bound <= measured + 2


def test_tile_pad_defaults_to_the_receptive_radius(models):
    model = load_model(models["a4"])
    x = torch.rand(1, 3, 25, 30)
    with torch.no_grad():
        whole = model(x)
    assert (upscale_tensor(model, x, tile=7) - whole).abs().max() < 1e-4


def test_receptive_radius_refuses_what_it_cannot_bound():
    from trilevelnas.errors import UserError

    with pytest.raises(UserError, match="strided"):
        receptive_radius(nn.Sequential(nn.Conv2d(3, 3, 3, stride=2, padding=1)))
    with pytest.raises(UserError, match="padding"):
        receptive_radius(nn.Sequential(nn.Conv2d(3, 3, 3)))
    with pytest.raises(UserError, match="MaxPool2d"):
        receptive_radius(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.MaxPool2d(3, 1, 1)))
    assert receptive_radius(nn.Sequential(nn.Conv2d(3, 3, 5, padding=2), nn.BatchNorm2d(3), nn.ReLU(),
                                          nn.Conv2d(3, 3, 3, padding=2, dilation=2))) == 4


class _NaNInLowPrecision(nn.Module):
    """Nearest x2 upscaling that returns NaN whenever autocast is on (to exercise the fallback)."""

    scale = 2

    def forward(self, x):
        y = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        return y * float("nan") if torch.is_autocast_enabled(x.device.type) else y


def test_reduced_precision_nan_tiles_are_recomputed_in_fp32():
    x = torch.rand(1, 3, 10, 14)
    stats = {}
    with pytest.warns(UserWarning, match="float32"):
        out = upscale_tensor(_NaNInLowPrecision(), x, tile=6, tile_pad=2, dtype=torch.bfloat16, stats=stats)
    assert torch.equal(out, torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
    assert stats["fallbacks"] == 6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_half_precision_on_cuda_is_close_to_fp32(models):
    model = load_model(models["b2"]).cuda()
    x = torch.rand(1, 3, 40, 40, device="cuda")
    ref = upscale_tensor(model, x)
    for dtype in (torch.float16, torch.bfloat16):
        out = upscale_tensor(model, x, tile=16, tile_pad=RADIUS_B, dtype=dtype)
        assert torch.isfinite(out).all() and (out - ref).abs().max() < 5e-2


# ----------------------------------------------------------------------------------- upscale
def test_upscale_keeps_alpha_16bit_and_grey(models, tmp_path, capsys):
    r = np.random.default_rng(0)
    src = tmp_path / "in"
    rgba = r.integers(0, 256, (14, 11, 4), dtype=np.uint8)
    write_image(src / "rgba.png", rgba[:, :, :3], rgba[:, :, 3])
    c16 = r.integers(0, 65536, (9, 12, 3)).astype(np.uint16)
    write_image(src / "deep.png", c16)
    grey = np.repeat(r.integers(0, 256, (10, 10, 1), dtype=np.uint8), 3, axis=2)
    write_image(src / "grey.png", grey, gray=True)
    code, out, err = run(upscale, ["-i", src, "-o", tmp_path / "out", "--model", models["b2"], "--no-progress"], capsys)
    assert code == 0, err
    model = load_model(models["b2"])
    a = read_image(tmp_path / "out" / "rgba.png")
    assert a.rgb.shape == (28, 22, 3)
    assert np.abs(a.rgb.astype(int) - sr_numpy(model, rgba[:, :, :3])).max() <= 1
    assert np.array_equal(a.alpha, imresize(rgba[:, :, 3], 2))
    d = read_image(tmp_path / "out" / "deep.png")
    assert d.rgb.dtype == np.uint16 and d.alpha is None
    assert np.abs(d.rgb.astype(int) - sr_numpy(model, c16, np.uint16)).max() <= 2
    g = read_image(tmp_path / "out" / "grey.png")
    assert g.gray and g.rgb.shape == (20, 20, 3)


def test_upscale_single_file_tiled_equals_untiled(models, tmp_path, capsys):
    img = np.random.default_rng(1).integers(0, 256, (30, 26, 3), dtype=np.uint8)
    write_image(tmp_path / "x.jpg", img)
    code, _, err = run(upscale, ["-i", tmp_path / "x.jpg", "-o", tmp_path / "whole.png", "--model", models["a4"]], capsys)
    assert code == 0, err
    code, _, err = run(upscale, ["-i", tmp_path / "x.jpg", "-o", tmp_path / "o", "--model", models["a4"],
                                 "--tile", "16", "--tile-pad", str(RADIUS_A), "--suffix", "_sr", "--no-progress"], capsys)
    assert code == 0, err
    whole, tiled = read_image(tmp_path / "whole.png").rgb, read_image(tmp_path / "o" / "x_sr.jpg").rgb
    assert whole.shape == (120, 104, 3) and tiled.shape == whole.shape
    assert np.abs(whole.astype(int) - sr_numpy(load_model(models["a4"]), read_image(tmp_path / "x.jpg").rgb)).max() <= 1
    # the tiled output went through JPEG; compare loosely, the exact tiling check is above
    assert np.abs(whole.astype(float) - tiled).mean() < 4


def test_upscale_half_on_cpu_is_a_user_error(models, tmp_path, capsys):
    write_image(tmp_path / "x.png", np.zeros((8, 8, 3), np.uint8))
    code, _, err = run(upscale, ["-i", tmp_path / "x.png", "-o", tmp_path / "o", "--model", models["b2"],
                                 "--half", "--device", "cpu"], capsys)
    assert code == 2 and "--half" in err and err.count("\n") == 1


# ----------------------------------------------------------------------------------- evaluate
def test_evaluate_hr_folder_json_matches_independent_computation(models, tmp_path, capsys):
    r = np.random.default_rng(2)
    hr = {}
    for name, shape in (("one", (34, 30, 3)), ("two", (28, 40, 3))):
        hr[name] = r.integers(0, 256, shape, dtype=np.uint8)
        write_image(tmp_path / "hr" / f"{name}.png", hr[name])
    out_json = tmp_path / "res" / "eval.json"
    code, out, err = run(evaluate, ["--model", models["b2"], "--data", tmp_path / "hr", "--json", out_json,
                                    "--no-progress"], capsys)
    assert code == 0, err
    res = json.loads(out_json.read_text())
    assert set(res) >= {"images", "psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y", "params", "gflops", "scale"}
    model = load_model(models["b2"])
    rows = {row["name"]: row for row in res["images"]}
    for name, img in hr.items():
        gt = modcrop(img, 2)
        lq = imresize(gt, 0.5)  # uint8 in → rounded uint8 out, as MATLAB
        sr = sr_numpy(model, lq)
        bic = imresize(lq, 2)
        assert rows[name]["psnr_y"] == pytest.approx(psnr(sr, gt, 2), abs=1e-6)
        assert rows[name]["ssim_y"] == pytest.approx(ssim(sr, gt, 2), abs=1e-6)
        assert rows[name]["bicubic_psnr_y"] == pytest.approx(psnr(bic, gt, 2), abs=0.05)
        assert rows[name]["bicubic_ssim_y"] == pytest.approx(ssim(bic, gt, 2), abs=1e-3)
    assert res["psnr_y"] == pytest.approx(np.mean([r_["psnr_y"] for r_ in res["images"]]))
    assert res["params"] == sum(p.numel() for p in model.parameters())
    assert res["gflops"] == pytest.approx(profile(model)["gflops"])
    assert res["scale"] == 2 and "mean" in out


def test_evaluate_paired_folders_equal_hr_folder(models, tmp_path, capsys):
    r = np.random.default_rng(3)
    for name in ("a", "b"):
        img = modcrop(r.integers(0, 256, (33, 41, 3), dtype=np.uint8), 4)
        write_image(tmp_path / "GTmod4" / f"{name}.png", img)
        write_image(tmp_path / "LRbicx4" / f"{name}x4.png", imresize(img, 0.25))
    res = {}
    for mode, extra in (("hr", ["--data", tmp_path / "GTmod4"]),
                        ("paired", ["--gt", tmp_path / "GTmod4", "--lq", tmp_path / "LRbicx4", "--filename-tmpl", "{}x4"])):
        code, _, err = run(evaluate, ["--model", models["a4"], "--json", tmp_path / f"{mode}.json", "--no-progress"] + extra, capsys)
        assert code == 0, err
        res[mode] = json.loads((tmp_path / f"{mode}.json").read_text())
    for k in ("psnr_y", "ssim_y", "bicubic_psnr_y"):
        assert res["hr"][k] == pytest.approx(res["paired"][k], abs=1e-6)


def test_evaluate_skip_bad_images(models, tmp_path, capsys):
    write_image(tmp_path / "good.png", np.random.default_rng(4).integers(0, 256, (24, 24, 3), dtype=np.uint8))
    (tmp_path / "bad.png").write_bytes(b"broken")
    code, _, err = run(evaluate, ["--model", models["b2"], "--data", tmp_path, "--no-progress"], capsys)
    assert code == 2 and "bad.png" in err
    with pytest.warns(UserWarning, match="bad.png"):
        code, out, err = run(evaluate, ["--model", models["b2"], "--data", tmp_path, "--skip-bad-images",
                                        "--json", tmp_path / "r.json", "--no-progress"], capsys)
    assert code == 0, err
    assert [r["name"] for r in json.loads((tmp_path / "r.json").read_text())["images"]] == ["good"]


def test_evaluate_embedded_validation_set_with_raw_esrgan_weights(models, tmp_path, capsys):
    code, out, err = run(evaluate, ["--model", models["rrdb"], "--json", tmp_path / "e.json", "--no-progress"], capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "e.json").read_text())
    assert [r["name"] for r in res["images"]] == ["chelsea", "coffee", "camera"]
    assert 25 < res["bicubic_psnr_y"] < 40 and res["scale"] == 2


# ----------------------------------------------------------------------------------- export
@pytest.mark.parametrize("name", ["a4", "b2"])
def test_export_onnx_has_dynamic_axes_and_matches_onnxruntime(models, tmp_path, capsys, name):
    import onnx
    import onnxruntime

    path = tmp_path / f"{name}.onnx"
    code, out, err = run(export, ["--model", models[name], "--format", "onnx", "-o", path], capsys)
    assert code == 0, err
    graph_in = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in graph_in] == [True, False, True, True]
    model = load_model(models[name])
    sess = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in ((1, 3, 16, 16), (3, 3, 21, 13)):
        x = torch.rand(*shape)
        with torch.no_grad():
            ref = model(x).numpy()
        got = sess.run(["sr"], {"lq": x.numpy()})[0]
        assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-4


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_export_torchscript_matches_eager(models, tmp_path, capsys):
    for key in ("b2", "rrdb"):
        path = tmp_path / f"{key}.ts"
        code, _, err = run(export, ["--model", models[key], "--format", "torchscript", "-o", path], capsys)
        assert code == 0, err
        scripted, model = torch.jit.load(str(path)), load_model(models[key])
        x = torch.rand(2, 3, 11, 17)
        with torch.no_grad():
            assert torch.allclose(scripted(x), model(x), atol=1e-5)


# ----------------------------------------------------------------------------------- bad input
def test_bad_input_gives_one_line_error_naming_the_culprit(models, tmp_path, capsys):
    write_image(tmp_path / "ok.png", np.zeros((12, 12, 3), np.uint8))
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "wrong_weights.pt")
    (tmp_path / "text_model.pt").write_text("hello")
    (tmp_path / "empty").mkdir()
    cases = [
        (upscale, ["-i", tmp_path / "missing.png", "-o", tmp_path / "o", "--model", models["b2"]], "missing.png"),
        (upscale, ["-i", tmp_path / "corrupt.png", "-o", tmp_path / "o", "--model", models["b2"]], "corrupt.png"),
        (upscale, ["-i", tmp_path / "ok.png", "-o", tmp_path / "o", "--model", tmp_path / "wrong_weights.pt"], "wrong_weights.pt"),
        (upscale, ["-i", tmp_path / "ok.png", "-o", tmp_path / "o", "--model", tmp_path / "no_model.pt"], "no_model.pt"),
        (evaluate, ["--model", tmp_path / "text_model.pt"], "text_model.pt"),
        (evaluate, ["--model", models["b2"], "--data", tmp_path / "empty"], "empty"),
        (evaluate, ["--model", models["b2"], "--gt", tmp_path], "--lq"),
        (export, ["--model", models["b2"], "--format", "tflite", "-o", tmp_path / "m"], "tflite"),
        (export, ["--model", tmp_path / "corrupt.png", "--format", "onnx", "-o", tmp_path / "m"], "corrupt.png"),
    ]
    for module, argv, culprit in cases:
        code, _, err = run(module, argv, capsys)
        assert code == 2, (argv, err)
        assert err.count("\n") == 1 and culprit in err and "Traceback" not in err, err


def test_program_subprocess_exit_status_and_single_line(models, tmp_path):
    (tmp_path / "corrupt.png").write_bytes(b"garbage")
    proc = subprocess.run([sys.executable, "-m", "trilevelnas.upscale", "-i", str(tmp_path / "corrupt.png"),
                           "-o", str(tmp_path / "o"), "--model", models["b2"]],
                          capture_output=True, text=True, timeout=120, cwd=os.getcwd(),
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "corrupt.png" in proc.stderr
    assert "Traceback" not in proc.stderr
