"""Issue #27: the ``trilevelnas`` command, and the Real-ESRGAN / BasicSR habits of upscale,
evaluate and export, each checked through the command line against an independent computation."""
import json
import os
import subprocess
import sys
import tomllib

import numpy as np
import pytest
import torch
from PIL import Image

import trilevelnas
from trilevelnas.cli import commands, evaluate, export, upscale
from trilevelnas.arch import Architecture
from trilevelnas.data import imresize, modcrop, read_image, write_image
from trilevelnas.metrics import psnr, ssim
from trilevelnas.models import build, load_model, save_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CELL = [["conv3x3", 8], ["resblock", 8], ["dwsblock", 16], ["conv1x1", 8], ["conv3x3", 16]]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


# tiny convolutions: one thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A x2 network with weights large enough that its output is far from bicubic."""
    d = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    net = build(Architecture.from_dict({"backbone": "B", "path": [0, 1], "channels": 16, "scale": 2, "cells": [CELL]}))
    for p in net.parameters():
        p.data.mul_(1.5)
    save_model(net, d / "b2.pt")
    return str(d / "b2.pt")


from program_helpers import one_line_error, run  # noqa: E402


def sr_float(model_path, img_u, pad=0):
    """The model's float HxWx3 output on ``img_u`` (uint8/uint16), optionally reflect-padded
    bottom/right by ``pad`` pixels with numpy and cropped back after."""
    top = np.iinfo(img_u.dtype).max
    x = img_u.astype(np.float32) / top
    h, w = x.shape[:2]
    if pad:
        x = np.pad(x, ((0, pad), (0, pad), (0, 0)), mode="reflect")
    with torch.no_grad():
        y = load_model(model_path)(torch.from_numpy(x.transpose(2, 0, 1).copy())[None])[0]
    return y.permute(1, 2, 0).double().numpy()[:h * 2, :w * 2]


def quantise(y, dtype=np.uint8):
    top = np.iinfo(dtype).max
    return np.round(np.clip(y, 0, 1) * top).astype(dtype)


def pil_lanczos(y, size):
    """Independent Lanczos: Pillow on each channel of the clipped float output, in float32."""
    h, w = size
    y = np.clip(y, 0, 1).astype(np.float32)
    return np.stack([np.asarray(Image.fromarray(y[:, :, c]).resize((w, h), Image.LANCZOS))
                     for c in range(y.shape[2])], axis=2)


# ----------------------------------------------------------------------------- trilevelnas command
def test_console_script_is_declared_and_names_the_dispatcher():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    module, _, func = project["scripts"]["trilevelnas"].partition(":")
    assert (module, func) == ("trilevelnas.cli.commands", "main")
    assert set(commands.PROGRAMS) == {"search", "train", "evaluate", "upscale", "export", "ablate"}
    for name in commands.PROGRAMS:  # the program, and the python -m shim that forwards to it
        __import__(f"trilevelnas.cli.{name}")
        __import__(f"trilevelnas.{name}")
        assert sys.modules[f"trilevelnas.{name}"].main is sys.modules[f"trilevelnas.cli.{name}"].main


def test_extras_are_declared():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    assert {"onnx", "metrics", "tensorboard", "all"} <= set(extras)
    assert set(extras["onnx"]) == {"onnx", "onnxruntime"}
    assert extras["metrics"] == ["lpips"]
    # not metrics: lpips requires torchvision, which pip would install over a CPU torch
    assert extras["all"] == ["trilevelnas[onnx,tensorboard,yaml]"]


def test_version_help_and_unknown_command_through_python_m():
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "trilevelnas", *args], capture_output=True, text=True,
                              timeout=120, cwd=ROOT, env=ENV)

    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"trilevelnas {trilevelnas.__version__}"
    proc = cli("--help")
    assert proc.returncode == 0
    for name in ("search", "train", "evaluate", "upscale", "export", "ablate"):
        assert f"\n  {name} " in proc.stdout
    for bad in (("frobnicate",), ()):
        proc = cli(*bad)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert "upscale" in proc.stderr and proc.stdout == ""


