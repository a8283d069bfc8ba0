"""Evaluate an SR model: PSNR/SSIM on Y (crop = scale, BasicSR convention) with the bicubic baseline.

    python -m trilevelnas.evaluate --model MODEL [--data HR_DIR | --gt GT_DIR --lq LQ_DIR
                                   [--filename-tmpl '{}x4']] [--json FILE] [--save-dir DIR]

``--data``: a folder of HR images, LR made with MATLAB bicubic after modcrop; ``--gt/--lq``:
BasicSR-style paired folders; neither: the embedded validation photographs. Prints per-image and
mean PSNR/SSIM of the model and of bicubic upscaling, the model's parameters and its GFLOPs at a
256x256 LR input (the paper's convention).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from .cli import run_main
from .errors import UserError
from .fileio import check_writable_dir, check_writable_file, write_text
from .data.datasets import build_dataset
from .data.imresize import imresize
from .data.io import tensor_to_image, write_image
from .inference import (ArgumentParser, check_tile, choose_device, load_model_file, model_scale, receptive_radius,
                        upscale_tensor)
from .metrics import psnr, ssim

__all__ = ["main", "evaluate_model"]


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m trilevelnas.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model file (save_model / train output, or ESRGAN weights)")
    p.add_argument("--data", help="folder of HR images (LR made by MATLAB-style bicubic)")
    p.add_argument("--gt", help="folder of GT images (paired with --lq)")
    p.add_argument("--lq", help="folder of LR images (paired with --gt)")
    p.add_argument("--filename-tmpl", default="{}", help="LR file stem from the GT stem, e.g. '{}x4' (default '{}')")
    p.add_argument("--crop-border", type=int, default=None, help="pixels cropped per side (default: the scale)")
    p.add_argument("--json", help="write the results to this JSON file")
    p.add_argument("--save-dir", help="write the SR images to this folder")
    p.add_argument("--tile", type=int, default=0,
                   help="LR tile size for large images: 0 = whole image, else >= 16 and >= the tile pad")
    p.add_argument("--tile-pad", type=int, default=None,
                   help="LR context pixels around each tile (default: the receptive-field radius)")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="leave out unreadable images (with a warning) instead of stopping")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def evaluate_model(model, dataset, *, scale, crop_border=None, device="cpu", tile=0, tile_pad=None,
                   save_dir=None, progress=False) -> dict:
    """PSNR/SSIM (Y channel) of ``model`` and of bicubic upscaling on every sample of ``dataset``.

    Returns ``{"images": [{"name", "psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y"}],
    "psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y", "scale", "crop_border"}`` (means over
    images). SR and bicubic outputs are rounded to uint8 before the metrics, as BasicSR does.
    """
    from tqdm import tqdm

    crop = scale if crop_border is None else crop_border
    rows = []
    for i in tqdm(range(len(dataset)), desc="evaluate", unit="image", disable=not progress):
        sample = dataset[i]
        lq = sample["lq"][None].to(device)
        sr = upscale_tensor(model, lq, scale=scale, tile=tile, tile_pad=tile_pad)[0]
        gt = tensor_to_image(sample["gt"])
        sr_img = tensor_to_image(sr)
        if sr_img.shape != gt.shape:
            raise UserError(f"{sample['name']}: model output {sr_img.shape[:2]} does not match "
                            f"the GT size {gt.shape[:2]} (scale {scale})")
        bic = tensor_to_image(imresize(sample["lq"].double(), scale))
        rows.append({"name": sample["name"],
                     "psnr_y": psnr(sr_img, gt, crop, True), "ssim_y": ssim(sr_img, gt, crop, True),
                     "bicubic_psnr_y": psnr(bic, gt, crop, True),
                     "bicubic_ssim_y": ssim(bic, gt, crop, True)})
        if save_dir:
            write_image(os.path.join(save_dir, sample["name"] + ".png"), sr_img)
    keys = ("psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y")
    result = {"images": rows}
    result.update({k: float(np.mean([r[k] for r in rows])) for k in keys})
    result.update({"scale": scale, "crop_border": crop})
    return result


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    device = choose_device(args.device)
    if args.json:
        check_writable_file(args.json, "--json")
    if args.save_dir:
        check_writable_dir(args.save_dir, "--save-dir")
    from . import profile
    model = load_model_file(args.model).to(device).eval()
    scale = model_scale(model)
    if args.crop_border is not None and args.crop_border < 0:
        raise UserError(f"--crop-border must be >= 0, got {args.crop_border}")
    tile_pad = args.tile_pad
    if args.tile and tile_pad is None:
        tile_pad = receptive_radius(model)
    check_tile(args.tile, tile_pad)
    dataset = build_dataset(args.data, args.gt, args.lq, scale=scale, filename_tmpl=args.filename_tmpl,
                            split="val", skip_bad_images=args.skip_bad_images)
    result = evaluate_model(model, dataset, scale=scale, crop_border=args.crop_border, device=device,
                            tile=args.tile, tile_pad=tile_pad, save_dir=args.save_dir,
                            progress=not args.no_progress)
    cost = profile(model)
    result.update({"params": int(cost["params"]), "gflops": float(cost["gflops"]),
                   "model": os.path.abspath(args.model)})
    width = max(12, max(len(r["name"]) for r in result["images"]))
    print(f"{'image':<{width}}  {'PSNR-Y':>7} {'SSIM-Y':>7}   {'bicubic':>7} {'':>7}")
    for r in result["images"]:
        print(f"{r['name']:<{width}}  {r['psnr_y']:7.3f} {r['ssim_y']:7.4f}   "
              f"{r['bicubic_psnr_y']:7.3f} {r['bicubic_ssim_y']:7.4f}")
    print(f"{'mean':<{width}}  {result['psnr_y']:7.3f} {result['ssim_y']:7.4f}   "
          f"{result['bicubic_psnr_y']:7.3f} {result['bicubic_ssim_y']:7.4f}")
    print(f"x{scale}, crop {result['crop_border']}, {len(result['images'])} images; "
          f"params {result['params'] / 1e6:.3f} M, {result['gflops']:.2f} GFLOPs at 256x256 LR")
    if args.json:
        write_text(json.dumps(result, indent=1) + "\n", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(run_main("trilevelnas.evaluate", main))
