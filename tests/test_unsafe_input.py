"""Inputs that could run code, lose data or corrupt a run: each is refused with a one-line error
(exit status 2) or handled safely, and nothing of the user's is lost."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from trilevelnas.arch import Architecture
from trilevelnas.cli import evaluate, export, run_main, search, train, upscale
from trilevelnas.models import build, save_model
from trilevelnas.training import checkpoint as ckpt

TINY = ["--preset", "smoke", "--no-progress", "--seed", "1", "--set", "pretrain.steps=1",
        "--set", "search.steps=2", "--set", "run.train_after_search=false", "--set", "data.val_max_images=1"]
CELL = [["conv3x3", 8], ["conv1x1", 8], ["conv3x3", 8], ["conv1x1", 8], ["conv3x3", 8]]


def run(module, argv, capsys):
    code = run_main(module.__name__, module.main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *names: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "error:" in lines[0] and "Traceback" not in err, err
    for name in names:
        assert str(name) in lines[0], (name, err)


class _Payload:
    """Unpickling this object runs ``touch <marker>``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    arch = Architecture.from_dict({"backbone": "B", "path": [0], "channels": 8, "scale": 4, "cells": [CELL]})
    arch_path = d / "arch.json"
    arch_path.write_text(json.dumps(arch.to_dict()))
    save_model(build(arch), d / "model.pt")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(d / "lr.png")
    return {"dir": d, "arch": arch_path, "model": d / "model.pt", "image": d / "lr.png"}


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_crafted_pickle_runs_nothing_in_any_program(tmp_path, tiny_model, capsys, legacy):
    marker = tmp_path / "PWNED"
    bad = tmp_path / "evil.pt"
    torch.save({"loop": _Payload(marker), "rng": {}, "version": 1, "program": "search", "config": {}},
               bad, _use_new_zipfile_serialization=not legacy)
    resume_dir = tmp_path / "resume"
    resume_dir.mkdir()
    (resume_dir / "checkpoint.pt").write_bytes(bad.read_bytes())
    cases = [
        (train, ["--preset", "smoke", "--arch", tiny_model["arch"], "--init", bad, "--out", tmp_path / "t"]),
        (search, TINY + ["--out", resume_dir, "--resume"]),
        (search, TINY + ["--teacher", bad, "--out", tmp_path / "s"]),
        (evaluate, ["--model", bad, "--data", tiny_model["dir"]]),
        (upscale, ["--model", bad, "-i", tiny_model["image"], "-o", tmp_path / "sr.png"]),
        (export, ["--model", bad, "--format", "onnx", "-o", tmp_path / "m.onnx"]),
    ]
    for module, argv in cases:
        code, _, err = run(module, argv, capsys)
        assert not marker.exists(), f"{module.__name__} ran the payload"
        assert code == 2, (module.__name__, err)
        one_line_error(err, "evil.pt" if module is not search or "--teacher" in argv else "checkpoint.pt")


def test_checkpoints_hold_only_plain_values(tmp_path):
    out = tmp_path / "run"
    assert run_main("trilevelnas.search", search.main, TINY + ["--out", str(out)]) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)  # raises on any pickled object
    for key in ckpt.PROGRAM_KEYS:
        assert key in state
    with pytest.raises(TypeError, match="checkpoint"):
        ckpt.save_atomic({"loop": {}, "rng": {}, "bad": object()}, str(tmp_path / "x.pt"))


def test_upscale_refuses_to_overwrite_its_input(tmp_path, tiny_model, capsys):
    img = tmp_path / "x.png"
    img.write_bytes(tiny_model["image"].read_bytes())
    before = img.read_bytes()
    code, _, err = run(upscale, ["--model", tiny_model["model"], "-i", img, "-o", img], capsys)
    assert code == 2 and img.read_bytes() == before
    one_line_error(err, str(img), "--overwrite")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.png").write_bytes(before)
    code, _, err = run(upscale, ["--model", tiny_model["model"], "-i", folder, "-o", folder], capsys)
    assert code == 2 and (folder / "a.png").read_bytes() == before
    one_line_error(err, "a.png")
    # explicitly allowed
    code, _, err = run(upscale, ["--model", tiny_model["model"], "-i", img, "-o", img, "--overwrite"], capsys)
    assert code == 0, err
    assert Image.open(img).size == (40, 48)


def test_upscale_folder_processes_good_images_and_lists_bad_ones(tmp_path, tiny_model, capsys):
    src = tmp_path / "in"
    src.mkdir()
    (src / "good.png").write_bytes(tiny_model["image"].read_bytes())
    (src / "broken.png").write_bytes(tiny_model["image"].read_bytes()[:60])
    code, _, err = run(upscale, ["--model", tiny_model["model"], "-i", src, "-o", tmp_path / "out",
                                 "--no-progress"], capsys)
    assert code == 2
    assert (tmp_path / "out" / "good.png").exists() and not (tmp_path / "out" / "broken.png").exists()
    last = err.strip().splitlines()[-1]
    assert "error:" in last and "broken.png" in last and "1 of 2" in last and "Traceback" not in err