def test_subcommand_runs_the_program_and_keeps_one_line_errors(model_file, tmp_path):
    write_image(tmp_path / "x.png", np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8))
    (tmp_path / "corrupt.png").write_bytes(b"garbage")
    proc = subprocess.run([sys.executable, "-m", "trilevelnas", "upscale", "-i", str(tmp_path / "x.png"),
                           "-o", str(tmp_path / "y.png"), "--model", model_file],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=ENV)
    assert proc.returncode == 0, proc.stderr
    assert read_image(tmp_path / "y.png").rgb.shape == (24, 20, 3)
    # the console script's function, in process: errors are one line, prefixed by the subcommand
    code = commands.main(["upscale", "-i", str(tmp_path / "corrupt.png"), "-o", str(tmp_path / "o"),
                          "--model", model_file])
    assert code == 2
    assert commands.main(["export", "--model", model_file, "--format", "tflite", "-o", str(tmp_path / "m")]) == 2
    assert commands.main(["--version"]) == 0


@pytest.mark.parametrize("name", ["search", "train", "ablate", "evaluate", "upscale", "export"])
def test_every_subcommand_reaches_its_program(name, capsys):
    with pytest.raises(SystemExit) as stop:  # argparse's --help exits 0 after printing the usage
        commands.main([name, "--help"])
    assert stop.value.code == 0
    assert f"trilevelnas.{name}" in capsys.readouterr().out


def test_subcommand_error_prefix(model_file, tmp_path, capsys):
    code = commands.main(["evaluate", "--model", str(tmp_path / "missing.pt")])
    _, err = capsys.readouterr()
    one_line_error(code, err, "trilevelnas evaluate: error:", "missing.pt")


