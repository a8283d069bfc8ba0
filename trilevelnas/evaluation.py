"""Scoring SR models on whole images: PSNR/SSIM on Y against HR (BasicSR convention) with the
bicubic baseline beside them, and, given a reference network (a distillation teacher), the
student's fidelity to that network's output.

A teacher's output is a deterministic function of the LR image, so how close a student comes to
it measures the distillation itself: ``psnr_y_vs_ref`` (student against the teacher's output)
beside ``bicubic_psnr_y_vs_ref`` (bicubic against the same output) says how much of the teacher
the student reproduces, and ``ref_psnr_y`` (teacher against HR) what the teacher itself scores.
Every image is rounded to uint8 before the metrics, as BasicSR does.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
import torch
from torch import nn

from .data.imresize import imresize
from .data.io import tensor_to_image, write_image
from .errors import UserError
from .inference import upscale_tensor
from .metrics import psnr, ssim

__all__ = ["evaluate_model", "cost_of", "side_by_side", "reference_from_cache", "METRICS", "PERCEPTUAL",
           "CHANNELS", "check_metrics", "metric_key"]

#: metric name → function(img, ref, crop_border, y_channel) (BasicSR's definitions, :mod:`.metrics`)
METRICS = {"psnr": psnr, "ssim": ssim}
#: the perceptual metrics of :mod:`.iqa`, which need a model file (``iqa_models`` of
#: :func:`evaluate_model`): LPIPS (full-reference, on RGB, no border crop, as BasicSR's script)
#: and NIQE (no-reference, on Y, the border cropped). Lower is better for both; keys carry no channel.
PERCEPTUAL = ("lpips", "niqe")
#: ``channel`` → measured on BT.601 Y (``"y"``, BasicSR's ``test_y_channel: true``) or on RGB
CHANNELS = ("y", "rgb")


def metric_key(metric: str, channel: str) -> str:
    """The result key of ``metric``: ``psnr_y``, ``ssim_rgb``, ...; ``lpips`` and ``niqe`` as they are."""
    return metric if metric in PERCEPTUAL else f"{metric}_{channel}"


def check_metrics(metrics, channel: str) -> tuple[str, ...]:
    """The metric names of ``metrics`` (a sequence, or a comma-separated string), checked against
    :data:`METRICS` and ``channel`` against :data:`CHANNELS`; UserError naming a wrong one."""
    names = [m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str) else metrics)]
    names = [m for m in names if m]
    unknown = [m for m in names if m not in METRICS and m not in PERCEPTUAL]
    if unknown or not names:
        raise UserError(f"--metrics {','.join(names)!r}: expected a comma-separated list of "
                        f"{', '.join([*METRICS, *PERCEPTUAL])}" + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    if channel not in CHANNELS:
        raise UserError(f"--channel {channel!r}: expected one of {', '.join(CHANNELS)}")
    return tuple(dict.fromkeys(names))

#: ``reference_output(index, sample) -> HxWx3 uint8``: the reference network's output of a sample.
ReferenceOutput = Callable[[int, dict], np.ndarray]


def evaluate_model(model: nn.Module, dataset, *, scale: int, crop_border: int | None = None,
                   device="cpu", tile: int = 0, tile_pad: int | None = None, save_dir: str | None = None,
                   progress: bool = False, reference: nn.Module | None = None,
                   reference_output: ReferenceOutput | None = None, ref_tile: int = 0,
                   ref_tile_pad: int | None = None, keep_images: bool = False,
                   metrics=("psnr", "ssim"), channel: str = "y", iqa_models: dict | None = None) -> dict:
    """PSNR/SSIM (Y channel) of ``model`` and of bicubic upscaling on every sample of ``dataset``.

    Returns ``{"images": [{"name", "psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y"}],
    "psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y", "scale", "crop_border"}`` (means over
    images). With a ``reference`` network (or ``reference_output``, which supplies its outputs,
    e.g. from a cache) every row and the means also hold ``psnr_y_vs_ref`` / ``ssim_y_vs_ref``
    (the model against the reference's output), ``bicubic_psnr_y_vs_ref`` /
    ``bicubic_ssim_y_vs_ref`` and ``ref_psnr_y`` / ``ref_ssim_y`` (the reference against HR).
    ``keep_images``: each row also keeps its ``"pictures"`` (bicubic, model, reference, HR uint8
    arrays) for :func:`side_by_side`.

    ``metrics`` (a subset of :data:`METRICS`, default both) and ``channel`` (``"y"``, default, or
    ``"rgb"``: BasicSR's ``test_y_channel: false``) choose what is measured; every key above then
    reads ``<metric>_<channel>`` (``psnr_rgb``, ``bicubic_ssim_rgb``, ``ref_psnr_rgb``, ...), and
    only the chosen metrics appear. ``lpips`` / ``niqe`` (:data:`PERCEPTUAL`) need their model in
    ``iqa_models`` (an :class:`~trilevelnas.iqa.LPIPS` / :class:`~trilevelnas.iqa.NIQEModel`);
    NIQE, a no-reference score, has no ``_vs_ref`` key.
    """
    from tqdm import tqdm

    crop = scale if crop_border is None else crop_border
    metrics = check_metrics(metrics, channel)
    y_channel = channel == "y"

    iqa_models = iqa_models or {}
    missing = [m for m in metrics if m in PERCEPTUAL and m not in iqa_models]
    if missing:
        raise UserError(f"--metrics {missing[0]} needs its model file (evaluate --{missing[0]}-"
                        f"{'backbone' if missing[0] == 'lpips' else 'params'} FILE; docs/toolkit.md)")

    def score(m: str, img, ref) -> float:
        from . import iqa

        if m == "lpips":
            return iqa.lpips(img, ref, iqa_models[m])
        if m == "niqe":
            return iqa.niqe(img, iqa_models[m], crop_border=crop)
        return METRICS[m](img, ref, crop, y_channel)

    def measure(prefix: str, img, ref, suffix: str = "") -> dict:
        return {f"{prefix}{metric_key(m, channel)}{suffix}": score(m, img, ref) for m in metrics
                if not (m == "niqe" and suffix)}

    with_ref = reference is not None or reference_output is not None
    rows = []
    for i in tqdm(range(len(dataset)), desc="evaluate", unit="image", disable=not progress):
        sample = dataset[i]
        lq = sample["lq"][None].to(device)
        sr_img = tensor_to_image(upscale_tensor(model, lq, scale=scale, tile=tile, tile_pad=tile_pad)[0])
        gt = tensor_to_image(sample["gt"])
        if sr_img.shape != gt.shape:
            raise UserError(f"{sample['name']}: model output {sr_img.shape[:2]} does not match "
                            f"the GT size {gt.shape[:2]} (scale {scale})")
        bic = tensor_to_image(imresize(sample["lq"].double(), scale))
        row = {"name": sample["name"], **measure("", sr_img, gt), **measure("bicubic_", bic, gt)}
        ref = None
        if with_ref:
            if reference_output is not None:
                ref = reference_output(i, sample)
            else:
                ref = tensor_to_image(upscale_tensor(reference, lq.to(next(reference.parameters()).device),
                                                     scale=scale, tile=ref_tile, tile_pad=ref_tile_pad)[0])
            if ref.shape != gt.shape:
                raise UserError(f"{sample['name']}: the reference's output {ref.shape[:2]} does not match "
                                f"the GT size {gt.shape[:2]} (scale {scale})")
            row.update({**measure("", sr_img, ref, "_vs_ref"), **measure("bicubic_", bic, ref, "_vs_ref"),
                        **measure("ref_", ref, gt)})
        if keep_images:
            row["pictures"] = {"bicubic": bic, "model": sr_img, "reference": ref, "hr": gt}
        rows.append(row)
        if save_dir:
            write_image(os.path.join(save_dir, sample["name"] + ".png"), sr_img)
    keys = [k for k in rows[0] if k not in ("name", "pictures")] if rows else []
    result = {"images": rows}
    result.update({k: float(np.mean([r[k] for r in rows])) for k in keys})
    result.update({"scale": scale, "crop_border": crop})
    return result


def cost_of(model: nn.Module) -> dict:
    """``{"params", "gflops"}`` of ``model`` at a 256x256 LR input (the paper's convention)."""
    from . import profile

    cost = profile(model)
    return {"params": int(cost["params"]), "gflops": float(cost["gflops"])}


def side_by_side(rows: list[dict], path: str, crop: int = 128, zoom: int = 2) -> None:
    """Write a PNG with one line per image of ``rows`` (from :func:`evaluate_model` with
    ``keep_images``): the same ``crop x crop`` HR window (the image's centre) of bicubic | model |
    reference | HR, each enlarged ``zoom`` times with nearest neighbours, 4-pixel white gaps."""
    lines = []
    for row in rows:
        pics = row["pictures"]
        h, w = pics["hr"].shape[:2]
        c = min(crop, h, w)
        y, x = (h - c) // 2, (w - c) // 2
        tiles = [pics[k][y:y + c, x:x + c] for k in ("bicubic", "model", "reference", "hr") if pics[k] is not None]
        tiles = [np.kron(t, np.ones((zoom, zoom, 1), dtype=t.dtype)) for t in tiles]
        gap = np.full((c * zoom, 4, 3), 255, np.uint8)
        line = tiles[0]
        for t in tiles[1:]:
            line = np.concatenate([line, gap, t], axis=1)
        lines.append(line)
    width = max(line.shape[1] for line in lines)
    lines = [np.pad(line, ((0, 4), (0, width - line.shape[1]), (0, 0)), constant_values=255) for line in lines]
    write_image(path, np.concatenate(lines, axis=0))


def reference_from_cache(cache, dataset) -> ReferenceOutput:
    """A :data:`ReferenceOutput` reading the teacher outputs of ``dataset``'s images from a
    :class:`~trilevelnas.data.teacher_cache.TeacherCache` (computing a missing one: one teacher
    pass per image, reused by later runs). ``dataset`` may be a ``Subset`` of a cacheable set."""
    base = getattr(dataset, "dataset", dataset)
    indices = list(getattr(dataset, "indices", range(len(base))))

    def output(i: int, sample: dict) -> np.ndarray:
        arr = cache.output(base, indices[i]).astype(np.float64) / 65535.0
        return tensor_to_image(torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))))

    return output
