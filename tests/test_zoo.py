"""Issue #27, the model zoo: every shipped card's numbers are what ``evaluate`` measures now on the
embedded held-out photographs (and against the teacher for a student, when the teacher is
installed); the files stay small and match their cards; ``upscale``/``evaluate`` take no model,
``-n NAME`` and ``--list-models``; cards are written by ``python -m trilevelnas.zoo --write-card``."""
import json
import os
import tomllib

import numpy as np
import pytest
import torch

from trilevelnas import zoo
from trilevelnas.arch import Architecture
from trilevelnas.cli import evaluate, run_main, upscale
from trilevelnas.data import EmbeddedDataset, read_image, write_image
from trilevelnas.data.io import tensor_to_image, to_float
from trilevelnas.errors import UserError
from trilevelnas.evaluation import evaluate_model
from trilevelnas.inference import upscale_tensor
from trilevelnas.models import RRDBNet, build, save_model
from trilevelnas.cli.zoo import main as zoo_main
from trilevelnas.zoo import cards as zoo_cards

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CARDS = zoo.list_models()
NAMES = [c["name"] for c in CARDS]
STUDENTS = [c["name"] for c in CARDS if c.get("teacher")]
KEYS = ("psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y")


# tiny convolutions: one thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


from program_helpers import one_line_error, run  # noqa: E402


def close(card_value, measured, key):
    tol = 1e-4 if "ssim" in key else 0.01
    return abs(card_value - measured) <= tol


# ------------------------------------------------------------------------------ the shipped cards
def test_one_default_model_is_shipped():
    assert CARDS, "no model is shipped in trilevelnas/zoo"
    assert sum(bool(c.get("default")) for c in CARDS) == 1, [c["name"] for c in CARDS if c.get("default")]
    assert zoo.default_name() == NAMES[0]


def test_a_stand_in_is_shipped_only_until_a_real_model_is():
    """The stand-in default (trained briefly so that the zoo works before the real models are in
    place) goes once a real model ships."""
    real = [c["name"] for c in CARDS if not c.get("stand_in")]
    stand_ins = [c["name"] for c in CARDS if c.get("stand_in")]
    assert not (real and stand_ins), f"remove the stand-in model(s) {stand_ins}: real ones are shipped ({real})"
    for c in CARDS:
        assert bool(c.get("stand_in")) == ("STAND-IN" in c["description"]), c["name"]


@pytest.mark.parametrize("name", NAMES)
def test_card_file_is_small_and_is_the_file_measured(name):
    card = zoo.card(name)
    path = zoo.model_path(name)
    size = os.path.getsize(path)
    assert size < zoo_cards.MAX_BYTES, f"{name}: {size} bytes"
    assert size == card["bytes"]
    assert zoo_cards._sha256(path) == card["sha256"], f"{name}.pt changed since its card was written"
    for key in ("description", "params", "gflops", "heldout", "training"):
        assert card.get(key) not in (None, ""), key
    assert card["training"]["data"] and card["training"]["recipe"]
    assert card["heldout"]["images"] == ["chelsea", "coffee", "camera"]
    if card.get("teacher"):
        t = card["teacher"]
        assert t["licence"] and t["notice"] and card["vs_teacher"]
        if t["name"] == "realesrgan-x4plus":
            assert t["licence"] == "BSD-3-Clause" and "Xintao Wang" in t["notice"]


@pytest.mark.parametrize("name", NAMES)
def test_card_numbers_are_reproduced_by_evaluate(name, tmp_path, capsys):
    """``evaluate -n NAME`` on the embedded held-out photographs gives the card's numbers."""
    card = zoo.card(name)
    out = tmp_path / "r.json"
    code, _, err = run(evaluate, ["-n", name, "--device", "cpu", "--no-progress", "--json", out], capsys)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["params"] == card["params"]
    assert abs(result["gflops"] - card["gflops"]) <= 1e-3
    assert result["model"] == os.path.abspath(zoo.model_path(name))
    for key in KEYS:
        assert close(card["heldout"][key], result[key], key), (key, card["heldout"][key], result[key])
    for row, measured in zip(card["heldout"]["per_image"], result["images"]):
        assert row["name"] == measured["name"]
        for key in KEYS:
            assert close(row[key], measured[key], key), (row["name"], key)