# ----------------------------------------------------------------------------------------- export
def test_export_without_onnxruntime_writes_unchecked_with_a_note(model_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if it were not installed
    code, out, err = run(export, ["--model", model_file, "--format", "onnx", "-o", tmp_path / "m.onnx"], capsys)
    assert code == 0, err
    assert (tmp_path / "m.onnx").is_file() and "check:" not in out
    assert "onnxruntime is not installed" in err and "trilevelnas[onnx]" in err


def test_export_with_onnxruntime_runs_the_check(model_file, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    code, out, err = run(export, ["--model", model_file, "--format", "onnx", "-o", tmp_path / "m.onnx"], capsys)
    assert code == 0, err
    assert "check: max |exported - eager|" in out and "not installed" not in err


# ------------------------------------------------------------------------------ upscale: outscale
@pytest.mark.parametrize("outscale, size", [(3.5, (49, 38)), (1.5, (21, 16)), (0.5, (7, 5)), (1.15, (16, 12))])
def test_outscale_gives_the_exact_size_and_a_lanczos_resize(model_file, tmp_path, capsys, outscale, size):
    img = np.random.default_rng(1).integers(0, 256, (14, 11, 3), dtype=np.uint8)
    write_image(tmp_path / "x.png", img)
    code, _, err = run(upscale, ["-i", tmp_path / "x.png", "-o", tmp_path / "y.png", "--model", model_file,
                                 "-s", outscale], capsys)
    assert code == 0, err
    got = read_image(tmp_path / "y.png").rgb
    assert got.shape == size + (3,)
    want = quantise(pil_lanczos(sr_float(model_file, img), size))
    assert np.abs(got.astype(int) - want).max() <= 1


def test_outscale_equal_to_the_model_scale_resizes_nothing(model_file, tmp_path, capsys):
    img = np.random.default_rng(2).integers(0, 256, (13, 9, 3), dtype=np.uint8)
    write_image(tmp_path / "x.png", img)
    for name, extra in (("plain", []), ("s2", ["--outscale", "2"])):
        code, _, err = run(upscale, ["-i", tmp_path / "x.png", "-o", tmp_path / f"{name}.png",
                                     "--model", model_file] + extra, capsys)
        assert code == 0, err
    assert np.array_equal(read_image(tmp_path / "plain.png").rgb, read_image(tmp_path / "s2.png").rgb)


def test_outscale_keeps_alpha_and_16_bits(model_file, tmp_path, capsys):
    r = np.random.default_rng(3)
    rgba = r.integers(0, 256, (12, 10, 4), dtype=np.uint8)
    deep = r.integers(0, 65536, (9, 12, 3)).astype(np.uint16)
    write_image(tmp_path / "in" / "rgba.png", rgba[:, :, :3], rgba[:, :, 3])
    write_image(tmp_path / "in" / "deep.png", deep)
    code, _, err = run(upscale, ["-i", tmp_path / "in", "-o", tmp_path / "out", "--model", model_file,
                                 "-s", "3", "--no-progress"], capsys)
    assert code == 0, err
    a = read_image(tmp_path / "out" / "rgba.png")
    assert a.rgb.shape == (36, 30, 3) and a.alpha.shape == (36, 30)
    alpha = imresize(rgba[:, :, 3], 2).astype(np.float32)[:, :, None] / 255
    assert np.abs(a.alpha.astype(int) - quantise(pil_lanczos(alpha, (36, 30)))[:, :, 0]).max() <= 1
    d = read_image(tmp_path / "out" / "deep.png")
    assert d.rgb.dtype == np.uint16 and d.rgb.shape == (27, 36, 3)
    want = quantise(pil_lanczos(sr_float(model_file, deep), (27, 36)), np.uint16)
    assert np.abs(d.rgb.astype(int) - want).max() <= 2


@pytest.mark.parametrize("bad", ["0", "-2", "nan", "inf"])
def test_outscale_must_be_positive(model_file, tmp_path, capsys, bad):
    write_image(tmp_path / "x.png", np.zeros((8, 8, 3), np.uint8))
    code, _, err = run(upscale, ["-i", tmp_path / "x.png", "-o", tmp_path / "y.png", "--model", model_file,
                                 f"--outscale={bad}"], capsys)
    one_line_error(code, err, "--outscale")
    assert not (tmp_path / "y.png").exists()


# ------------------------------------------------------------------------ upscale: ext and quality
def test_ext_and_quality(model_file, tmp_path, capsys):
    img = np.random.default_rng(4).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    write_image(tmp_path / "in" / "x.png", img)
    sizes = {}
    for ext in ("jpg", "webp"):
        for q in (10, 95):
            out = tmp_path / f"{ext}{q}"
            code, _, err = run(upscale, ["-i", tmp_path / "in", "-o", out, "--model", model_file, "--ext", ext,
                                         "--quality", q, "--no-progress"], capsys)
            assert code == 0, err
            assert os.listdir(out) == [f"x.{ext}"]
            with Image.open(out / f"x.{ext}") as im:
                assert im.format == {"jpg": "JPEG", "webp": "WEBP"}[ext] and im.size == (40, 48)
            sizes[ext, q] = os.path.getsize(out / f"x.{ext}")
        assert sizes[ext, 10] < sizes[ext, 95]
    # the default quality is 95
    code, _, err = run(upscale, ["-i", tmp_path / "in", "-o", tmp_path / "jpgdefault", "--model", model_file,
                                 "--ext", "jpg", "--no-progress"], capsys)
    assert code == 0, err
    assert (tmp_path / "jpgdefault" / "x.jpg").read_bytes() == (tmp_path / "jpg95" / "x.jpg").read_bytes()
    code, _, err = run(upscale, ["-i", tmp_path / "in", "-o", tmp_path / "png", "--model", model_file,
                                 "--ext", "png", "--no-progress"], capsys)
    assert code == 0 and os.listdir(tmp_path / "png") == ["x.png"]


@pytest.mark.parametrize("argv, words", [
    (["--quality", "0"], ["--quality 0", "1..100"]),
    (["--quality", "101"], ["--quality 101"]),
    (["--ext", "gif"], ["--ext", "gif"]),
    (["--fp32", "--half"], ["--fp32", "--half"]),
    (["--pre_pad", "-1"], ["--pre_pad -1"]),
])
def test_upscale_bad_options_are_one_line(model_file, tmp_path, capsys, argv, words):
    write_image(tmp_path / "x.png", np.zeros((8, 8, 3), np.uint8))
    code, _, err = run(upscale, ["-i", tmp_path / "x.png", "-o", tmp_path / "o", "--model", model_file] + argv, capsys)
    one_line_error(code, err, *words)


def test_output_file_extension_must_agree_with_ext(model_file, tmp_path, capsys):
    write_image(tmp_path / "x.png", np.zeros((8, 8, 3), np.uint8))
    code, _, err = run(upscale, ["-i", tmp_path / "x.png", "-o", tmp_path / "y.png", "--model", model_file,
                                 "--ext", "jpg"], capsys)
    one_line_error(code, err, "y.png", "--ext is jpg")
    code, _, err = run(upscale, ["-i", tmp_path / "x.png", "-o", tmp_path / "y.jpeg", "--model", model_file,
                                 "--ext", "jpg"], capsys)
    assert code == 0, err


def test_jpg_drops_alpha_and_16_bits_with_a_note(model_file, tmp_path, capsys):
    r = np.random.default_rng(5)
    rgba = r.integers(0, 256, (12, 10, 4), dtype=np.uint8)
    deep = r.integers(0, 65536, (9, 12, 3)).astype(np.uint16)
    write_image(tmp_path / "in" / "rgba.png", rgba[:, :, :3], rgba[:, :, 3])
    write_image(tmp_path / "in" / "deep.png", deep)
    code, _, err = run(upscale, ["-i", tmp_path / "in", "-o", tmp_path / "out", "--model", model_file,
                                 "--ext", "jpg", "--no-progress"], capsys)
    assert code == 0, err
    assert "rgba.jpg: .jpg cannot hold an alpha channel" in err and "deep.jpg: .jpg holds 8 bits" in err
    a, d = read_image(tmp_path / "out" / "rgba.jpg"), read_image(tmp_path / "out" / "deep.jpg")
    assert a.alpha is None and a.rgb.shape == (24, 20, 3)
    assert d.rgb.dtype == np.uint8 and d.rgb.shape == (18, 24, 3)
    # webp keeps the alpha channel (8 bits)
    code, _, err = run(upscale, ["-i", tmp_path / "in" / "rgba.png", "-o", tmp_path / "w", "--model", model_file,
                                 "--ext", "webp", "--quality", "100"], capsys)
    assert code == 0 and "alpha" not in err
    assert read_image(tmp_path / "w" / "rgba.webp").alpha.shape == (24, 20)


# ------------------------------------------------------------------ upscale: Real-ESRGAN spellings
def test_pre_pad_equals_reflect_padding_and_cropping(model_file, tmp_path, capsys):
    img = np.random.default_rng(6).integers(0, 256, (15, 13, 3), dtype=np.uint8)
    write_image(tmp_path / "x.png", img)
    for flag in ("--pre_pad", "--pre-pad"):
        code, _, err = run(upscale, ["-i", tmp_path / "x.png", "-o", tmp_path / "y.png", "--model", model_file,
                                     flag, "5"], capsys)
        assert code == 0, err
        got = read_image(tmp_path / "y.png").rgb
        assert got.shape == (30, 26, 3)
        assert np.abs(got.astype(int) - quantise(sr_float(model_file, img, pad=5))).max() <= 1
    # padding changes the border: the output is not the unpadded one
    assert np.abs(got.astype(int) - quantise(sr_float(model_file, img))).max() > 2
    code, _, err = run(upscale, ["-i", tmp_path / "x.png", "-o", tmp_path / "z.png", "--model", model_file,
                                 "--pre_pad", "13"], capsys)
    one_line_error(code, err, "x.png", "--pre_pad 13", "13x15")


def test_real_esrgan_aliases_give_the_same_outputs(model_file, tmp_path, capsys):
    img = np.random.default_rng(7).integers(0, 256, (40, 36, 3), dtype=np.uint8)
    write_image(tmp_path / "x.png", img)
    outs = {}
    for name, argv in (("ours", ["--tile", "16", "--tile-pad", "3"]),
                       ("theirs", ["-t", "16", "--tile_pad", "3", "--fp32"]),
                       ("fp32", ["--fp32"]), ("plain", [])):
        code, _, err = run(upscale, ["-i", tmp_path / "x.png", "-o", tmp_path / f"{name}.png", "--model", model_file,
                                     "--no-progress"] + argv, capsys)
        assert code == 0, err
        outs[name] = read_image(tmp_path / f"{name}.png").rgb
    assert np.array_equal(outs["ours"], outs["theirs"])
    assert np.array_equal(outs["fp32"], outs["plain"])
    assert not np.array_equal(outs["ours"], outs["plain"])  # a 3-pixel tile pad leaves seams: the tiles ran


def test_a_folder_of_mixed_formats(model_file, tmp_path, capsys):
    r = np.random.default_rng(8)
    src = tmp_path / "in"
    imgs = {
        "a.png": (r.integers(0, 256, (12, 10, 3), dtype=np.uint8), r.integers(0, 256, (12, 10), dtype=np.uint8)),
        "b.jpg": (r.integers(0, 256, (11, 13, 3), dtype=np.uint8), None),
        "c.bmp": (r.integers(0, 256, (10, 9, 3), dtype=np.uint8), None),
        "d.tif": (r.integers(0, 65536, (9, 12, 3)).astype(np.uint16), None),
        "e.webp": (r.integers(0, 256, (8, 14, 3), dtype=np.uint8), r.integers(0, 256, (8, 14), dtype=np.uint8)),
        "f.ppm": (r.integers(0, 256, (10, 10, 3), dtype=np.uint8), None),
    }
    for name, (rgb, alpha) in imgs.items():
        write_image(src / name, rgb, alpha)
    code, out, err = run(upscale, ["-i", src, "-o", tmp_path / "out", "--model", model_file, "--no-progress"], capsys)
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "out")) == sorted(imgs)
    for name, (rgb, alpha) in imgs.items():
        got = read_image(tmp_path / "out" / name)
        assert got.rgb.shape == (rgb.shape[0] * 2, rgb.shape[1] * 2, 3), name
        assert got.rgb.dtype == rgb.dtype and (got.alpha is None) == (alpha is None), name
    lossless = read_image(tmp_path / "out" / "c.bmp").rgb
    want = quantise(sr_float(model_file, read_image(src / "c.bmp").rgb))
    assert np.abs(lossless.astype(int) - want).max() <= 1
    # and all of them to one format, with a suffix
    code, out, err = run(upscale, ["-i", src, "-o", tmp_path / "png", "--model", model_file, "--ext", "png",
                                   "--suffix", "_x2", "--no-progress"], capsys)
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "png")) == sorted(n.split(".")[0] + "_x2.png" for n in imgs)
    assert read_image(tmp_path / "png" / "d_x2.png").rgb.dtype == np.uint16


