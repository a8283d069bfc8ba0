"""Teacher fidelity (trilevelnas/evaluation.py): the student scored against a reference
network's output beside bicubic, checked against the metrics computed directly; the evaluate
program's --reference; the summary and picture a distilling search writes."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from trilevelnas.arch import Architecture
from trilevelnas.cli import evaluate, run_main, search
from trilevelnas.data import EmbeddedDataset, imresize
from trilevelnas.data.io import tensor_to_image
from trilevelnas.evaluation import evaluate_model
from trilevelnas.metrics import psnr, ssim
from trilevelnas.models import RRDBNet, build, save_model

from test_teacher_cache import make_teacher, write_images

CELL = [["conv3x3", 8], ["conv1x1", 8], ["conv3x3", 8], ["conv1x1", 8], ["conv3x3", 8]]


def _student(seed=0):
    torch.manual_seed(seed)
    return build(Architecture("A", [0], [CELL], channels=8, scale=4)).eval()


def test_scores_against_the_reference_match_a_direct_computation(tmp_path):
    data = EmbeddedDataset("val", scale=4)
    student = _student()
    teacher = RRDBNet(nf=8, nb=1, gc=4, scale=4)
    make_teacher(tmp_path / "t.pth")
    teacher.load_state_dict(torch.load(tmp_path / "t.pth", weights_only=True))
    teacher.eval()
    res = evaluate_model(student, data, scale=4, reference=teacher, keep_images=True)
    for i, row in enumerate(res["images"]):
        s = data[i]
        with torch.no_grad():
            sr = tensor_to_image(student(s["lq"][None])[0])
            ref = tensor_to_image(teacher(s["lq"][None])[0])
        bic = tensor_to_image(imresize(s["lq"].double(), 4))
        gt = tensor_to_image(s["gt"])
        assert row["psnr_y_vs_ref"] == pytest.approx(psnr(sr, ref, 4, True))
        assert row["ssim_y_vs_ref"] == pytest.approx(ssim(sr, ref, 4, True))
        assert row["bicubic_psnr_y_vs_ref"] == pytest.approx(psnr(bic, ref, 4, True))
        assert row["ref_psnr_y"] == pytest.approx(psnr(ref, gt, 4, True))
        assert np.array_equal(row["pictures"]["reference"], ref)
    assert res["psnr_y_vs_ref"] == pytest.approx(np.mean([r["psnr_y_vs_ref"] for r in res["images"]]))
    # the reference scored against itself is exact; against HR it scores as the model would
    own = evaluate_model(teacher, data, scale=4, reference=teacher)
    assert own["psnr_y_vs_ref"] == float("inf") and own["ref_psnr_y"] == pytest.approx(own["psnr_y"])


def test_evaluate_reference_option_prints_writes_and_pictures(tmp_path, capsys):
    student = _student()
    save_model(student, tmp_path / "s.pt")
    weights = make_teacher(tmp_path / "t.pth")
    out = tmp_path / "shots"
    code = run_main("evaluate", evaluate.main, ["--model", str(tmp_path / "s.pt"), "--reference", f"teacher:{weights}",
                                                "--json", str(tmp_path / "e.json"), "--save-dir", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0 and "against the reference's output" in printed
    res = json.loads((tmp_path / "e.json").read_text())
    assert {"psnr_y_vs_ref", "bicubic_psnr_y_vs_ref", "ref_psnr_y", "ssim_y_vs_ref"} <= set(res)
    assert res["reference"]["compression"] == pytest.approx(res["reference"]["gflops"] / res["gflops"])
    pic = np.asarray(Image.open(out / "side_by_side.png"))
    assert pic.shape[1] == 4 * 256 + 3 * 4 and pic.shape[0] == 3 * (256 + 4)  # 4 columns x 3 images
    for bad in ("teacher", "teacher:", "student:x.pth"):
        assert run_main("evaluate", evaluate.main, ["--model", str(tmp_path / "s.pt"), "--reference", bad]) == 2
        assert "teacher:FILE" in capsys.readouterr().err


def test_a_distilling_search_reports_its_fidelity(tmp_path, capsys):
    data = tmp_path / "data"
    write_images(data)
    weights = make_teacher(tmp_path / "t.pth")
    out = tmp_path / "run"
    argv = ["--preset", "smoke", "--no-progress", "--set", "pretrain.steps=2", "--set", "search.steps=2",
            "--set", "train.steps=4", "--set", "data.val_max_images=2", "--data", str(data),
            "--teacher", weights, "--out", str(out)]
    assert run_main("search", search.main, argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    t = summary["teacher"]
    assert t["params"] == sum(p.numel() for p in RRDBNet(nf=8, nb=1, gc=4, scale=4).parameters())
    assert t["compression"] == pytest.approx(t["gflops"] / summary["gflops"])
    assert t["student_vs_hr"]["psnr_y"] == pytest.approx(summary["psnr_y"], abs=1e-6)
    assert len(t["images"]) == 2 and "vs teacher output (held-out)" in printed
    assert (out / "fidelity.png").is_file()


def test_cached_reference_outputs_equal_the_live_teacher(tmp_path):
    """The summary reads the teacher's validation outputs through the teacher cache: they agree
    with running the teacher, to the uint8 level, and so do the scores."""
    from trilevelnas.data import teacher_cache as tc
    from trilevelnas.evaluation import reference_from_cache
    from trilevelnas.models import load_teacher
    from trilevelnas.training.components import Subset

    weights = make_teacher(tmp_path / "t.pth")
    teacher = load_teacher(weights)
    data = Subset(EmbeddedDataset("val", scale=4), range(2))
    output = reference_from_cache(tc.TeacherCache(str(tmp_path / "c"), teacher, weights, 4), data)
    for i in range(len(data)):
        s = data[i]
        with torch.no_grad():
            live = tensor_to_image(teacher(s["lq"][None])[0]).astype(int)
        assert np.abs(output(i, s).astype(int) - live).max() <= 1
    student = _student()
    a = evaluate_model(student, data, scale=4, reference=teacher)
    b = evaluate_model(student, data, scale=4, reference_output=output)
    assert b["psnr_y_vs_ref"] == pytest.approx(a["psnr_y_vs_ref"], abs=0.01)
