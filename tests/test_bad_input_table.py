"""Every bad input is one named line on stderr with exit status 2, found before the long work starts.

Three tables: every config field (enumerated from the config dataclasses' declared rules, so a new
field is covered automatically) given non-finite, negative, zero, null and wrong-type values through
``--set``; every path argument of the five programs given a missing, an unreadable and a wrong kind
of file; every output argument given a path under a regular file and a read-only folder. Then the
size check (a 20,000-channel network is refused before anything is allocated) and ``--debug``.
Values a field accepts, and permission cases when running as root (root reads and writes anyway),
are listed as skipped with the reason.
"""
import json
import os
import resource
import time

import numpy as np
import pytest
from PIL import Image

from trilevelnas.arch import Architecture
from trilevelnas.cli import evaluate, export, run_main, search, train, upscale
from trilevelnas.models import build, save_model
from trilevelnas.training import build_config
from trilevelnas.training.config import Rule, field_rules

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
ROOT_SKIP = "running as root: permissions do not stop root (the folder-in-place-of-a-file case covers the read error)"
CELL = [["conv3x3", 8], ["conv1x1", 8], ["conv3x3", 8], ["conv1x1", 8], ["conv3x3", 8]]
SMOKE = build_config("smoke")


def run(module, argv, capsys):
    prog = "trilevelnas." + module.__name__.rsplit(".", 1)[-1]  # as python -m trilevelnas.PROG names it
    code = run_main(prog, module.main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(code, err, *names):
    """Exit status 2 and exactly one non-empty stderr line, an error naming every one of ``names``."""
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "error:" in lines[0] and "Traceback" not in err, err
    for name in names:
        assert str(name) in lines[0], (name, lines[0])


# ------------------------------------------------------------------------------- config table
def _numeric_cases(rule: Rule, nullable_note: str) -> list:
    """Cases for an int / float field: (label, text, fragment of the key path, skip reason)."""
    cases = [("nan", "nan", "", None), ("inf", "inf", "", None), ("-inf", "-inf", "", None)]
    for label, value in (("negative", -1), ("zero", 0)):
        typed = float(value) if rule.kind == "float" else value
        reason = None if not rule.allows(typed) else \
            f"{value} is valid here" + (f" ({rule.note})" if rule.note.startswith(f"{value}:") else "")
        cases.append((label, str(value), "", reason))
    cases += [("word", "abc", "", None), ("list", "[1]", "", None), ("bool", "true", "", None)]
    if rule.kind == "int":
        cases.append(("fraction", "2.5", "", None))
        cases.append(("huge", "1e30", "", None))
    cases.append(("null", "null", "", nullable_note if rule.nullable else None))
    return cases


def _list_cases(sec: str, key: str, rule: Rule) -> list:
    item = rule.item

    def first(v):  # a list whose first entry is v (a tuple keeps its length)
        return f"[{v}]" if rule.kind == "list" else f"[{v}, 0.5]"

    cases = [("word", "abc", "", None), ("scalar", "3", "", None), ("unclosed", "[1,", "", None),
             ("strings", first('"x"'), "[0]", None), ("nan-entry", first("nan"), "[0]", None),
             ("inf-entry", first("inf"), "[0]", None), ("null-entry", first("null"), "[0]", None)]
    for label, value in (("negative-entry", -1), ("zero-entry", 0)):
        typed = float(value) if item.kind == "float" else value
        reason = None if not item.allows(typed) else f"{value} is a valid entry" + (
            f" ({item.note})" if item.note else "")
        cases.append((label, first(value), "[0]", reason))
    if rule.kind == "tuple":
        cases += [("short", "[0.5]", "", None), ("long", "[0.5, 0.5, 0.5]", "", None),
                  ("second-nan", "[0.5, nan]", "[1]", None)]
        if item.high is not None:
            cases.append(("at-bound", f"[{item.high}, 0.5]", "[0]", None if item.high_open else "the bound is allowed"))
            cases.append(("above", f"[{item.high + 1}, 0.5]", "[0]", None))
    if rule.increasing:
        cases.append(("decreasing", "[3, 2]", "[1]", None))
        cases.append(("repeated", "[2, 2]", "[1]", None))
    if rule.at_most is not None:
        limit = getattr(getattr(SMOKE, sec), rule.at_most)
        reason = None if limit > 0 else (f"{sec}.{rule.at_most} is 0 in the smoke preset: the schedule of a "
                                         "phase that does not run is not bounded")
        cases.append(("beyond-steps", "[100000000]", "[0]", reason))
    cases.append(("null", "null", "", "null is valid here" if rule.nullable else None))
    return cases


def _cases(sec: str, key: str, rule: Rule) -> list:
    null_note = f"null is valid here ({rule.note})" if rule.note else "null is valid here"
    if rule.kind in ("int", "float"):
        return _numeric_cases(rule, null_note)
    if rule.kind == "bool":
        return [("nan", "nan", "", None), ("inf", "inf", "", None), ("negative", "-1", "", None),
                ("zero", "0", "", "0 is false"), ("two", "2", "", None), ("word", "maybe", "", None),
                ("list", "[1]", "", None), ("null", "null", "", None)]
    if rule.kind in ("list", "tuple"):
        return _list_cases(sec, key, rule)
    if rule.kind == "path":
        text = "any non-empty text names a file (whether it exists is checked by the programs: see the path table)"
        return [("nan", "nan", "", text), ("negative", "-1", "", text), ("zero", "0", "", text),
                ("empty", "", "", None), ("blank", "  ", "", None), ("null", "null", "", null_note)]
    # str: a choice or a free string with a check
    cases = []
    for label, value in (("nan", "nan"), ("inf", "inf"), ("negative", "-1"), ("zero", "0"), ("empty", ""),
                         ("word", "nonsense-value"), ("list", "[1]"), ("null", "null")):
        cases.append((label, value, "", None if not rule.allows(value) else f"{value!r} is valid here"))
    return cases


def _config_table():
    params = []
    for sec, key, rule in field_rules():
        for label, value, fragment, reason in _cases(sec, key, rule):
            marks = [pytest.mark.skip(reason=reason)] if reason else []
            params.append(pytest.param(sec, key, value, fragment, id=f"{sec}.{key}-{label}", marks=marks))
    return params


def test_every_config_field_declares_a_rule():
    seen = {(sec, key) for sec, key, _ in field_rules()}
    assert ("search", "betas") in seen and ("run", "threads") in seen and ("search", "arch_lr") in seen
    assert len(seen) == sum(1 for _ in field_rules())  # no field twice


@pytest.mark.parametrize("sec, key, value, fragment", _config_table())
def test_bad_config_value_is_one_named_line(tmp_path, capsys, sec, key, value, fragment):
    out = tmp_path / "out"
    code, _, err = run(search, ["--preset", "smoke", "--out", out, "--set", f"{sec}.{key}={value}"], capsys)
    assert_one_line(code, err, f"{sec}.{key}{fragment}")
    assert not (out / "config.json").exists() and not (out / "log.csv").exists()


@pytest.mark.parametrize("sets, message", [
    (["search.lr=nan"], "search.lr = nan: must be finite"),
    (["search.arch_lr=nan"], "search.arch_lr = nan: must be finite"),
    (["search.betas=[2.0,0.999]"], "search.betas[0] = 2.0: must lie in [0, 1)"),
    (["search.arch_betas=[0.5, 1]"], "search.arch_betas[1] = 1.0: must lie in [0, 1)"),
    (["train.milestones=[3, 9]"], "train.milestones[1] = 9: must not exceed train.steps = 8"),
    (["supernet.gumbel_tau=0"], "supernet.gumbel_tau = 0.0: must be positive"),
    (["supernet.topology=trellis", "supernet.order_lambda=0.01"], "topology 'trellis' has none"),
    (["supernet.channels=12"], "supernet.channels = 12: must be a multiple of 8"),
    (["data.batch_size=0"], "data.batch_size = 0: must be >= 1"),
    (["search.steps=2.5"], "--set: search.steps = '2.5': expected an integer"),
])
def test_messages_name_the_key_the_value_and_the_rule(sets, message):
    from trilevelnas.errors import UserError

    with pytest.raises(UserError) as info:
        build_config("smoke", sets=sets)
    assert message in str(info.value)


def test_accepted_spellings_still_work():
    cfg = build_config("smoke", sets=["data.augment=FALSE", "run.train_after_search=yes", "supernet.order_lambda=null",
                                      "loss.teacher=none", "search.betas=[0, 0.5]", "train.milestones=[2, 8]",
                                      "search.steps=1e2", "supernet.fixed_path=null", "supernet.order_lambda=None"])
    assert cfg.data.augment is False and cfg.run.train_after_search is True
    assert cfg.supernet.order_lambda is None and cfg.loss.teacher is None
    assert cfg.search.betas == (0.0, 0.5) and cfg.train.milestones == [2, 8] and cfg.search.steps == 100


# --------------------------------------------------------------------------------- path table
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    arch = Architecture.from_dict({"backbone": "B", "path": [0], "channels": 8, "scale": 4, "cells": [CELL]})
    (d / "arch.json").write_text(json.dumps(arch.to_dict()))
    save_model(build(arch), d / "model.pt")
    images = d / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(images / f"im{i}.png")
    (d / "notes.txt").write_text("just some text\n")
    (d / "folder").mkdir()
    (d / "plain").write_text("a regular file\n")
    locked = d / "locked"
    locked.mkdir()
    (locked / "x.png").write_bytes((images / "im0.png").read_bytes())
    locked_file = d / "locked.png"
    locked_file.write_bytes((images / "im0.png").read_bytes())
    readonly = d / "readonly"
    readonly.mkdir()
    for p in (locked, locked_file):
        os.chmod(p, 0)
    os.chmod(readonly, 0o555)
    yield {"dir": d, "arch": d / "arch.json", "model": d / "model.pt", "images": images,
           "image": images / "im0.png", "text": d / "notes.txt", "folder": d / "folder",
           "plain": d / "plain", "locked_dir": locked, "locked_file": locked_file, "readonly": readonly}
    os.chmod(locked, 0o755)
    os.chmod(locked_file, 0o644)
    os.chmod(readonly, 0o755)


def _argv(program, f, out, replace=None, drop=()):
    """A valid command line of ``program`` with option ``replace = (flag, value)`` set."""
    base = {
        search: {"--preset": "smoke", "--out": out / "run"},
        train: {"--preset": "smoke", "--arch": f["arch"], "--out": out / "run"},
        evaluate: {"--model": f["model"], "--data": f["images"], "--no-progress": None},
        upscale: {"--model": f["model"], "-i": f["image"], "-o": out / "sr.png", "--no-progress": None},
        export: {"--model": f["model"], "--format": "torchscript", "-o": out / "m.pt", "--no-check": None},
    }[program]
    opts = dict(base)
    for flag in drop:
        opts.pop(flag, None)
    if replace is not None:
        opts[replace[0]] = replace[1]
    argv = []
    for k, v in opts.items():
        argv += [k] if v is None else [k, v]
    return argv


# (program, flag, what is expected there: "file" | "dir" | "model" | "json" | "image", extra argv)
INPUTS = [
    (search, "--data", "dir", ()), (search, "--config", "json", ()), (search, "--teacher", "model", ()),
    (train, "--arch", "json", ()), (train, "--init", "model", ()), (train, "--data", "dir", ()),
    (train, "--config", "json", ()), (train, "--teacher", "model", ()),
    (evaluate, "--model", "model", ()), (evaluate, "--data", "dir", ()),
    (evaluate, "--gt", "dir", ("--lq", "images")), (evaluate, "--lq", "dir", ("--gt", "images")),
    (upscale, "--model", "model", ()), (upscale, "-i", "image", ()),
    (export, "--model", "model", ()),
]
OUTPUTS = [
    (search, "--out", "dir"), (train, "--out", "dir"), (evaluate, "--json", "file"),
    (evaluate, "--save-dir", "dir"), (upscale, "-o", "file"), (export, "-o", "file"),
]


def _input_cases():
    params = []
    for program, flag, kind, extra in INPUTS:
        name = program.__name__.split(".")[-1]
        cases = ["missing", "under-a-file", "unreadable"]
        if kind == "dir":
            cases.append("a-file-not-a-folder")
        elif kind == "image":  # -i takes a file or a folder of images
            cases += ["a-text-file", "a-folder-without-images"]
        else:
            cases += ["a-folder-not-a-file", "a-text-file"]
        for case in cases:
            marks = [pytest.mark.skip(reason=ROOT_SKIP)] if case == "unreadable" and AS_ROOT else []
            params.append(pytest.param(program, flag, kind, extra, case, id=f"{name} {flag} {case}", marks=marks))
    return params


@pytest.mark.parametrize("program, flag, kind, extra, case", _input_cases())
def test_bad_input_path_is_one_named_line(tmp_path, capsys, files, program, flag, kind, extra, case):
    value = {
        "missing": tmp_path / "does-not-exist",
        "under-a-file": files["plain"] / "inside",
        "unreadable": files["locked_dir"] if kind == "dir" else files["locked_file"],
        "a-file-not-a-folder": files["text"],
        "a-folder-not-a-file": files["folder"],
        "a-text-file": files["text"],
        "a-folder-without-images": files["folder"],
    }[case]
    argv = _argv(program, files, tmp_path, (flag, value), drop=("--data",) if extra else ())
    if extra:  # the other folder of a --gt/--lq pair
        argv += [extra[0], files[extra[1]]]
    started = time.perf_counter()
    code, _, err = run(program, argv, capsys)
    assert_one_line(code, err, value)
    assert time.perf_counter() - started < 30
    assert not (tmp_path / "run" / "config.json").exists()


def _output_cases():
    params = []
    for program, flag, kind in OUTPUTS:
        name = program.__name__.split(".")[-1]
        for case in ("under-a-file", "read-only-folder"):
            marks = [pytest.mark.skip(reason=ROOT_SKIP)] if case == "read-only-folder" and AS_ROOT else []
            params.append(pytest.param(program, flag, kind, case, id=f"{name} {flag} {case}", marks=marks))
    return params


@pytest.mark.parametrize("program, flag, kind, case", _output_cases())
def test_bad_output_path_is_one_named_line(tmp_path, capsys, files, program, flag, kind, case):
    leaf = "out.json" if flag == "--json" else "sr.png" if program is upscale else "m.pt" if kind == "file" else "out"
    parent = files["plain"] if case == "under-a-file" else files["readonly"]
    value = parent / leaf
    code, _, err = run(program, _argv(program, files, tmp_path, (flag, value)), capsys)
    assert_one_line(code, err, parent)
    assert not value.exists()


def test_file_system_errors_name_the_path_and_the_cause(tmp_path, monkeypatch):
    """As root permissions never fail, so the OSError itself is injected."""
    import builtins
    import errno
    import io

    from trilevelnas.errors import UserError
    from trilevelnas.data import list_images
    from trilevelnas.training.config import load_json

    cfg = tmp_path / "c.json"
    cfg.write_text("{}")
    arch = tmp_path / "a.json"
    arch.write_text("{}")
    real_open = builtins.open

    def denied(path, *a, **k):
        if str(path) in (str(cfg), str(arch)):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", denied)
    monkeypatch.setattr(io, "open", denied)  # pathlib opens through io
    with pytest.raises(UserError, match=r"cannot read --config file '.*c\.json': permission denied"):
        load_json(str(cfg), "--config file")
    with pytest.raises(UserError, match=r"cannot read architecture file '.*a\.json': permission denied"):
        Architecture.from_json(arch)
    monkeypatch.undo()
    (tmp_path / "imgs").mkdir()

    def no_listing(path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(os, "listdir", no_listing)
    with pytest.raises(UserError, match=r"cannot list image folder .*imgs: permission denied"):
        list_images(tmp_path / "imgs")


# ------------------------------------------------------------------------------------- sizes
def _huge_arch(path, channels=20000):
    cell = [["conv3x3", channels]] * 5
    path.write_text(json.dumps({"backbone": "B", "path": [0], "channels": channels, "scale": 4, "cells": [cell]}))
    return path


def test_huge_architecture_is_refused_before_anything_is_allocated(tmp_path, capsys):
    arch = _huge_arch(tmp_path / "huge.json")
    run(train, ["--preset", "smoke", "--arch", tmp_path / "none.json", "--out", tmp_path / "warm"], capsys)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    code, _, err = run(train, ["--preset", "smoke", "--arch", arch, "--out", tmp_path / "o"], capsys)
    elapsed = time.perf_counter() - started
    growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert_one_line(code, err, "20000 channels", "GiB", "available")
    assert elapsed < 1.0, elapsed
    assert growth_kib < 200 * 1024, growth_kib
    assert not (tmp_path / "o" / "config.json").exists()


def test_huge_supernet_is_refused_with_the_estimate(tmp_path, capsys):
    code, _, err = run(search, ["--preset", "smoke", "--set", "supernet.channels=20000", "--out", tmp_path / "o"], capsys)
    assert_one_line(code, err, "supernet", "20000 channels", "TiB", "available")


def test_the_refusal_compares_with_what_the_device_has(tmp_path, capsys, monkeypatch):
    from trilevelnas import memory

    monkeypatch.setattr(memory, "available_memory", lambda device: (1 << 20, "on the test machine"))
    code, _, err = run(search, ["--preset", "smoke", "--out", tmp_path / "o"], capsys)
    assert_one_line(code, err, "1.0 MiB is available on the test machine", memory.SKIP_ENV)
    monkeypatch.setenv(memory.SKIP_ENV, "1")
    est = memory.check_training_memory("search", SMOKE, "cpu")
    assert est.total > 1 << 20


@pytest.mark.parametrize("sn", [
    dict(backbone="B", topology="tree", channels=8, n_rir=2, n_up=1, share="ordinal", scale=4),
    dict(backbone="A", topology="tree", channels=8, n_rir=2, n_up=2, share="none", scale=4),
    dict(backbone="B", topology="trellis", channels=16, n_rir=2, n_up=2, share="none", scale=3),
    dict(backbone="A", topology="fixed", channels=8, n_rir=2, n_up=1, share="ordinal", scale=2, fixed_path=[0, 1, 0]),
])
def test_the_estimate_counts_the_parameters_exactly(sn):
    from trilevelnas.memory import model_step, supernet_params
    from trilevelnas.supernet import Supernet, SupernetConfig

    real = sum(p.numel() for p in Supernet(SupernetConfig(**sn)).parameters())
    assert supernet_params(**sn) == real
    arch = Architecture.preset("trilevelnas-a")
    assert model_step(arch, 64, 2).params == sum(p.numel() for p in build(arch).parameters())


# ------------------------------------------------------------------------------------- --debug
def test_debug_prints_the_traceback(tmp_path, capsys):
    code, _, err = run(search, ["--preset", "smoke", "--out", tmp_path / "o", "--set", "search.lr=nan", "--debug"],
                       capsys)
    assert code == 2
    assert "Traceback" in err and "ConfigError" in err  # the setting's error type (a UserError)
    assert err.strip().splitlines()[-1] == "trilevelnas.search: error: search.lr = nan: must be finite"


@pytest.mark.parametrize("program", [search, train, evaluate, upscale, export], ids=lambda m: m.__name__)
def test_every_program_takes_debug(tmp_path, capsys, files, program):
    flag = {search: "--config", train: "--arch", evaluate: "--model", upscale: "--model", export: "--model"}[program]
    argv = _argv(program, files, tmp_path, (flag, tmp_path / "missing")) + ["--debug"]
    code, _, err = run(program, argv, capsys)
    assert code == 2 and "Traceback" in err, err
    assert "missing" in err.strip().splitlines()[-1]
    code, _, err = run(program, argv[:-1], capsys)
    assert_one_line(code, err, "missing")