# ------------------------------------------------------------------------ evaluate: metrics, channel
def _hr_folder(folder, seed, names=("one", "two"), shape=(34, 30, 3)):
    r = np.random.default_rng(seed)
    out = {}
    for name in names:
        out[name] = r.integers(0, 256, shape, dtype=np.uint8)
        write_image(folder / f"{name}.png", out[name])
    return out


def _rgb_psnr(a, b, crop):
    """RGB PSNR by hand: crop, MSE over all three channels, peak 255."""
    a = a[crop:-crop, crop:-crop].astype(np.float64)
    b = b[crop:-crop, crop:-crop].astype(np.float64)
    return 10 * np.log10(255.0 ** 2 / np.mean((a - b) ** 2))


def test_channel_rgb_psnr_matches_numpy(model_file, tmp_path, capsys):
    hr = _hr_folder(tmp_path / "hr", 9)
    code, out, err = run(evaluate, ["--model", model_file, "--data", tmp_path / "hr", "--channel", "rgb",
                                    "--metrics", "psnr", "--json", tmp_path / "e.json", "--no-progress"], capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "e.json").read_text())
    assert "psnr_rgb" in res and "bicubic_psnr_rgb" in res
    assert not any(k.startswith(("ssim", "bicubic_ssim")) or k.endswith("_y") for k in res)
    assert "PSNR-RGB" in out and "SSIM" not in out
    rows = {row["name"]: row for row in res["images"]}
    for name, img in hr.items():
        gt = modcrop(img, 2)
        sr = quantise(sr_float(model_file, imresize(gt, 0.5)))
        assert rows[name]["psnr_rgb"] == pytest.approx(_rgb_psnr(sr, gt, 2), abs=1e-9)
        assert rows[name]["psnr_rgb"] != pytest.approx(psnr(sr, gt, 2, True), abs=1e-3)  # not Y
    assert res["psnr_rgb"] == pytest.approx(np.mean([r["psnr_rgb"] for r in res["images"]]))


