"""Bounds on what the programs take (issue #24, F3-F5, F10-F12, F15): each out-of-bound input is one
named line on stderr with exit status 2, found before the long work starts.

- ``run.threads`` at most the cores the process may use (libgomp crashed on 100,000);
- JSON (``--config``, ``--set`` values, ``--arch``) nested at most 64 deep (a RecursionError before);
- integer literals of thousands of digits refused naming the key (a ValueError before);
- export: the onnx extra named when onnx is missing, the opset range, the tracing size within memory;
- ablate: each variant's results keyed by its full config, a corrupt variant file named;
- upscale / evaluate: ``--tile`` 0 or at least 16 and at least the tile pad (``--tile 1`` ran for minutes).
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import pytest
from PIL import Image

from trilevelnas.arch import Architecture
from trilevelnas.cli import ablate, evaluate, export, run_main, search, train, upscale
from trilevelnas.devices import available_cores
from trilevelnas.errors import UserError
from trilevelnas.models import build, save_model
from trilevelnas.settings import MAX_JSON_DEPTH, HugeInteger, JSONTooDeep, parse_json
from trilevelnas.training import build_config
from trilevelnas.training.config import check_paths

CELL = [["conv3x3", 8], ["conv1x1", 8], ["conv3x3", 8], ["conv1x1", 8], ["conv3x3", 8]]
HUGE = "1" * 5000  # more digits than Python converts (4300)
DEEP = "[" * 100_000 + "]" * 100_000


def run(module, argv, capsys):
    code = run_main(module.__name__, module.main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(code, err, *names):
    """Exit status 2 and exactly one non-empty stderr line, an error naming every one of ``names``."""
    assert code == 2, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err[-2000:]
    assert "error:" in lines[0] and "Traceback" not in err, err[-2000:]
    assert len(lines[0]) < 600, lines[0]  # a value is shown cut short, not in full
    for name in names:
        assert str(name) in lines[0], (name, lines[0])


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    arch = Architecture.from_dict({"backbone": "B", "path": [0], "channels": 8, "scale": 4, "cells": [CELL]})
    save_model(build(arch), d / "model.pt")
    return d / "model.pt"


# ------------------------------------------------------------------------------ F3: run.threads
def test_threads_beyond_the_available_cores_are_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(search, ["--preset", "smoke", "--out", out, "--set", "run.threads=100000"], capsys)
    assert_one_line(code, err, "run.threads = 100000", f"at most {available_cores()}")
    assert not (out / "config.json").exists()
    # a config may describe another machine: the bound is checked when a run starts
    cfg = build_config("smoke", sets=["run.threads=100000"])
    with pytest.raises(UserError, match="run.threads = 100000: must be at most"):
        check_paths(cfg)
    for n in (0, 1, available_cores()):
        check_paths(build_config("smoke", sets=[f"run.threads={n}"]))


# -------------------------------------------------------------------------- F4: nesting depth
def test_parse_json_bounds_the_nesting_depth():
    ok = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert parse_json(ok) == json.loads(ok)
    with pytest.raises(JSONTooDeep, match="nested deeper than 64 levels") as info:
        parse_json("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    assert isinstance(info.value, json.JSONDecodeError) and info.value.pos == MAX_JSON_DEPTH
    with pytest.raises(JSONTooDeep):
        parse_json('{"a": ' * 1000 + "1" + "}" * 1000)
    # brackets inside strings (escaped quotes included) are text, not nesting
    text = json.dumps({"note": "[" * 500 + '\\"{' * 100, "x": [[1]]})
    assert parse_json(text) == json.loads(text)


def test_deeply_nested_config_file_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "deep.json"
    cfg.write_text('{"search": {"betas": ' + DEEP + "}}")
    code, _, err = run(search, ["--preset", "smoke", "--out", tmp_path / "o", "--config", cfg], capsys)
    assert_one_line(code, err, cfg, "nested deeper than 64 levels")


def test_deeply_nested_set_value_is_one_line(tmp_path, capsys):
    code, _, err = run(search, ["--preset", "smoke", "--out", tmp_path / "o", "--set", "search.betas=" + DEEP], capsys)
    assert_one_line(code, err, "search.betas", "nested deeper than 64 levels")


def test_deeply_nested_architecture_file_is_one_line(tmp_path, capsys):
    arch = tmp_path / "deep.json"
    arch.write_text('{"backbone": "B", "path": ' + DEEP + ', "cells": []}')
    code, _, err = run(train, ["--preset", "smoke", "--out", tmp_path / "o", "--arch", arch], capsys)
    assert_one_line(code, err, arch, "nested deeper than 64 levels")


# ------------------------------------------------------------------------- F5: integer size
def test_parse_json_keeps_huge_integers_unconverted():
    value = parse_json('{"a": -' + HUGE + ', "b": 12345678901234567890}')
    assert isinstance(value["a"], HugeInteger) and repr(value["a"]) == "<a 5000-digit negative integer>"
    assert value["b"] == 12345678901234567890


@pytest.mark.parametrize("where, text, name", [
    ("config", '{"run": {"seed": ' + HUGE + "}}", "run.seed"),
    ("config", '{"train": {"milestones": [' + HUGE + "]}}", "train.milestones[0]"),
    ("config", '{"search": {"lr": ' + HUGE + "}}", "search.lr"),
    ("set", "run.seed=" + HUGE, "run.seed"),
    ("set", "search.steps=-" + HUGE, "search.steps"),
    ("set", "train.milestones=[" + HUGE + "]", "train.milestones[0]"),
], ids=["config-int", "config-list-entry", "config-float", "set-int", "set-negative-int", "set-list-entry"])
def test_a_5000_digit_integer_is_one_line_naming_the_key(tmp_path, capsys, where, text, name):
    argv = ["--preset", "smoke", "--out", tmp_path / "o"]
    if where == "config":
        (tmp_path / "c.json").write_text(text)
        argv += ["--config", tmp_path / "c.json"]
    else:
        argv += ["--set", text]
    code, _, err = run(search, argv, capsys)
    assert_one_line(code, err, name)
    assert "too large" in err or "finite" in err  # a float field: 1e5000 is inf


def test_a_5000_digit_integer_in_an_architecture_is_one_line(tmp_path, capsys):
    arch = tmp_path / "a.json"
    arch.write_text('{"backbone": "B", "path": [0], "channels": ' + HUGE + ', "cells": []}')
    code, _, err = run(train, ["--preset", "smoke", "--out", tmp_path / "o", "--arch", arch], capsys)
    assert_one_line(code, err, arch, "channels", "5000-digit")


# ------------------------------------------------------------------------------------ F10: export
def _export(model_file, tmp_path, *extra):
    return ["--model", model_file, "--format", "onnx", "-o", tmp_path / "m.onnx", *extra]


@pytest.mark.parametrize("missing, extra", [("onnx", ()), ("onnx", ("--no-check",))])  # onnxruntime: test_cli_habits
def test_export_without_onnx_names_the_extra(tmp_path, capsys, monkeypatch, model_file, missing, extra):
    monkeypatch.setitem(sys.modules, missing, None)  # import fails as if it were not installed
    code, _, err = run(export, _export(model_file, tmp_path, *extra), capsys)
    assert_one_line(code, err, f"the {missing} package", "pip install 'trilevelnas[onnx]'")
    assert not (tmp_path / "m.onnx").exists()


def test_the_onnx_extra_is_declared():
    import tomllib

    with open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml"), "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    assert set(extras["onnx"]) == {"onnx", "onnxruntime"}


@pytest.mark.parametrize("opset", [16, 99999, -1])
def test_export_opset_out_of_range_is_one_line(tmp_path, capsys, model_file, opset):
    code, _, err = run(export, _export(model_file, tmp_path, "--opset", opset, "--no-check"), capsys)
    assert_one_line(code, err, f"--opset {opset}", f"[17, {export.max_opset()}]")
    assert not (tmp_path / "m.onnx").exists()


def test_export_huge_size_is_refused_before_allocating(tmp_path, capsys, model_file):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    code, _, err = run(export, _export(model_file, tmp_path, "--size", 100000), capsys)
    assert_one_line(code, err, "--size 100000", "available")
    assert time.perf_counter() - started < 10
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024
    assert not (tmp_path / "m.onnx").exists()


def test_export_size_is_compared_with_the_memory_available(tmp_path, capsys, monkeypatch, model_file):
    from trilevelnas import memory

    monkeypatch.setattr(memory, "available_memory", lambda device: (1 << 20, "on the test machine"))
    argv = ["--model", model_file, "--format", "torchscript", "-o", tmp_path / "m.pt", "--size", 256, "--no-check"]
    code, _, err = run(export, argv, capsys)
    assert_one_line(code, err, "--size 256", "1.0 MiB is available on the test machine", memory.SKIP_ENV)
    assert not (tmp_path / "m.pt").exists()
    monkeypatch.setenv(memory.SKIP_ENV, "1")
    code, _, err = run(export, argv, capsys)
    assert code == 0, err


def test_export_memory_grows_with_the_pixels(model_file):
    from trilevelnas.models import load_model

    model = load_model(model_file)
    small, large = export.export_memory(model, 32), export.export_memory(model, 64)
    weights = sum(p.numel() * 4 for p in model.parameters())
    # the 32x32 example and its 4x output alone hold 3*32*32*4 + 3*128*128*4 bytes
    assert small > 3 * weights + 3 * 32 * 32 * 4 + 3 * 128 * 128 * 4
    assert 3.5 < (large - 3 * weights) / (small - 3 * weights) < 4.5


# ------------------------------------------------------------------------------- F11, F12: ablate
def _fake_search(calls):
    """search.main writing what a finished run writes (config.json as the real program builds it,
    a summary whose PSNR depends on the seed), without running anything."""
    from trilevelnas.cli.program import add_common_arguments

    def main(argv):
        p = argparse.ArgumentParser()
        add_common_arguments(p)
        args = p.parse_args(argv)
        flags = {"data": {"root": args.data}, "loss": {"teacher": args.teacher}, "run": {"seed": args.seed}}
        cfg = build_config(args.preset, args.config, args.sets, flags)
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "config.json"), "w") as f:
            json.dump(cfg.to_dict(), f)
        summary = {"architecture": {"path": [0, 1]}, "params": 100, "gflops": 0.5,
                   "psnr_y": 20.0 + cfg.run.seed, "bicubic_psnr_y": 19.0,
                   "decisions": {"undecided": 0, "used": 3}, "train_init": "search"}
        with open(os.path.join(args.out, "summary.json"), "w") as f:
            json.dump(summary, f)
        calls.append(args.out)
        return 0

    return main


def _study(out, capsys, *extra):
    code, _, err = run(ablate, ["--study", "order-lambda", "--out", out, "--no-progress", *extra], capsys)
    return code, err


def test_ablate_reruns_a_variant_whose_config_changed(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(search, "main", _fake_search(calls))
    out = tmp_path / "study"
    assert _study(out, capsys, "--seed", "1")[0] == 0 and len(calls) == 3
    first = json.loads((out / "results.json").read_text())["rows"]
    assert [r["psnr_y"] for r in first] == [21.0] * 3
    assert _study(out, capsys, "--seed", "1")[0] == 0 and len(calls) == 3  # the same config: reused
    assert json.loads((out / "results.json").read_text())["rows"] == first
    assert _study(out, capsys, "--seed", "2")[0] == 0 and len(calls) == 6  # another seed: rerun
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["psnr_y"] for r in rows] == [22.0] * 3
    assert {r["out"] for r in rows}.isdisjoint(r["out"] for r in first)  # beside the old results
    assert all(os.path.isfile(os.path.join(r["out"], "summary.json")) for r in first)
    assert _study(out, capsys, "--seed", "2", "--set", "search.lr=0.002")[0] == 0 and len(calls) == 9
    assert {r["out"] for r in json.loads((out / "results.json").read_text())["rows"]}.isdisjoint(calls[:6])
    # settings that do not change the results (threads, log cadence) reuse them
    assert _study(out, capsys, "--seed", "2", "--set", "run.threads=1", "--set", "run.log_every=3")[0] == 0
    assert len(calls) == 9


def test_ablate_corrupt_variant_summary_is_one_line(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(search, "main", _fake_search(calls))
    out = tmp_path / "study"
    assert _study(out, capsys)[0] == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    summary = os.path.join(rows[1]["out"], "summary.json")
    with open(summary, "w") as f:
        f.write('{"params": 1')
    code, err = _study(out, capsys)
    assert_one_line(code, err, summary, "not valid JSON", "delete the folder")
    with open(summary, "w") as f:
        f.write('{"params": 1}')  # valid JSON, not a finished run's summary
    code, err = _study(out, capsys)
    assert_one_line(code, err, rows[1]["out"], "'architecture'")
    assert len(calls) == 3  # nothing was rerun or deleted behind the user's back
    assert os.path.isfile(summary)


def test_ablate_refuses_a_variant_config_changed_by_hand(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(search, "main", _fake_search([]))
    out = tmp_path / "study"
    assert _study(out, capsys)[0] == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    config = os.path.join(rows[0]["out"], "config.json")
    data = json.loads(open(config).read())
    data["search"]["lr"] = 0.5
    with open(config, "w") as f:
        json.dump(data, f)
    code, err = _study(out, capsys)
    assert_one_line(code, err, config, "not", "as its folder says")


# ------------------------------------------------------------------------------- F15: tile bound
@pytest.fixture
def image(tmp_path):
    path = tmp_path / "im.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("tile, pad, named", [
    (1, None, "--tile 1"), (15, None, "--tile 15"), (-3, None, "--tile -3"),
    (16, 20, "the tile pad 20"), (16, -1, "--tile-pad -1"),
])
def test_upscale_tile_below_the_bound_is_one_line(tmp_path, capsys, model_file, image, tile, pad, named):
    argv = ["-i", image, "-o", tmp_path / "sr.png", "--model", model_file, "--no-progress", "--tile", tile]
    if pad is not None:
        argv += ["--tile-pad", pad]
    started = time.perf_counter()
    code, _, err = run(upscale, argv, capsys)
    assert_one_line(code, err, named)
    assert time.perf_counter() - started < 10
    assert not (tmp_path / "sr.png").exists()


def test_upscale_tile_below_the_default_pad_is_one_line(tmp_path, capsys, image):
    """The default pad is the receptive-field radius, more than 16 LR pixels for this network."""
    from trilevelnas.inference import receptive_radius

    deep = [["resblock", 8]] * 4 + [["conv3x3", 8]]
    arch = Architecture.from_dict({"backbone": "B", "path": [0, 0], "channels": 8, "scale": 4, "cells": [deep, deep]})
    save_model(build(arch), tmp_path / "deep.pt")
    assert receptive_radius(build(arch)) > 16
    code, _, err = run(upscale, ["-i", image, "-o", tmp_path / "sr.png", "--model", tmp_path / "deep.pt",
                                 "--no-progress", "--tile", 16], capsys)
    assert_one_line(code, err, "--tile 16", "the tile pad")


def test_upscale_tile_at_the_bound_runs(tmp_path, capsys, model_file, image):
    code, _, err = run(upscale, ["-i", image, "-o", tmp_path / "sr.png", "--model", model_file, "--no-progress",
                                 "--tile", 16, "--tile-pad", 4], capsys)
    assert code == 0, err
    assert Image.open(tmp_path / "sr.png").size == (160, 160)


def test_evaluate_tile_below_the_bound_is_one_line(tmp_path, capsys, model_file, image):
    code, _, err = run(evaluate, ["--model", model_file, "--data", image.parent, "--no-progress", "--tile", 1], capsys)
    assert_one_line(code, err, "--tile 1")
