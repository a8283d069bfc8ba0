"""Super-resolve image files with a trained model.

    python -m trilevelnas.upscale -i FILE|DIR -o OUT --model MODEL [--tile N --tile-pad P]
                                  [--half | --bf16] [--alpha-upsampler bicubic|model] [--ext auto|png]

A single input file goes to ``OUT`` if it has an image extension, else to ``OUT/<stem><suffix>.<ext>``;
a folder's images go to the folder ``OUT``. Alpha channels are upscaled separately (MATLAB bicubic
by default, or by the model with the alpha replicated to RGB); 16-bit images stay 16-bit and grey
images stay grey. ``--tile`` bounds memory on large images; ``--tile-pad`` defaults to a bound on
the network's receptive-field radius (in LR pixels), so that the seams do not show. A tile is at
least 16 LR pixels and at least the tile pad (:func:`~trilevelnas.inference.check_tile`).
"""
from __future__ import annotations

import os
import sys

import numpy as np
import torch

from .cli import run_main
from .errors import UserError
from .fileio import check_writable_dir
from .data.imresize import imresize
from .data.io import IMAGE_EXTENSIONS, list_images, read_image, tensor_to_image, to_float, write_image
from .inference import (ArgumentParser, autocast_dtype, check_tile, choose_device, load_model_file, model_scale,
                        receptive_radius, upscale_tensor)

__all__ = ["main", "upscale_image"]


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m trilevelnas.upscale", description=__doc__.split("\n\n")[0])
    p.add_argument("-i", "--input", required=True, help="an image file or a folder of images")
    p.add_argument("-o", "--output", required=True, help="output file (single input) or folder")
    p.add_argument("--model", required=True, help="model file (save_model / train output, or ESRGAN weights)")
    p.add_argument("--tile", type=int, default=0,
                   help="LR tile size: 0 = whole image (default), else >= 16 and >= the tile pad")
    p.add_argument("--tile-pad", type=int, default=None,
                   help="LR context pixels around each tile (default: the receptive-field radius)")
    p.add_argument("--half", action="store_true", help="fp16 autocast (CUDA only; NaN tiles redone in fp32)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only; NaN tiles redone in fp32)")
    p.add_argument("--alpha-upsampler", choices=("bicubic", "model"), default="bicubic",
                   help="how the alpha channel is upscaled (default: MATLAB bicubic)")
    p.add_argument("--ext", choices=("auto", "png"), default="auto",
                   help="output format: auto = the input's, png = always PNG")
    p.add_argument("--suffix", default="", help="appended to output file stems in folder mode")
    p.add_argument("--overwrite", action="store_true",
                   help="allow an output to replace its own input file (refused otherwise)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def upscale_image(model, image, *, scale, device, tile=0, tile_pad=None, dtype=None,
                  alpha_upsampler="bicubic", progress=False, stats=None):
    """Upscale a :class:`~trilevelnas.data.LoadedImage`; returns ``(rgb, alpha)`` integer arrays
    of the image's dtype (``alpha`` None if it has none)."""
    def run(arr):
        x = torch.from_numpy(to_float(arr).transpose(2, 0, 1).copy())[None].to(device)
        y = upscale_tensor(model, x, scale=scale, tile=tile, tile_pad=tile_pad, dtype=dtype,
                           progress=progress, desc=os.path.basename(image.path), stats=stats)
        return tensor_to_image(y[0], image.rgb.dtype)

    rgb = run(image.rgb)
    alpha = None
    if image.alpha is not None:
        if alpha_upsampler == "model":
            alpha = run(np.repeat(image.alpha[:, :, None], 3, axis=2))
            alpha = np.round(alpha.astype(np.float64).mean(axis=2)).astype(image.alpha.dtype)
        else:
            alpha = imresize(image.alpha, scale)
    return rgb, alpha


def _outputs(inp: str, out: str, ext: str, suffix: str) -> list[tuple[str, str]]:
    def target(path, folder):
        stem, in_ext = os.path.splitext(os.path.basename(path))
        return os.path.join(folder, stem + suffix + (".png" if ext == "png" else in_ext.lower()))

    if os.path.isdir(inp):
        if os.path.isfile(out):
            raise UserError(f"output {out} is a file but the input {inp} is a folder")
        return [(p, target(p, out)) for p in list_images(inp)]
    if not os.path.exists(inp):
        raise UserError(f"input not found: {inp}")
    if out.lower().endswith(IMAGE_EXTENSIONS) and not os.path.isdir(out):
        return [(inp, out)]
    return [(inp, target(inp, out))]


def _check_jobs(jobs: list[tuple[str, str]], overwrite: bool) -> None:
    """Refuse (UserError) an output that is its own input (unless ``overwrite``) or two inputs with
    one output; check that every output folder is writable. Nothing has been written yet."""
    seen: dict[str, str] = {}
    for src, dst in jobs:
        key = os.path.realpath(dst)
        if key in seen:
            raise UserError(f"inputs {seen[key]} and {src} would both be written to {dst}; "
                            "use --suffix or --ext to tell them apart")
        seen[key] = src
        if not overwrite and os.path.exists(dst) and os.path.samefile(src, dst):
            raise UserError(f"output {dst} is the input {src}: it would be overwritten; choose "
                            "another -o or a --suffix, or pass --overwrite")
    for folder in sorted({os.path.dirname(os.path.abspath(dst)) for _, dst in jobs}):
        check_writable_dir(folder, "-o/--output")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    device = choose_device(args.device)
    dtype = autocast_dtype(args.half, args.bf16, device)
    jobs = _outputs(args.input, args.output, args.ext, args.suffix)
    _check_jobs(jobs, args.overwrite)
    check_tile(args.tile, args.tile_pad)
    model = load_model_file(args.model).to(device).eval()
    scale = model_scale(model)
    tile_pad = args.tile_pad
    if args.tile and tile_pad is None:
        tile_pad = receptive_radius(model)
        check_tile(args.tile, tile_pad)
        print(f"tile {args.tile}, tile pad {tile_pad} (the receptive-field radius)", file=sys.stderr)
    stats: dict = {}
    from tqdm import tqdm

    bar = tqdm(jobs, desc="upscale", unit="image", disable=args.no_progress or len(jobs) == 1)
    bad: list[str] = []
    for src, dst in bar:
        try:
            image = read_image(src)
        except UserError as exc:
            if len(jobs) == 1:
                raise
            bad.append(src)
            bar.write(f"skipped: {exc}", file=sys.stderr)
            continue
        rgb, alpha = upscale_image(model, image, scale=scale, device=device, tile=args.tile,
                                   tile_pad=tile_pad, dtype=dtype,
                                   alpha_upsampler=args.alpha_upsampler,
                                   progress=not args.no_progress and bool(args.tile), stats=stats)
        write_image(dst, rgb, alpha, gray=image.gray)
        bar.write(f"{src} -> {dst} ({rgb.shape[1]}x{rgb.shape[0]})")
    if stats.get("fallbacks"):
        print(f"{stats['fallbacks']} tile(s) recomputed in float32 after non-finite reduced-precision output",
              file=sys.stderr)
    if bad:
        raise UserError(f"{len(bad)} of {len(jobs)} images could not be read and were skipped "
                        f"(the others were written): {', '.join(bad)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main("trilevelnas.upscale", main))
