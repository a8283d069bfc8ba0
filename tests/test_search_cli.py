"""The search and train programs end to end on the real modules (smoke-sized), and their handling
of bad input: one line on stderr naming the culprit, exit status 2."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from trilevelnas.cli import run_main, search, train

TINY = ["--preset", "smoke", "--no-progress", "--set", "pretrain.steps=2", "--set", "search.steps=3",
        "--set", "train.steps=2", "--set", "data.val_max_images=1"]


def run_prog(module, argv, capsys):
    code = run_main(f"trilevelnas.{module.__name__.split('.')[-1]}", module.main, argv)
    return code, capsys.readouterr()


def write_images(folder, n=3, size=(40, 48), seed=0):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(os.path.join(folder, f"img{i}.png"))


def test_search_then_train_writes_everything(tmp_path, capsys):
    out = tmp_path / "search"
    code, cap = run_prog(search, TINY + ["--out", str(out)], capsys)
    assert code == 0, cap.err
    for name in ("arch.json", "checkpoint.pt", "log.csv", "config.json", "summary.json", "model.pt",
                 "curves.png", "arch_params.png", "architecture.png"):
        assert (out / name).is_file(), name
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert set(state["arch"]) >= {"alpha", "gamma"}
    assert all(isinstance(v, torch.Tensor) for v in state["arch"].values())
    arch = json.loads((out / "arch.json").read_text())
    assert arch["channels"] == 8 and arch["backbone"] == "B"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["params"] > 0 and summary["gflops"] > 0
    assert np.isfinite(summary["psnr_y"]) and np.isfinite(summary["bicubic_psnr_y"])
    assert "PSNR-Y" in cap.out and "GFLOPs" in cap.out  # the summary table

    code, cap = run_prog(train, TINY + ["--arch", str(out / "arch.json"), "--init", str(out / "checkpoint.pt"),
                                        "--out", str(tmp_path / "train")], capsys)
    assert code == 0, cap.err
    from trilevelnas.models import load_model

    model = load_model(str(tmp_path / "train" / "model.pt"))
    assert model.arch.to_dict() == arch
    rows = (tmp_path / "train" / "log.csv").read_text().splitlines()
    assert rows[0].startswith("global_step") and len(rows) >= 2
    # the preset selects the training settings: smoke's train phase is what ran
    assert json.loads((tmp_path / "train" / "config.json").read_text())["train"]["steps"] == 2


def test_train_from_search_inherits_the_supernet_weights(tmp_path, capsys):
    out = tmp_path / "s"
    assert run_prog(search, TINY + ["--set", "run.train_after_search=false", "--out", str(out)], capsys)[0] == 0
    assert not (out / "model.pt").exists()
    argv = TINY + ["--arch", str(out / "arch.json"), "--set", "train.steps=0"]
    assert run_prog(train, argv + ["--init", str(out / "checkpoint.pt"), "--out", str(tmp_path / "a")], capsys)[0] == 0
    assert run_prog(train, argv + ["--init", str(out / "checkpoint.pt"), "--out", str(tmp_path / "b")], capsys)[0] == 0
    assert run_prog(train, argv + ["--out", str(tmp_path / "scratch")], capsys)[0] == 0
    from trilevelnas.models import load_model
    from trilevelnas.supernet import Supernet, SupernetConfig

    a, b, c = (load_model(str(tmp_path / d / "model.pt")) for d in ("a", "b", "scratch"))
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    sn = Supernet(SupernetConfig.from_dict(state["supernet_config"]))
    sn.load_state_dict(state["supernet"])
    ref = sn.extract(a.arch)
    for (k, va), vb, vr, vc in zip(a.state_dict().items(), b.state_dict().values(), ref.state_dict().values(),
                                   c.state_dict().values()):
        assert torch.equal(va, vr) and torch.equal(va, vb), k
    assert not torch.equal(a.conv_first.weight, c.conv_first.weight)


def one_line_error(code, cap, *fragments):
    assert code == 2
    lines = [l for l in cap.err.splitlines() if l.strip()]
    assert len(lines) == 1, cap.err
    assert lines[0].startswith("trilevelnas.")
    for f in fragments:
        assert f in lines[0], lines[0]
    assert "Traceback" not in cap.err


def test_missing_and_empty_data_folder(tmp_path, capsys):
    one_line_error(*run_prog(search, TINY + ["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")], capsys),
                   "nope")
    (tmp_path / "empty").mkdir()
    one_line_error(*run_prog(search, TINY + ["--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")], capsys),
                   "empty")


def test_corrupt_image_is_named_and_can_be_skipped(tmp_path, capsys):
    data = tmp_path / "data"
    write_images(data, n=3, size=(48, 48))
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    one_line_error(*run_prog(search, TINY + ["--data", str(data), "--out", str(tmp_path / "o")], capsys), "broken.png")
    code, cap = run_prog(search, TINY + ["--data", str(data), "--skip-bad-images", "--set", "search.steps=1",
                                         "--set", "pretrain.steps=1", "--set", "run.train_after_search=false",
                                         "--out", str(tmp_path / "o2")], capsys)
    assert code == 0, cap.err
    assert (tmp_path / "o2" / "arch.json").is_file()


def test_images_smaller_than_the_patch(tmp_path, capsys):
    write_images(tmp_path / "small", n=2, size=(20, 20))
    one_line_error(*run_prog(search, TINY + ["--data", str(tmp_path / "small"), "--out", str(tmp_path / "o")], capsys),
                   "smaller than")


def test_wrong_teacher_file(tmp_path, capsys):
    bad = tmp_path / "teacher.pth"
    torch.save({"foo.weight": torch.zeros(3)}, bad)
    one_line_error(*run_prog(search, TINY + ["--teacher", str(bad), "--out", str(tmp_path / "o")], capsys), "teacher.pth")
    one_line_error(*run_prog(search, TINY + ["--teacher", str(tmp_path / "none.pth"), "--out", str(tmp_path / "o")],
                             capsys), "none.pth")


@pytest.mark.parametrize("extra, culprit", [
    (["--set", "supernet.topology=ring"], "supernet.topology"),
    (["--set", "data.patch_size=30"], "data.patch_size"),
    (["--preset", "paper-b"], "--data"),
    (["--preset", "nope"], "nope"),
])
def test_inconsistent_config(tmp_path, capsys, extra, culprit):
    one_line_error(*run_prog(search, TINY + extra + ["--out", str(tmp_path / "o")], capsys), culprit)


def test_existing_run_needs_resume_and_train_needs_an_arch(tmp_path, capsys):
    out = tmp_path / "o"
    assert run_prog(search, TINY + ["--set", "run.train_after_search=false", "--out", str(out)], capsys)[0] == 0
    one_line_error(*run_prog(search, TINY + ["--out", str(out)], capsys), "--resume")
    one_line_error(*run_prog(train, TINY + ["--arch", str(tmp_path / "missing.json"), "--out", str(tmp_path / "t")],
                             capsys), "missing.json")
    one_line_error(*run_prog(train, TINY + ["--arch", str(out / "arch.json"), "--init", str(out / "log.csv"),
                                            "--out", str(tmp_path / "t2")], capsys), "log.csv")


def test_nan_loss_stops_with_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    from trilevelnas.training import losses

    real = losses.content_loss
    calls = {"n": 0}

    def poisoned(sr, target):
        calls["n"] += 1
        value = real(sr, target)
        # pretrain: 2 steps x 4 widths = 8 calls; search: 2 calls a step; poison search step 3
        return value * float("nan") if calls["n"] > 12 else value

    monkeypatch.setattr(losses, "content_loss", poisoned)
    out = tmp_path / "o"
    argv = TINY + ["--set", "search.steps=5", "--set", "run.checkpoint_every=1", "--out", str(out)]
    code, cap = run_prog(search, argv, capsys)
    one_line_error(code, cap, "non-finite", "search step 3", "checkpoint.pt", "search step 2")
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["loop"]["phase"] == "search" and state["loop"]["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["supernet"].values() if v.is_floating_point())


def test_subprocess_error_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "trilevelnas.search", "--preset", "smoke", "--data",
                           "/nonexistent/folder", "--out", "/tmp/unused-out-h6"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "/nonexistent/folder" in proc.stderr


def test_train_from_a_saved_model_and_resume(tmp_path, capsys):
    out = tmp_path / "s"
    assert run_prog(search, TINY + ["--out", str(out)], capsys)[0] == 0
    argv = TINY + ["--arch", str(out / "arch.json"), "--init", str(out / "model.pt"), "--set", "train.steps=0"]
    assert run_prog(train, argv + ["--out", str(tmp_path / "t")], capsys)[0] == 0
    from trilevelnas.models import load_model

    a, b = load_model(str(out / "model.pt")), load_model(str(tmp_path / "t" / "model.pt"))
    for va, vb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(va, vb)  # zero steps: the saved model's weights, unchanged
    code, cap = run_prog(train, argv + ["--out", str(tmp_path / "t"), "--resume"], capsys)
    assert code == 0, cap.err


def test_train_init_with_a_teacher_file_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "o"
    assert run_prog(search, TINY + ["--set", "run.train_after_search=false", "--out", str(out)], capsys)[0] == 0
    from trilevelnas.models import RRDBNet

    teacher = tmp_path / "esrgan.pth"
    torch.save({"params_ema": RRDBNet(nf=8, nb=1, gc=4).state_dict()}, teacher)
    one_line_error(*run_prog(train, TINY + ["--arch", str(out / "arch.json"), "--init", str(teacher),
                                            "--out", str(tmp_path / "t")], capsys), "esrgan.pth", "RRDBNet")