@pytest.fixture(scope="module")
def teacher_outputs():
    """Each teacher's outputs on the embedded validation photographs, computed once per teacher
    (x4plus on CPU: about a minute for the three images)."""
    outputs = {}

    def get(teacher: dict):
        name = teacher["name"]
        if name not in outputs:
            if name not in zoo_cards.TEACHERS:
                pytest.skip(f"teacher {name!r} is a file the zoo does not know how to find")
            try:
                path = zoo_cards.teacher_file(name)
            except UserError as exc:
                pytest.skip(f"teacher not installed: {exc}")
            from trilevelnas.inference import load_model_file

            net = load_model_file(path)
            data = EmbeddedDataset("val", 4)
            with torch.no_grad():
                outputs[name] = [tensor_to_image(upscale_tensor(net, data[i]["lq"][None], scale=4)[0])
                                 for i in range(len(data))]
        return outputs[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("name", STUDENTS or [pytest.param(None, marks=pytest.mark.skip(
    reason="no student distilled from a teacher is shipped yet"))])
def test_student_fidelity_to_teacher_is_reproduced(name, teacher_outputs):
    """The card's PSNR/SSIM against the teacher's output (and the teacher's against HR) are what
    ``evaluate --reference teacher:FILE`` measures: the same :func:`evaluate_model`, with the
    teacher run once per module."""
    card = zoo.card(name)
    outs = teacher_outputs(card["teacher"])
    result = evaluate_model(zoo.load_pretrained(name), EmbeddedDataset("val", 4), scale=4,
                            reference_output=lambda i, sample: outs[i])
    for key in KEYS:
        assert close(card["vs_teacher"][key], result[key + "_vs_ref"], key), (key, card["vs_teacher"][key])
    for key in ("psnr_y", "ssim_y"):
        assert close(card["teacher"][key], result["ref_" + key], key), key


def test_readme_zoo_table_is_generated_from_the_cards():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    assert zoo_cards.README_BEGIN in text, "README lacks the zoo table"
    block = text[text.index(zoo_cards.README_BEGIN) + len(zoo_cards.README_BEGIN):text.index(zoo_cards.README_END)]
    assert block.strip() == zoo_cards.markdown_table(CARDS).strip(), \
        "the README's zoo table is stale: python -m trilevelnas.zoo --readme README.md"


def test_package_data_ships_the_zoo():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        data = tomllib.load(f)["tool"]["setuptools"]["package-data"]
    assert {"*.pt", "*.json", "*.txt"} <= set(data["trilevelnas.zoo"])


# ----------------------------------------------------------------------------- the programs
@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    write_image(str(path), (rng.random((20, 24, 3)) * 255).astype(np.uint8))
    return path


def test_upscale_with_no_model_uses_the_default(photo, tmp_path, capsys):
    out = tmp_path / "out.png"
    code, _, err = run(upscale, ["-i", photo, "-o", out, "--device", "cpu"], capsys)
    assert code == 0, err
    net = zoo.load_pretrained()
    x = torch.from_numpy(to_float(read_image(str(photo)).rgb).transpose(2, 0, 1).copy())[None]
    with torch.no_grad():
        expected = tensor_to_image(upscale_tensor(net, x, scale=4)[0])
    # --runtime auto may run channels-last (within 1e-5 of eager): equal but for a rare rounding tie
    diff = np.abs(read_image(str(out)).rgb.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_evaluate_with_no_model_uses_the_default(tmp_path, capsys):
    out = tmp_path / "r.json"
    code, _, err = run(evaluate, ["--device", "cpu", "--no-progress", "--json", out, "--metrics", "psnr"], capsys)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["model"] == os.path.abspath(zoo.model_path(zoo.default_name()))
    assert close(result["psnr_y"], CARDS[0]["heldout"]["psnr_y"], "psnr_y")


def test_upscale_by_name_equals_by_file(photo, tmp_path, capsys):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert run(upscale, ["-i", photo, "-o", a, "-n", NAMES[0], "--device", "cpu"], capsys)[0] == 0
    assert run(upscale, ["-i", photo, "-o", b, "--model-name", NAMES[0], "--device", "cpu"], capsys)[0] == 0
    np.testing.assert_array_equal(read_image(str(a)).rgb, read_image(str(b)).rgb)


@pytest.mark.parametrize("module", [upscale, evaluate])
def test_unknown_name_and_both_model_options_are_one_line_errors(module, photo, tmp_path, capsys):
    io = ["-i", photo, "-o", tmp_path / "o.png"] if module is upscale else []
    code, _, err = run(module, io + ["-n", "no-such-model"], capsys)
    one_line_error(code, err, "no-such-model", *NAMES)
    code, _, err = run(module, io + ["-n", NAMES[0], "--model", photo], capsys)
    one_line_error(code, err, "--model", "-n", "not both")


@pytest.mark.parametrize("module", [upscale, evaluate])
def test_list_models_prints_every_card(module, capsys):
    code, out, err = run(module, ["--list-models"], capsys)
    assert code == 0, err
    for c in CARDS:
        assert c["name"] in out and f"{c['params']:,} parameters" in out and f"{c['gflops']:.3f} GFLOPs" in out
        assert f"PSNR-Y {c['heldout']['psnr_y']:.2f} dB" in out and c["training"]["recipe"] in out
        if c.get("teacher"):
            assert c["teacher"]["licence"] in out and f"{c['vs_teacher']['psnr_y']:.2f} dB" in out
    assert "(default)" in out


def test_upscale_still_requires_input_and_output(capsys):
    code, _, err = run(upscale, ["-o", "x.png"], capsys)
    one_line_error(code, err, "-i/--input")


# -------------------------------------------------------------------------- writing cards
@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("zoo-model")
    torch.manual_seed(0)
    cell = [["conv3x3", 8], ["resblock", 8], ["dwsblock", 8], ["conv1x1", 8], ["conv3x3", 8]]
    net = build(Architecture.from_dict({"backbone": "B", "path": [1, 0], "channels": 8, "scale": 4,
                                        "cells": [cell]}))
    save_model(net, d / "model.pt")
    teacher = RRDBNet(nf=8, nb=1, gc=4, scale=4)
    save_model(teacher, d / "teacher.pt")
    return d


def test_write_card_measures_the_model_and_the_zoo_api_reads_it(small_model, tmp_path, capsys):
    zdir = tmp_path / "zoo"
    argv = ["--zoo-dir", zdir, "--write-card", "tiny-student", small_model / "model.pt",
            "--description", "a test student", "--recipe", "trilevelnas train ...", "--data", "nothing",
            "--teacher", small_model / "teacher.pt", "--teacher-licence", "CC0 test teacher"]
    code = run_main("python -m trilevelnas.zoo", zoo_main, [str(a) for a in argv])
    assert code == 0, capsys.readouterr().err
    card = zoo.card("tiny-student", zdir)
    assert card["training"] == {"data": "nothing", "recipe": "trilevelnas train ..."}
    assert card["teacher"]["licence"] == "CC0 test teacher" and card["vs_teacher"]["psnr_y"] > 0
    assert card["card_command"].startswith("python -m trilevelnas.zoo ")
    assert os.path.isfile(zdir / "tiny-student.pt")
    with pytest.raises(UserError, match="no default model"):
        zoo.default_name(zdir)
    # the numbers are those evaluate_model gives with the teacher as reference
    net = zoo.load_pretrained("tiny-student", zdir)
    from trilevelnas.inference import load_model_file

    result = evaluate_model(net, EmbeddedDataset("val", 4), scale=4,
                            reference=load_model_file(small_model / "teacher.pt"))
    for key in KEYS:
        assert close(card["heldout"][key], result[key], key)
        assert close(card["vs_teacher"][key], result[key + "_vs_ref"], key)
    # a second model made default; then re-measured without MODEL.pt keeps texts and the flag
    zoo_cards.write_card(dict(card, name="tiny-b", file="tiny-b.pt", default=True), small_model / "model.pt", zdir)
    assert zoo.default_name(zdir) == "tiny-b" and zoo.model_names(zdir) == ["tiny-b", "tiny-student"]
    with pytest.raises(UserError, match="give it again with --teacher FILE"):
        zoo_main(["--zoo-dir", str(zdir), "--write-card", "tiny-b"])
    assert zoo_main(["--zoo-dir", str(zdir), "--write-card", "tiny-b", "--teacher", str(small_model / "teacher.pt")]) == 0
    again = zoo.card("tiny-b", zdir)
    assert again["default"] and again["description"] == "a test student" and again["params"] == card["params"]
    assert again["teacher"]["licence"] == "CC0 test teacher" and again["training"]["data"] == "nothing"
    capsys.readouterr()


def _not_measured(model_file, teacher_file):
    pytest.fail("a refused model was measured")


def test_write_card_refuses_a_big_file_and_a_bad_name(tmp_path):
    big = tmp_path / "big.pt"
    big.write_bytes(b"\0" * zoo_cards.MAX_BYTES)
    with pytest.raises(UserError, match="under 1024 KB"):
        zoo_cards.make_card("big", str(big), evaluate=_not_measured, description="d", recipe="r", data="x")
    with pytest.raises(UserError, match="lower-case"):
        zoo_cards.make_card("Bad Name", str(big), evaluate=_not_measured, description="d", recipe="r", data="x")


def test_unknown_name_from_the_api_names_the_known_ones():
    with pytest.raises(UserError) as info:
        zoo.load_pretrained("no-such-model")
    assert all(n in str(info.value) for n in NAMES)
