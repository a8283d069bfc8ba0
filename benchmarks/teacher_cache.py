"""Teacher-output cache benchmark: teacher FLOPs with and without the cache, and the wall time of a
smoke search with a small teacher — cache off, cache cold (first run) and cache warm (second run).

    python benchmarks/teacher_cache.py              # 3 repetitions → benchmarks/results/teacher_cache.json
    python benchmarks/teacher_cache.py --reps 1 --out /tmp/tc.json

FLOPs (``trilevelnas.profile``: conv MACs + bias adds + LeakyReLU elements, on meta tensors):

- without the cache the teacher runs on every LR patch the steps draw: per *epoch* (one patch per
  training image) that is ``images x FLOPs(patch)``, and a run pays it for every batch;
- with it the teacher runs once per training image on the whole LR image, in the cache's tiles
  with their receptive-field pad (``TILE`` LR pixels a side: the embedded images run whole); a
  later epoch or run pays nothing. ``break_even_epochs`` = fill / per-epoch cost.

Rows: the embedded training photographs (what the smoke preset trains on) for the benchmark's
small teacher and for ESRGAN's RRDBNet (nf 64, nb 23), at the smoke patch (32 HR) and the paper
patch (128 HR); and the paper-a preset's whole run for an *assumed* DIV2K + Flickr2K set (3450
images of 2040x1356 HR, the size the preset's description converts epochs with).

Wall time: ``python -m trilevelnas.search --preset smoke`` in a subprocess (imports included)
with a small RRDBNet teacher (nf 32, nb 2, gc 16, random weights rescaled to spread its output
over [0, 1]); per repetition: cold (an emptied cache folder), warm (the same folder again), off.
The median of the repetitions is reported with every sample.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from trilevelnas import profile  # noqa: E402
from trilevelnas.data import EmbeddedDataset  # noqa: E402
from trilevelnas.data.teacher_cache import TILE  # noqa: E402
from trilevelnas.inference import receptive_radius  # noqa: E402
from trilevelnas.models import RRDBNet  # noqa: E402
from trilevelnas.training import build_config  # noqa: E402

SMALL = {"nf": 32, "nb": 2, "gc": 16, "scale": 4}
ESRGAN = {"nf": 64, "nb": 23, "gc": 32, "scale": 4}


def tile_regions(h: int, w: int, tile: int, pad: int) -> list[tuple[int, int]]:
    """The LR ``(height, width)`` the teacher runs on for an ``h x w`` image: whole, or the padded
    tiles of :func:`trilevelnas.inference.upscale_tensor`."""
    if tile >= h and tile >= w:
        return [(h, w)]
    out = []
    for i in range(math.ceil(h / tile)):
        for j in range(math.ceil(w / tile)):
            y0, x0 = i * tile, j * tile
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            out.append((min(y1 + pad, h) - max(y0 - pad, 0), min(x1 + pad, w) - max(x0 - pad, 0)))
    return out


def fill_gflops(model, sizes, scale: int) -> float:
    """Teacher GFLOPs of filling the cache for LR images of ``sizes``."""
    pad = receptive_radius(model)
    memo: dict = {}
    total = 0.0
    for h, w in sizes:
        for region in tile_regions(h, w, TILE, pad):
            if region not in memo:
                memo[region] = profile(model, region)["gflops"]
            total += memo[region]
    return total


def flops_rows() -> list[dict]:
    """Teacher GFLOPs per epoch without the cache vs the one-time fill, per teacher and patch."""
    ds = EmbeddedDataset("train", scale=4)
    sizes = [ds.lr_origin(i)["lr_size"] for i in range(len(ds.names))]
    rows = []
    for tname, tcfg in (("small (nf 32, nb 2)", SMALL), ("ESRGAN (nf 64, nb 23)", ESRGAN)):
        model = RRDBNet(**tcfg)
        fill = fill_gflops(model, sizes, 4)
        for patch in (32, 128):
            p = patch // 4
            usable = sum(1 for h, w in sizes if h >= p and w >= p)
            per_epoch = usable * profile(model, (p, p))["gflops"]
            rows.append({"data": f"embedded train ({len(sizes)} images)", "teacher": tname,
                         "hr_patch": patch, "gflops_per_epoch_off": per_epoch,
                         "gflops_fill_once": fill, "gflops_per_epoch_cached": 0.0,
                         "break_even_epochs": fill / per_epoch})
    # the paper-a preset's run on an assumed DIV2K + Flickr2K set
    cfg = build_config("paper-a", flags={"data": {"root": "/assumed"},
                                             "loss": {"teacher": "/assumed", "vgg_weights": "/assumed"}})
    model = RRDBNet(**ESRGAN)
    p = cfg.data.patch_size // 4
    b = cfg.data.batch_size
    patches = b * (cfg.pretrain.steps + 2 * cfg.search.steps + cfg.train.steps + cfg.train.finetune_steps)
    per_patch = profile(model, (p, p))["gflops"]
    n, lr = 3450, (1356 // 4, 2040 // 4)
    rows.append({"data": f"assumed DIV2K+Flickr2K ({n} images, {lr[1] * 4}x{lr[0] * 4} HR)",
                 "teacher": "ESRGAN (nf 64, nb 23)", "hr_patch": cfg.data.patch_size,
                 "run": "paper-a preset, all phases", "teacher_patches_off": patches,
                 "gflops_run_off": patches * per_patch, "gflops_per_epoch_off": n * per_patch,
                 "gflops_fill_once": n * fill_gflops(model, [lr], 4), "gflops_run_cached_after_fill": 0.0,
                 "break_even_epochs": fill_gflops(model, [lr], 4) / per_patch,
                 "epochs_in_run": patches / n})
    return rows


def make_teacher(path: str) -> None:
    """The small teacher, with its last conv rescaled so the output spreads over [0, 1]."""
    torch.manual_seed(0)
    model = RRDBNet(**SMALL).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 32, 32))
        mean, std = out.mean(dim=(0, 2, 3)), out.std(dim=(0, 2, 3))
        model.conv_last.weight.mul_((0.2 / std).view(-1, 1, 1, 1))
        model.conv_last.bias.copy_(0.5 + (model.conv_last.bias - mean) * 0.2 / std)
    torch.save(model.state_dict(), path)


def timed_search(work: str, name: str, teacher: str, cache: str) -> float:
    """Wall seconds of one smoke search in a subprocess (its exit status must be 0)."""
    out = os.path.join(work, "runs", name)
    cmd = [sys.executable, "-m", "trilevelnas.search", "--preset", "smoke", "--no-progress",
           "--teacher", teacher, "--teacher-cache", cache, "--out", out]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds


def wall_times(reps: int) -> dict:
    work = tempfile.mkdtemp(prefix="tc-bench-")
    try:
        teacher = os.path.join(work, "teacher.pth")
        make_teacher(teacher)
        cache = os.path.join(work, "cache")
        samples: dict[str, list[float]] = {"cold": [], "warm": [], "off": []}
        for r in range(reps):
            shutil.rmtree(cache, ignore_errors=True)
            samples["cold"].append(timed_search(work, f"cold{r}", teacher, cache))
            samples["warm"].append(timed_search(work, f"warm{r}", teacher, cache))
            samples["off"].append(timed_search(work, f"off{r}", teacher, "off"))
            print(f"rep {r + 1}/{reps}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in samples.items()),
                  flush=True)
        size = sum(os.path.getsize(os.path.join(cache, f)) for f in os.listdir(cache))
        return {"teacher": SMALL, "samples_s": samples,
                "median_s": {k: statistics.median(v) for k, v in samples.items()},
                "cache_bytes": size, "cache_entries": len(os.listdir(cache))}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions of the wall-time runs (median)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "teacher_cache.json"))
    args = parser.parse_args(argv)
    rows = flops_rows()
    for row in rows:
        print(json.dumps(row))
    wall = wall_times(args.reps)
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "torch": torch.__version__, "threads": "smoke preset: run.threads = 1"},
              "tile": TILE, "flops": rows, "smoke_search_wall": wall}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(json.dumps(wall["median_s"]), "→", args.out)


if __name__ == "__main__":
    main()
