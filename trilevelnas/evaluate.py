"""Evaluate an SR model: PSNR/SSIM on Y (crop = scale, BasicSR convention) with the bicubic baseline.

    python -m trilevelnas.evaluate --model MODEL [--data HR_DIR | --gt GT_DIR --lq LQ_DIR
                                   [--filename-tmpl '{}x4']] [--json FILE] [--save-dir DIR]
                                   [--reference teacher:FILE]

``--data``: a folder of HR images, LR made with MATLAB bicubic after modcrop; ``--gt/--lq``:
BasicSR-style paired folders; neither: the embedded validation photographs. Prints per-image and
mean PSNR/SSIM of the model and of bicubic upscaling, the model's parameters and its GFLOPs at a
256x256 LR input (the paper's convention).
"""
from __future__ import annotations

import json
import os
import sys


from .cli import run_main
from .errors import UserError
from .fileio import check_writable_dir, check_writable_file, write_text
from .data.datasets import build_dataset
from .evaluation import cost_of, evaluate_model, side_by_side
from .inference import ArgumentParser, check_tile, choose_device, load_model_file, model_scale, receptive_radius

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
    p.add_argument("--reference", metavar="teacher:FILE",
                   help="also score the model against this network's output (a distillation teacher: "
                        "any weight file --model takes), beside bicubic against the same output and the "
                        "reference against HR; with --save-dir also writes side_by_side.png")
    return p


def _reference(spec: str | None):
    """The network of ``--reference teacher:FILE`` (None without the option)."""
    if spec is None:
        return None
    kind, sep, path = spec.partition(":")
    if not sep or kind != "teacher" or not path:
        raise UserError(f"--reference {spec!r}: expected teacher:FILE (a weight file)")
    return load_model_file(path)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    device = choose_device(args.device)
    if args.json:
        check_writable_file(args.json, "--json")
    if args.save_dir:
        check_writable_dir(args.save_dir, "--save-dir")
    model = load_model_file(args.model).to(device).eval()
    scale = model_scale(model)
    reference = _reference(args.reference)
    if reference is not None:
        reference = reference.to(device).eval()
        if model_scale(reference) != scale:
            raise UserError(f"--reference is a x{model_scale(reference)} network but --model is x{scale}")
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
                            progress=not args.no_progress, reference=reference, ref_tile=args.tile,
                            ref_tile_pad=receptive_radius(reference) if reference is not None and args.tile else None,
                            keep_images=reference is not None and bool(args.save_dir))
    result.update(cost_of(model))
    result["model"] = os.path.abspath(args.model)
    if reference is not None:
        ref_cost = cost_of(reference)
        result["reference"] = {"file": os.path.abspath(args.reference.partition(":")[2]), **ref_cost,
                               "compression": ref_cost["gflops"] / max(result["gflops"], 1e-12)}
        if args.save_dir:
            side_by_side(result["images"], os.path.join(args.save_dir, "side_by_side.png"))
        for row in result["images"]:
            row.pop("pictures", None)
    width = max(12, max(len(r["name"]) for r in result["images"]))
    print(f"{'image':<{width}}  {'PSNR-Y':>7} {'SSIM-Y':>7}   {'bicubic':>7} {'':>7}")
    for r in result["images"]:
        print(f"{r['name']:<{width}}  {r['psnr_y']:7.3f} {r['ssim_y']:7.4f}   "
              f"{r['bicubic_psnr_y']:7.3f} {r['bicubic_ssim_y']:7.4f}")
    print(f"{'mean':<{width}}  {result['psnr_y']:7.3f} {result['ssim_y']:7.4f}   "
          f"{result['bicubic_psnr_y']:7.3f} {result['bicubic_ssim_y']:7.4f}")
    print(f"x{scale}, crop {result['crop_border']}, {len(result['images'])} images; "
          f"params {result['params'] / 1e6:.3f} M, {result['gflops']:.2f} GFLOPs at 256x256 LR")
    if reference is not None:
        print(f"\nagainst the reference's output ({args.reference}):")
        print(f"{'image':<{width}}  {'PSNR-Y':>7} {'SSIM-Y':>7}   {'bicubic':>7} {'':>7}   {'ref vs HR':>9}")
        for r in result["images"] + [dict(result, name="mean")]:
            print(f"{r['name']:<{width}}  {r['psnr_y_vs_ref']:7.3f} {r['ssim_y_vs_ref']:7.4f}   "
                  f"{r['bicubic_psnr_y_vs_ref']:7.3f} {r['bicubic_ssim_y_vs_ref']:7.4f}   {r['ref_psnr_y']:9.3f}")
        ref = result["reference"]
        print(f"reference: params {ref['params'] / 1e6:.3f} M, {ref['gflops']:.2f} GFLOPs "
              f"({ref['compression']:.0f}x the model's)")
    if args.json:
        write_text(json.dumps(result, indent=1) + "\n", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(run_main("trilevelnas.evaluate", main))