def test_metrics_ssim_on_y_and_on_rgb(model_file, tmp_path, capsys):
    hr = _hr_folder(tmp_path / "hr", 10, names=("one",))
    gt = modcrop(hr["one"], 2)
    sr = quantise(sr_float(model_file, imresize(gt, 0.5)))
    for channel in ("y", "rgb"):
        code, out, err = run(evaluate, ["--model", model_file, "--data", tmp_path / "hr", "--metrics", "ssim",
                                        "--channel", channel, "--json", tmp_path / "e.json", "--no-progress"], capsys)
        assert code == 0, err
        res = json.loads((tmp_path / "e.json").read_text())
        assert f"psnr_{channel}" not in res
        assert res[f"ssim_{channel}"] == pytest.approx(ssim(sr, gt, 2, channel == "y"), abs=1e-9)


def test_bad_metrics_are_one_line(model_file, tmp_path, capsys):
    for argv, words in ((["--metrics", "psnr,lpips"], ["--metrics", "lpips"]),
                        (["--metrics", ""], ["--metrics"]),
                        (["--channel", "cb"], ["--channel", "cb"])):
        code, _, err = run(evaluate, ["--model", model_file] + argv, capsys)
        one_line_error(code, err, *words)


# --------------------------------------------------------------------------- evaluate: several sets
@pytest.fixture()
def two_sets(tmp_path):
    """Set A as paired folders (LR named '<stem>x2'), set B as an HR folder."""
    for name, img in _hr_folder(tmp_path / "hrA", 11).items():
        gt = modcrop(img, 2)
        write_image(tmp_path / "A" / "GT" / f"{name}.png", gt)
        write_image(tmp_path / "A" / "LR" / f"{name}x2.png", imresize(gt, 0.5))
    _hr_folder(tmp_path / "B" / "HR", 12, names=("three", "four", "five"), shape=(30, 40, 3))
    return tmp_path