def test_decompression_bomb_is_named_with_its_declared_size(tmp_path, tiny_model, capsys):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    bomb = tmp_path / "bomb.png"
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    code, _, err = run(upscale, ["--model", tiny_model["model"], "-i", bomb, "-o", tmp_path / "o.png"], capsys)
    assert code == 2
    one_line_error(err, "bomb.png", "100000 x 100000")


@pytest.mark.parametrize("program", ["search", "train"])
def test_out_holding_a_users_files_is_never_written_into(tmp_path, capsys, program):
    """F2: an --out with the user's own files (and no run of ours) is refused with one line and
    left byte-identical; --overwrite lets the run in; a run folder of ours is reused as before."""
    out = tmp_path / "mine"
    out.mkdir()
    files = {"config.json": "my config", "log.csv": "my,log", "model.pt": "my model",
             "summary.json": "{}", "notes.txt": "keep"}
    for name, text in files.items():
        (out / name).write_text(text)
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(Architecture("A", [0], [CELL], channels=8, scale=4).to_dict()))
    argv = TINY + ["--out", out] if program == "search" else \
        ["--preset", "smoke", "--no-progress", "--arch", arch, "--set", "train.steps=2", "--out", out]
    module = search if program == "search" else train
    code, _, err = run(module, argv, capsys)
    assert code == 2
    one_line_error(err, str(out), "--overwrite")
    assert sorted(os.listdir(out)) == sorted(files)
    assert {n: (out / n).read_text() for n in files} == files
    code, _, err = run(module, argv + ["--overwrite"], capsys)
    assert code == 0, err
    assert (out / ".trilevelnas-run").is_file() and (out / "notes.txt").read_text() == "keep"
    # an empty folder, and a folder holding a finished run of ours, need no --overwrite
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(module, [a if a != out else empty for a in argv], capsys)[0] == 0
    os.unlink(out / "checkpoint.pt")  # a finished run's folder: the marker says it is ours
    assert run(module, argv, capsys)[0] == 0


def test_hard_link_planted_at_the_lock_is_refused_and_its_target_untouched(tmp_path, capsys):
    """S3: a hard link at --out/.lock to a victim file: the run refuses with one line naming it,
    and the victim keeps its bytes (the lock is never truncated or written before the check)."""
    out = tmp_path / "run"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious data\n")
    os.link(victim, out / ".lock")
    code, _, err = run(search, TINY + ["--out", out], capsys)
    assert code == 2
    one_line_error(err, ".lock", "hard link")
    assert victim.read_text() == "precious data\n"
    # a symbolic link there is removed, not followed
    os.unlink(out / ".lock")
    os.symlink(victim, out / ".lock")
    assert run(search, TINY + ["--out", out], capsys)[0] == 0
    assert victim.read_text() == "precious data\n" and not (out / ".lock").is_symlink()


def test_stale_temporary_files_are_removed_at_start(tmp_path, capsys):
    """Interrupted atomic writes leave .tmp-*-checkpoint.pt behind; the next run in the folder
    (holding its lock) removes them, and leaves other files alone."""
    out = tmp_path / "run"
    assert run(search, TINY + ["--set", "run.checkpoint_every=1", "--out", out], capsys)[0] == 0
    (out / ".tmp-abc123-checkpoint.pt").write_bytes(b"torn")
    (out / ".tmp-x-log.csv").write_bytes(b"torn")
    os.unlink(out / "checkpoint.pt")
    assert run(search, TINY + ["--out", out], capsys)[0] == 0
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]


