"""``evaluate --metrics ...,lpips,niqe``: the perceptual metrics of :mod:`trilevelnas.iqa` scored
on every image (model, bicubic, and the reference's output), from the files the flags name;
without a file, one line naming the flag."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trilevelnas import iqa
from trilevelnas.cli import evaluate
from trilevelnas.data import EmbeddedDataset
from trilevelnas.data.io import tensor_to_image
from trilevelnas.inference import upscale_tensor
from trilevelnas.zoo import load_pretrained

from program_helpers import one_line_error, run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A random AlexNet backbone (a torchvision-format state dict) and a NIQE model fitted on the
    embedded training photographs."""
    folder = tmp_path_factory.mktemp("iqa")
    torch.manual_seed(0)
    features, _ = iqa._features("alex")
    backbone = folder / "alexnet.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, backbone)
    params = folder / "niqe.npz"
    _fit(params)
    return str(backbone), str(params)


def _fit(path):
    from trilevelnas.data.embedded import embedded_images

    iqa.fit_niqe_model([img for _, img in embedded_images("train")]).save(path)


def test_lpips_and_niqe_scored_per_image_and_for_bicubic(files, tmp_path, capsys):
    backbone, params = files
    out = tmp_path / "eval.json"
    code, stdout, err = run(evaluate, ["--metrics", "psnr,lpips,niqe", "--lpips-backbone", backbone,
                                       "--niqe-params", params, "--json", out, "--no-progress"], capsys)
    assert code == 0, err
    assert "LPIPS" in stdout and "NIQE" in stdout
    result = json.loads(out.read_text())
    for key in ("psnr_y", "lpips", "niqe", "bicubic_lpips", "bicubic_niqe"):
        assert np.isfinite(result[key]), key
    # the first image's scores are those of iqa on the model's own output
    model, sample = load_pretrained(), EmbeddedDataset("val", scale=4)[0]
    sr = tensor_to_image(upscale_tensor(model, sample["lq"][None])[0])
    gt = tensor_to_image(sample["gt"])
    row = result["images"][0]
    assert row["lpips"] == pytest.approx(iqa.lpips(sr, gt, iqa.LPIPS.from_files(backbone)), rel=1e-5)
    assert row["niqe"] == pytest.approx(iqa.niqe(sr, iqa.NIQEModel.from_file(params), crop_border=4), rel=1e-9)


@pytest.mark.parametrize("metric, flag", [("lpips", "--lpips-backbone"), ("niqe", "--niqe-params")])
def test_a_perceptual_metric_without_its_file_is_one_line(metric, flag, capsys):
    code, _, err = run(evaluate, ["--metrics", f"psnr,{metric}", "--no-progress"], capsys)
    one_line_error(code, err, metric, flag)