def _single(model_file, tmp_path, capsys, argv):
    code, _, err = run(evaluate, ["--model", model_file, "--json", tmp_path / "one.json", "--no-progress"] + argv, capsys)
    assert code == 0, err
    return json.loads((tmp_path / "one.json").read_text())


def test_several_sets_on_the_command_line(model_file, two_sets, capsys):
    t = two_sets
    code, out, err = run(evaluate, ["--model", model_file, "--gt", t / "A" / "GT", "--lq", t / "A" / "LR",
                                    "--filename-tmpl", "{}x2", "--data", t / "B" / "HR", "--json", t / "multi.json",
                                    "--save-dir", t / "saved", "--no-progress"], capsys)
    assert code == 0, err
    res = json.loads((t / "multi.json").read_text())
    assert list(res["sets"]) == ["B/HR", "A/GT"]  # --data sets, then the --gt/--lq pairs
    a = _single(model_file, t, capsys, ["--gt", t / "A" / "GT", "--lq", t / "A" / "LR", "--filename-tmpl", "{}x2"])
    b = _single(model_file, t, capsys, ["--data", t / "B" / "HR"])
    for name, one in (("A/GT", a), ("B/HR", b)):
        for k in ("psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y"):
            assert res["sets"][name][k] == pytest.approx(one[k], abs=1e-12)
        assert res["sets"][name]["images"] == one["images"]
    for k in ("psnr_y", "ssim_y", "bicubic_psnr_y"):
        assert res["summary"][k] == pytest.approx((a[k] + b[k]) / 2)
    assert res["summary"]["images"] == 5 and res["params"] == a["params"] and res["scale"] == 2
    # one table per set, then the summary
    assert out.index("== B/HR (3 images)") < out.index("== A/GT (2 images)") < out.index("== summary")
    summary = out[out.index("== summary"):]
    assert "mean of sets" in summary and "2 sets, 5 images" in summary
    assert sorted(os.listdir(t / "saved")) == ["A_GT", "B_HR"]
    assert sorted(os.listdir(t / "saved" / "B_HR")) == ["five.png", "four.png", "three.png"]


def test_sets_file_json_and_yaml_equal_the_command_line(model_file, two_sets, capsys):
    t = two_sets
    entries = [{"name": "Alpha", "gt": str(t / "A" / "GT"), "lq": str(t / "A" / "LR"), "filename_tmpl": "{}x2"},
               {"name": "Beta", "data": str(t / "B" / "HR")}]
    (t / "sets.json").write_text(json.dumps(entries))
    try:
        import yaml
    except ImportError:  # PyYAML is in requirements-dev.txt; without it, JSON only
        yaml = None
    if yaml is not None:
        (t / "sets.yaml").write_text(yaml.safe_dump(entries))
    # BasicSR's test option file: datasets mapping, dataroot_gt / dataroot_lq, type and io_backend
    (t / "basicsr.yml").write_text(f"""
name: test
datasets:
  test_1:
    name: Alpha
    type: PairedImageDataset
    dataroot_gt: {t / 'A' / 'GT'}
    dataroot_lq: {t / 'A' / 'LR'}
    filename_tmpl: '{{}}x2'
    io_backend:
      type: disk
  Beta:
    data: {t / 'B' / 'HR'}
""")
    results = []
    for f in ("sets.json", "sets.yaml", "basicsr.yml") if yaml is not None else ("sets.json",):
        code, out, err = run(evaluate, ["--model", model_file, "--sets", t / f, "--json", t / "r.json",
                                        "--no-progress", "--metrics", "psnr"], capsys)
        assert code == 0, (f, err)
        results.append(json.loads((t / "r.json").read_text()))
        assert list(results[-1]["sets"]) == ["Alpha", "Beta"] and "== Alpha" in out
    assert all(r == results[0] for r in results)
    b = _single(model_file, t, capsys, ["--data", t / "B" / "HR", "--metrics", "psnr"])
    assert results[0]["sets"]["Beta"]["psnr_y"] == pytest.approx(b["psnr_y"], abs=1e-12)


