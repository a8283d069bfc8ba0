"""Exact resume: a search killed with SIGKILL and resumed with --resume ends with the same
architecture parameters, arch.json and weights as an uninterrupted run of the same seed."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from trilevelnas.cli import run_main, search

ARGS = ["--preset", "smoke", "--no-progress", "--seed", "5", "--set", "pretrain.steps=2",
        "--set", "search.steps=24", "--set", "run.checkpoint_every=2", "--set", "run.train_after_search=false",
        "--set", "data.val_max_images=1"]


def _checkpoint_position(path):
    try:
        state = torch.load(path, weights_only=True)
    except Exception:  # noqa: BLE001 - not written yet
        return None
    return state["loop"]["phase"], state["loop"]["step"]


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    ref = tmp_path / "ref"
    assert run_main("trilevelnas.search", search.main, ARGS + ["--out", str(ref)]) == 0

    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "trilevelnas.search", *ARGS, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        pos = _checkpoint_position(out / "checkpoint.pt") if (out / "checkpoint.pt").exists() else None
        if pos is not None and pos[0] == "search" and pos[1] >= 4:
            proc.send_signal(signal.SIGKILL)
            killed_at = pos
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert killed_at is not None, f"the run ended before it could be killed: {proc.stderr.read()!r}"
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "arch.json").exists()  # it really stopped mid-search

    assert run_main("trilevelnas.search", search.main, ARGS + ["--out", str(out), "--resume"]) == 0
    a = torch.load(ref / "checkpoint.pt", weights_only=True)
    b = torch.load(out / "checkpoint.pt", weights_only=True)
    assert a["arch"].keys() == b["arch"].keys()
    for k in a["arch"]:
        assert torch.equal(a["arch"][k], b["arch"][k]), k
    for k in a["supernet"]:
        assert torch.equal(a["supernet"][k], b["supernet"][k]), k
    assert json.loads((ref / "arch.json").read_text()) == json.loads((out / "arch.json").read_text())
    ref_log = (ref / "log.csv").read_text().splitlines()
    out_log = (out / "log.csv").read_text().splitlines()
    strip = lambda rows: [",".join(r.split(",")[:4]) for r in rows]  # noqa: E731 - drop timings
    assert strip(ref_log) == strip(out_log)


class _Killed(Exception):
    pass


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_interrupted_in_the_training_phase_resumes_exactly(tmp_path, monkeypatch, ema):
    from trilevelnas.training import build_config
    from trilevelnas.training import checkpoint as ckpt
    from trilevelnas.training.search_run import SearchRun
    from trilevelnas.training.distributed import DistContext

    sets = ["pretrain.steps=1", "search.steps=2", "train.steps=20", "run.checkpoint_every=5",
            "data.val_max_images=1", f"train.ema={ema}"]

    def pipeline(out, resume=None):
        cfg = build_config("smoke", sets=sets)
        return SearchRun(cfg, str(out), DistContext(), torch.device("cpu"), resume=resume, progress=False)

    ref = pipeline(tmp_path / "ref")
    ref.run()

    killed = pipeline(tmp_path / "cut")
    real = SearchRun._train_step

    def dying(self, phase):
        step = real(self, phase)

        def wrapped(t):
            if t == 13:
                raise _Killed
            return step(t)
        return wrapped

    monkeypatch.setattr(SearchRun, "_train_step", dying)
    try:
        killed.run()
    except _Killed:
        pass
    monkeypatch.setattr(SearchRun, "_train_step", real)
    state = ckpt.read(str(tmp_path / "cut" / "checkpoint.pt"))
    assert state.schedule.phase == "train" and state.schedule.step == 10
    resumed = pipeline(tmp_path / "cut", resume=state)
    resumed.run()
    for (k, a), b in zip(ref.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert (state.weights.ema is not None) == (ema > 0)
    if ema:  # the weight average, restored from the checkpoint, ends where the uninterrupted one does
        for (k, a), b in zip(ref.ema.module.state_dict().items(), resumed.ema.module.state_dict().values()):
            assert torch.equal(a, b), k
        assert not torch.equal(next(ref.ema.module.parameters()), next(ref.model.parameters()))


# -- #24: everything a run writes resumes exactly, and what resumes is checked ----------------------

# rows every 3 steps, checkpoints every 2 (means mid-row); long enough to be signalled mid-search
ROWS = ARGS + ["--set", "run.log_every=3", "--set", "search.steps=40"]


def _rows(path):
    """log.csv rows without the wall-clock column."""
    import csv

    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k != "time"} for r in csv.DictReader(f)]


def _run_until(out, stop_signal, args=ROWS, at=5):
    """Start a search into ``out`` and send ``stop_signal`` once its checkpoint is at search step
    >= ``at``; returns the process's exit status."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "trilevelnas.search", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    deadline = time.time() + 240
    sent = False
    while time.time() < deadline and proc.poll() is None:
        pos = _checkpoint_position(out / "checkpoint.pt") if (out / "checkpoint.pt").exists() else None
        if pos is not None and pos[0] == "search" and pos[1] >= at:
            proc.send_signal(stop_signal)
            sent = True
            break
        time.sleep(0.02)
    proc.wait(timeout=120)
    assert sent, f"the run ended before the signal: {proc.stderr.read()!r}"
    return proc.returncode, proc.stderr.read()