def test_second_run_into_the_same_out_is_refused(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from trilevelnas.fileio import RunLock; "
                               f"RunLock({str(out)!r}); print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = subprocess.run([sys.executable, "-m", "trilevelnas.search", *TINY, "--out", str(out)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2
        one_line_error(proc.stderr, str(out), f"pid {holder.pid}")
        assert not (out / "log.csv").exists() and not (out / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # the lock dies with its holder: the folder is free again
    assert run_main("trilevelnas.search", search.main, TINY + ["--out", str(out)]) == 0


def test_outputs_replace_symlinks_instead_of_writing_through_them(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    outside = tmp_path / "precious"
    outside.mkdir()
    names = ["log.csv", "config.json", "summary.json", "summary.txt", "arch.json", "checkpoint.pt",
             "curves.png", "log.csv.tmp", "config.json.tmp"]
    for name in names:
        (outside / name).write_text("keep me")
        os.symlink(outside / name, out / name)
    os.unlink(out / "checkpoint.pt")  # a checkpoint would mean "resume"; test it separately below
    # a folder of files that are not ours is refused ...
    assert run_main("trilevelnas.search", search.main, TINY + ["--out", str(out)]) == 2
    assert sorted(os.listdir(out)) == sorted(n for n in names if n != "checkpoint.pt")
    # ... and with --overwrite the links there are replaced, never written through
    assert run_main("trilevelnas.search", search.main, TINY + ["--out", str(out), "--overwrite"]) == 0
    for name in names:
        assert (outside / name).read_text() == "keep me", name
    for name in ["log.csv", "config.json", "summary.json", "summary.txt", "arch.json", "checkpoint.pt"]:
        assert (out / name).is_file() and not (out / name).is_symlink(), name


def test_failed_checkpoint_save_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    ckpt.save_atomic({"loop": {"step": 1}, "rng": {}}, str(path))

    def full_disk(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    from trilevelnas.errors import UserError

    with pytest.raises(UserError, match=r"cannot write .*checkpoint.pt: no space left"):
        ckpt.save_atomic({"loop": {"step": 2}, "rng": {}}, str(path))
    monkeypatch.undo()
    assert ckpt.load(str(path))["loop"]["step"] == 1
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt"]


def test_sigint_saves_a_checkpoint_and_exits_130(tmp_path):
    out = tmp_path / "run"
    args = ["--preset", "smoke", "--no-progress", "--seed", "3", "--set", "pretrain.steps=1",
            "--set", "search.steps=400", "--set", "run.checkpoint_every=1000",
            "--set", "run.train_after_search=false", "--set", "data.val_max_images=1", "--set", "run.log_every=1"]
    proc = subprocess.Popen([sys.executable, "-m", "trilevelnas.search", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        log = out / "log.csv"
        if log.exists() and sum(1 for ln in log.read_text().splitlines() if ",search," in ln) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "--resume" in lines[0], err
    state = ckpt.load(str(out / "checkpoint.pt"))
    assert state["loop"]["phase"] == "search" and 3 <= state["loop"]["step"] < 400
    assert f"search step {state['loop']['step']}" in lines[0]


def _finished_run(tmp_path):
    out = tmp_path / "run"
    assert run_main("trilevelnas.search", search.main, TINY + ["--out", str(out)]) == 0
    return out


def test_resume_with_conflicting_options_names_them_and_changes_nothing(tmp_path, capsys):
    out = _finished_run(tmp_path)
    config_before = (out / "config.json").read_bytes()
    ckpt_before = (out / "checkpoint.pt").read_bytes()
    code, _, err = run(search, TINY + ["--out", out, "--resume", "--set", "search.lr=0.01",
                                       "--set", "supernet.channels=16"], capsys)
    assert code == 2
    one_line_error(err, "search.lr", "0.01", "supernet.channels", "16")
    code, _, err = run(search, ["--preset", "paper-b", "--out", out, "--resume"], capsys)
    assert code == 2
    one_line_error(err, "--preset paper-b", "smoke")
    assert (out / "config.json").read_bytes() == config_before
    assert (out / "checkpoint.pt").read_bytes() == ckpt_before
    # what may change on resume (where and how it runs) is accepted
    code, _, err = run(search, TINY + ["--out", out, "--resume", "--device", "cpu"], capsys)
    assert code == 0, err


def test_resume_from_incomplete_or_misplaced_checkpoint(tmp_path, capsys):
    out = _finished_run(tmp_path)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    del state["rng"]
    torch.save(state, out / "checkpoint.pt")
    code, _, err = run(search, TINY + ["--out", out, "--resume"], capsys)
    assert code == 2
    one_line_error(err, "checkpoint.pt", "'rng'")
    other = tmp_path / "dir_ckpt"
    (other / "checkpoint.pt").mkdir(parents=True)
    code, _, err = run(search, TINY + ["--out", other], capsys)
    assert code == 2
    one_line_error(err, "checkpoint.pt", "folder")


def test_unavailable_device_is_named_with_what_is_available(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run(search, TINY + ["--out", tmp_path / "r", "--device", "cuda"], capsys)
    assert code == 2
    one_line_error(err, "'cuda'", "available: cpu")
    assert not (tmp_path / "r" / "config.json").exists()


def test_ablate_out_holding_a_users_files_is_refused(tmp_path, capsys):
    """F2 for ablate: its --out gets results.json, results.md and a plot; a folder of the user's
    files is refused with one line unless --overwrite, and left as it was."""
    from trilevelnas.cli import ablate

    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.md").write_text("my notes")
    code, _, err = run(ablate, ["--study", "order-lambda", "--out", out], capsys)
    assert code == 2
    one_line_error(err, str(out), "--overwrite")
    assert os.listdir(out) == ["results.md"] and (out / "results.md").read_text() == "my notes"