def test_one_set_keeps_the_single_set_output(model_file, two_sets, capsys):
    t = two_sets
    (t / "one.sets.json").write_text(json.dumps([{"data": str(t / "B" / "HR")}]))
    code, out, err = run(evaluate, ["--model", model_file, "--sets", t / "one.sets.json", "--json", t / "r.json",
                                    "--no-progress"], capsys)
    assert code == 0, err
    res = json.loads((t / "r.json").read_text())
    assert "sets" not in res and {"images", "psnr_y", "ssim_y", "params", "gflops", "scale"} <= set(res)
    assert "summary" not in out and out.startswith("image ")


@pytest.mark.parametrize("content, words", [
    ("[{\"gt\": \"x\"}]", ["entry 1", "gt and lq"]),
    ("[{\"data\": \"x\", \"gt\": \"y\", \"lq\": \"z\"}]", ["entry 1", "not both"]),
    ("[{\"data\": \"x\", \"dataroot\": \"y\"}]", ["unknown key", "dataroot"]),
    ("[{\"name\": \"s\", \"data\": \"x\"}, {\"name\": \"s\", \"data\": \"y\"}]", ["repeated name", "s"]),
    ("[]", ["no test set"]),
    ("{\"a\": 1}", ["expected a list"]),
    ("[{\"data\": 5}]", ["data must be a string"]),
    ("[{", ["not valid JSON"]),
])
def test_bad_sets_files_are_one_line(model_file, tmp_path, capsys, content, words):
    (tmp_path / "s.json").write_text(content)
    code, _, err = run(evaluate, ["--model", model_file, "--sets", tmp_path / "s.json"], capsys)
    one_line_error(code, err, "s.json", *words)


def test_bad_set_options_are_one_line(model_file, two_sets, capsys, monkeypatch):
    t = two_sets
    cases = [
        (["--gt", t / "A" / "GT", "--lq", t / "A" / "LR", "--gt", t / "A" / "GT"], ["2 --gt and 1 --lq"]),
        (["--gt", t / "A" / "GT", "--lq", t / "A" / "LR", "--gt", t / "A" / "GT", "--lq", t / "A" / "LR",
          "--filename-tmpl", "{}x2", "--filename-tmpl", "{}", "--filename-tmpl", "{}"], ["--filename-tmpl", "3 times"]),
        (["--sets", t / "missing.yaml"], ["missing.yaml", "not found"]),
        (["--sets", t / "x.json", "--data", t / "B" / "HR"], ["--sets", "not both"]),
        (["--data", t / "B" / "HR", "--filename-tmpl", "{}x2"], ["--filename-tmpl"]),
        (["--data", t / "B" / "HR", "--data", t / "nope"], ["nope"]),
    ]
    for argv, words in cases:
        code, _, err = run(evaluate, ["--model", model_file, "--no-progress"] + argv, capsys)
        one_line_error(code, err, *words)
    (t / "s.yaml").write_text("- data: x\n")
    monkeypatch.setitem(sys.modules, "yaml", None)
    code, _, err = run(evaluate, ["--model", model_file, "--sets", t / "s.yaml"], capsys)
    one_line_error(code, err, "s.yaml", "PyYAML", "trilevelnas[yaml]")


def test_outscale_size_removes_float_noise():
    from trilevelnas.inference import outscale_size

    assert 100 * 1.15 < 115  # int() alone would give 114
    assert outscale_size(100, 7, 1.15) == (115, 8)
    assert outscale_size(3, 3, 0.01) == (1, 1)