def test_log_rows_after_a_kill_or_a_stop_equal_an_uninterrupted_runs(tmp_path):
    """F1 and SIGTERM: killed (SIGKILL) or stopped (SIGTERM, SIGINT) mid-row and resumed, the
    run's log.csv equals an uninterrupted run's in every column but wall time, and so do its
    architecture tensors; SIGTERM saves a checkpoint at the step it stopped, as SIGINT does."""
    ref = tmp_path / "ref"
    assert run_main("trilevelnas.search", search.main, ROWS + ["--out", str(ref)]) == 0
    want = _rows(ref / "log.csv")
    a = torch.load(ref / "checkpoint.pt", weights_only=True)
    for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
        out = tmp_path / sig.name
        code, err = _run_until(out, sig)
        if sig == signal.SIGKILL:
            assert code == -signal.SIGKILL
        else:  # a clean stop: the state saved after the step in flight, one line, resume hint
            assert code == 130 and "Traceback" not in err, (sig, err)
            assert "the state is saved" in err and "--resume" in err, (sig, err)
        assert run_main("trilevelnas.search", search.main, ROWS + ["--out", str(out), "--resume"]) == 0
        assert _rows(out / "log.csv") == want, sig.name
        b = torch.load(out / "checkpoint.pt", weights_only=True)
        for k in a["arch"]:
            assert torch.equal(a["arch"][k], b["arch"][k]), (sig.name, k)


def test_a_damaged_log_is_rewritten_from_the_checkpoint(tmp_path):
    """F7: log.csv made unreadable (binary garbage, a missing column, text in a number) between
    a kill and the resume: the run resumes and its log equals an uninterrupted run's."""
    ref = tmp_path / "ref"
    assert run_main("trilevelnas.search", search.main, ROWS + ["--out", str(ref)]) == 0
    for i, damage in enumerate([b"\xff\xfe\x00garbage", b"phase,step\nsearch,1\n", b"global_step,phase\nabc,search\n"]):
        out = tmp_path / f"cut{i}"
        _run_until(out, signal.SIGKILL)
        (out / "log.csv").write_bytes(damage)
        assert run_main("trilevelnas.search", search.main, ROWS + ["--out", str(out), "--resume"]) == 0
        assert _rows(out / "log.csv") == _rows(ref / "log.csv")


def _finished(tmp_path, name="run", extra=()):
    out = tmp_path / name
    assert run_main("trilevelnas.search", search.main, ARGS + list(extra) + ["--out", str(out)]) == 0
    return out


def test_checkpoint_fields_of_the_wrong_type_or_range_are_one_line_errors(tmp_path, capsys):
    """F6: a checkpoint with wrong field types or values (resealed, so only the schema can tell)
    or with a flipped bit (caught by its digest) is refused with one line and exit 2."""
    from trilevelnas.fileio import save_torch

    out = _finished(tmp_path)
    path = out / "checkpoint.pt"
    good = torch.load(path, weights_only=True)
    assert good["version"] == 2 and len(good["sha256"]) == 64

    def loop(**kw):
        return lambda s: s["loop"].update(kw)

    def model_key(s):
        s["supernet"]["not.a.weight"] = torch.zeros(1)

    cases = {
        "step -3": (loop(step=-3), "loop 'step'"),
        "step 10**6": (loop(step=10 ** 6, global_step=10 ** 6), "past the phase"),
        "phase bogus": (loop(phase="bogus"), "loop 'phase'"),
        "version 99": (lambda s: s.update(version=99), "version 99"),
        "history not a list": (lambda s: s.update(history=3), "'history'"),
        "rng not a dict": (lambda s: s.update(rng=[1, 2]), "'rng'"),
        "timing text": (loop(timing={"search": "x"}), "loop 'timing'"),
        "unexpected weight": (model_key, "'supernet' does not fit"),
        "program": (lambda s: s.update(program=5), "'program'"),
    }
    for name, (change, expected) in cases.items():
        state = torch.load(path, weights_only=True)
        state["loop"]["phase"], state["loop"]["step"] = "search", 3  # resumable: mid-search
        state["loop"]["done"] = ["pretrain"]
        change(state)
        bad = tmp_path / f"bad-{name.replace(' ', '_').replace('*', '')}"
        bad.mkdir()
        save_torch(state, str(bad / "checkpoint.pt"), seal=True)
        (bad / ".trilevelnas-run").write_text("{}")
        code = run_main("trilevelnas.search", search.main, ["--out", str(bad), "--resume", "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2, (name, err)
        assert len(err.strip().splitlines()) == 1 and expected in err and "Traceback" not in err, (name, err)
    flipped = tmp_path / "flipped"
    flipped.mkdir()
    state = torch.load(path, weights_only=True)
    next(iter(state["supernet"].values())).view(-1)[0] += 1e-3  # the digest is not renewed
    torch.save(state, flipped / "checkpoint.pt")
    assert run_main("trilevelnas.search", search.main, ["--out", str(flipped), "--resume"]) == 2
    assert "does not match its digest" in capsys.readouterr().err


def _images(folder, n=5, seed=0):
    import numpy as np
    from PIL import Image

    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"im{i}.png")


def test_changed_training_images_are_refused_on_resume_unless_allowed(tmp_path, capsys):
    """F14: an image replaced, deleted or added between a kill and the resume is refused with one
    line naming the change; --allow-data-change continues on the images as they are."""
    import numpy as np
    from PIL import Image

    data = tmp_path / "data"
    _images(data)
    args = ROWS + ["--data", str(data)]
    out = tmp_path / "run"
    _run_until(out, signal.SIGKILL, args=args)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(data / "im1.png")  # replaced
    os.unlink(data / "im2.png")  # deleted
    code = run_main("trilevelnas.search", search.main, args + ["--out", str(out), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "training images changed" in err and "1 removed, 1 changed" in err, err
    assert len(err.strip().splitlines()) == 1
    assert run_main("trilevelnas.search", search.main,
                    args + ["--out", str(out), "--resume", "--allow-data-change"]) == 0


def test_train_resume_keeps_its_init_and_refuses_another_arch_or_init(tmp_path, capsys):
    """F13: a train run started from --init and resumed without it still records train_init
    "inherited"; a different --arch, or an --init other than the one it started from, is
    refused on resume with one line; the same --init again is accepted."""
    from trilevelnas.cli import train
    from trilevelnas.arch import Architecture

    src = _finished(tmp_path, "search", ["--set", "search.steps=4"])
    arch = src / "arch.json"
    other = tmp_path / "other.json"
    a = Architecture.from_json(str(arch))
    other.write_text(json.dumps(Architecture(a.backbone, a.path, a.cells, channels=a.channels,
                                             scale=a.scale).to_dict() | {"path": []} | {"cells": []}))
    out = tmp_path / "train"
    base = ["--preset", "smoke", "--no-progress", "--set", "train.steps=6", "--set", "run.checkpoint_every=2",
            "--set", "data.val_max_images=1", "--out", str(out)]
    assert run_main("trilevelnas.train", train.main, base + ["--arch", str(arch), "--init", str(src / "checkpoint.pt")]) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["init"]["inherited"] is True
    state["loop"]["phase"], state["loop"]["step"], state["loop"]["done"] = "train", 2, []
    from trilevelnas.fileio import save_torch

    save_torch(state, str(out / "checkpoint.pt"), seal=True)  # as if killed at step 2
    capsys.readouterr()
    assert run_main("trilevelnas.train", train.main, base + ["--arch", str(other), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "--arch differs" in err and len(err.strip().splitlines()) == 1, err
    assert run_main("trilevelnas.train", train.main, base + ["--arch", str(arch), "--resume", "--init", str(other)]) == 2
    assert "is not the file the run" in capsys.readouterr().err
    assert run_main("trilevelnas.train", train.main, base + ["--arch", str(arch), "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["train_init"] == "inherited"
