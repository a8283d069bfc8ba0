"""Super-resolve image files with a trained model.

    python -m trilevelnas.upscale -i FILE|DIR -o OUT [--model MODEL | -n NAME] [-s OUTSCALE] [-t TILE --tile-pad P]
                                  [--pre_pad N] [--half | --bf16 | --fp32] [--runtime auto|eager|...]
                                  [--alpha-upsampler bicubic|model] [--ext auto|png|jpg|webp] [--quality Q]

A single input file goes to ``OUT`` if it has an image extension, else to ``OUT/<stem><suffix>.<ext>``;
a folder's images (any mix of PNG, JPEG, BMP, TIFF, WebP, PNM) go to the folder ``OUT``. With
neither ``--model`` nor ``-n NAME`` (a shipped model, :mod:`trilevelnas.zoo`; ``--list-models``
prints their cards) the default shipped model is used. Alpha
channels are upscaled separately (MATLAB bicubic by default, or by the model with the alpha
replicated to RGB); 16-bit images stay 16-bit and grey images stay grey, where the output format
can hold them: JPEG has no alpha channel and JPEG/WebP no 16 bits, so such an output drops the
alpha / keeps 8 bits, with a note on stderr. ``--tile`` bounds memory on large images;
``--tile-pad`` defaults to a bound on the network's receptive-field radius (in LR pixels), so that
the seams do not show. A tile is at least 16 LR pixels and at least the tile pad
(:func:`~trilevelnas.inference.check_tile`).

Real-ESRGAN's habits: ``-s/--outscale`` resizes the network's output to ``outscale`` times the
input (Lanczos, :func:`~trilevelnas.inference.lanczos_resize`); ``-t`` is ``--tile``, and
``--tile_pad`` / ``--pre_pad`` are accepted beside ``--tile-pad`` / ``--pre-pad``; ``--pre_pad N``
reflect-pads the input's bottom and right by ``N`` pixels before the network and crops them off
after; ``--fp32`` is accepted and changes nothing (fp32 is the default here).

``--runtime auto`` (the default) runs the network along the fastest path measured for its device
(:mod:`trilevelnas.runners`: channels-last, TorchScript, ONNX Runtime or eager) that reproduces
eager PyTorch within 1e-5 on a probe image, with a note for each faster path it passed over.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import torch

from . import ArgumentParser
from .. import runners
from ..errors import UserError
from ..fileio import check_writable_dir
from ..data.imresize import imresize
from ..data.io import IMAGE_EXTENSIONS, from_float, list_images, read_image, tensor_to_image, to_float, write_image
from ..zoo import add_model_arguments, print_cards, resolve_model
from ..inference import (autocast_dtype, check_tile, choose_device, lanczos_resize,
                         load_model_file, model_scale, outscale_size, pre_pad_input, receptive_radius,
                         upscale_tensor)

__all__ = ["main", "upscale_image", "fit_format", "EXTENSIONS"]

#: ``--ext`` → the extension written (``auto``: the input's own)
EXTENSIONS = {"png": ".png", "jpg": ".jpg", "webp": ".webp"}
_ALPHA_FORMATS = (".png", ".webp", ".tif", ".tiff")
_SIXTEEN_BIT_FORMATS = (".png", ".tif", ".tiff")


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m trilevelnas.upscale", description=__doc__.split("\n\n")[0])
    p.add_argument("-i", "--input", help="an image file or a folder of images (formats may be mixed); required")
    p.add_argument("-o", "--output", help="output file (single input) or folder; required")
    add_model_arguments(p, "the network to upscale with")
    p.add_argument("-s", "--outscale", type=float, default=None,
                   help="final size as a multiple of the input's (any number > 0; default: the model's "
                        "scale, no resize); the network's output is resized with Lanczos, as Real-ESRGAN does")
    p.add_argument("-t", "--tile", type=int, default=0,
                   help="LR tile size: 0 = whole image (default), else >= 16 and >= the tile pad")
    p.add_argument("--tile-pad", "--tile_pad", dest="tile_pad", type=int, default=None,
                   help="LR context pixels around each tile (default: the receptive-field radius)")
    p.add_argument("--pre-pad", "--pre_pad", dest="pre_pad", type=int, default=0,
                   help="reflect-pad the input's bottom and right by N pixels before the network and crop "
                        "them off after, as Real-ESRGAN (default 0 here; Real-ESRGAN's is 10)")
    p.add_argument("--half", action="store_true", help="fp16 autocast (CUDA only; NaN tiles redone in fp32)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only; NaN tiles redone in fp32)")
    p.add_argument("--fp32", action="store_true",
                   help="full precision: the default here, accepted for Real-ESRGAN's command lines")
    p.add_argument("--alpha-upsampler", choices=("bicubic", "model"), default="bicubic",
                   help="how the alpha channel is upscaled (default: MATLAB bicubic)")
    p.add_argument("--ext", choices=("auto",) + tuple(EXTENSIONS), default="auto",
                   help="output format: auto = the input's (default), png, jpg or webp (JPEG drops alpha "
                        "and JPEG/WebP keep 8 bits, each with a note)")
    p.add_argument("--quality", type=int, default=95,
                   help="JPEG/WebP quality, 1 to 100 (default 95; ignored for the lossless formats)")
    p.add_argument("--suffix", default="", help="appended to output file stems in folder mode")
    p.add_argument("--overwrite", action="store_true",
                   help="allow an output to replace its own input file (refused otherwise)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--runtime", choices=("auto",) + runners.PATHS, default="auto",
                   help="how the network runs: auto (default) = the fastest measured path that reproduces "
                        "eager PyTorch within 1e-5 here (docs/benchmarks.md, 'Inference'), or one named")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _runner(model, runtime: str):
    """``(path, runner)`` of ``--runtime``: auto picks with :func:`~trilevelnas.runners.choose_runner`
    and notes on stderr why it passed faster paths over; a named path that is unavailable here is
    one line, one that differs from eager beyond the tolerance is used with a note."""
    if runtime == "auto":
        path, run, notes = runners.choose_runner(model)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        return path, run
    why = runners.unavailable(runtime, next(model.parameters()).device)
    if why:
        raise UserError(f"--runtime {runtime}: {why}")
    x, ref = runners.probe(model)
    run = runners.make_runner(model, runtime)
    diff = runners.max_difference(run, x, ref)
    if diff > runners.TOLERANCE:
        print(f"note: --runtime {runtime} differs from eager by {diff:.2g} (> {runners.TOLERANCE:g})", file=sys.stderr)
    return runtime, run


def upscale_image(model, image, *, scale, device, tile=0, tile_pad=None, dtype=None,
                  alpha_upsampler="bicubic", pre_pad=0, outscale=None, progress=False, stats=None):
    """Upscale a :class:`~trilevelnas.data.LoadedImage` with ``model`` (the network, or a runner of
    it from :mod:`trilevelnas.runners`, which then needs ``tile_pad`` when tiling); returns
    ``(rgb, alpha)`` integer arrays of the image's dtype (``alpha`` None if it has none).

    The output is ``scale`` times the input, or with ``outscale`` :func:`outscale_size` of it:
    the network's output (and the alpha's) is then resized with :func:`lanczos_resize` (nothing is
    resized when ``outscale`` equals ``scale``). ``pre_pad``: :func:`pre_pad_input` before the
    network, cropped off after."""
    h, w = image.rgb.shape[:2]
    size = (h * scale, w * scale) if outscale is None else outscale_size(h, w, outscale)

    def network(arr):  # float CHW tensor, scale x the input, before any final resize
        x = torch.from_numpy(to_float(arr).transpose(2, 0, 1).copy())[None].to(device)
        try:
            x = pre_pad_input(x, pre_pad)
        except UserError as exc:
            raise UserError(f"{image.path}: {exc}") from None
        y = upscale_tensor(model, x, scale=scale, tile=tile, tile_pad=tile_pad, dtype=dtype,
                           progress=progress, desc=os.path.basename(image.path), stats=stats)
        return y[0, :, :h * scale, :w * scale]

    def finish(y, dtype):  # CHW float tensor → HxWxC integer image of ``size``
        if tuple(y.shape[-2:]) == size:
            return tensor_to_image(y, dtype)
        arr = y.detach().to("cpu", torch.float32).clamp_(0, 1).numpy().transpose(1, 2, 0)
        return from_float(lanczos_resize(arr, size), dtype)

    rgb = finish(network(image.rgb), image.rgb.dtype)
    alpha = None
    if image.alpha is not None:
        if alpha_upsampler == "model":
            alpha = finish(network(np.repeat(image.alpha[:, :, None], 3, axis=2)), image.alpha.dtype)
            alpha = np.round(alpha.astype(np.float64).mean(axis=2)).astype(image.alpha.dtype)
        else:
            alpha = imresize(image.alpha, scale)
            if alpha.shape != size:
                alpha = from_float(lanczos_resize(to_float(alpha)[:, :, None], size)[:, :, 0], image.alpha.dtype)
    return rgb, alpha


def fit_format(path: str, rgb: np.ndarray, alpha: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """``(rgb, alpha, notes)`` that the format of ``path`` can hold: 16-bit data reduced to 8 bits
    for JPEG/WebP/BMP/PNM, the alpha channel dropped for JPEG/BMP/PNM; ``notes`` says what changed."""
    ext = os.path.splitext(path)[1].lower()
    notes = []
    if rgb.dtype == np.uint16 and ext not in _SIXTEEN_BIT_FORMATS:
        rgb = from_float(to_float(rgb), np.uint8)
        alpha = None if alpha is None else from_float(to_float(alpha), np.uint8)
        notes.append(f"{ext} holds 8 bits: written as 8-bit (use --ext png for 16 bits)")
    if alpha is not None and ext not in _ALPHA_FORMATS:
        alpha = None
        notes.append(f"{ext} cannot hold an alpha channel: written without it (use --ext png or webp to keep it)")
    return rgb, alpha, notes


def _outputs(inp: str, out: str, ext: str, suffix: str) -> list[tuple[str, str]]:
    def target(path, folder):
        stem, in_ext = os.path.splitext(os.path.basename(path))
        return os.path.join(folder, stem + suffix + EXTENSIONS.get(ext, in_ext.lower()))

    if os.path.isdir(inp):
        if os.path.isfile(out):
            raise UserError(f"output {out} is a file but the input {inp} is a folder")
        return [(p, target(p, out)) for p in list_images(inp)]
    if not os.path.exists(inp):
        raise UserError(f"input not found: {inp}")
    if out.lower().endswith(IMAGE_EXTENSIONS) and not os.path.isdir(out):
        out_ext = os.path.splitext(out)[1].lower().replace(".jpeg", ".jpg")
        if ext != "auto" and out_ext != EXTENSIONS[ext]:
            raise UserError(f"-o {out} is a {out_ext} file but --ext is {ext}; give one of them")
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


def _check_options(args) -> None:
    """UserError for out-of-range or contradictory options, before any work."""
    if args.fp32 and (args.half or args.bf16):
        raise UserError(f"--fp32 contradicts {'--half' if args.half else '--bf16'}: choose one precision")
    if not 1 <= args.quality <= 100:
        raise UserError(f"--quality {args.quality}: must lie in 1..100")
    if args.outscale is not None:
        outscale_size(1, 1, args.outscale)  # checks it is a number > 0
    if args.pre_pad < 0:
        raise UserError(f"--pre_pad {args.pre_pad}: must be >= 0")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.list_models:
        print_cards()
        return 0
    missing = [flag for flag, value in (("-i/--input", args.input), ("-o/--output", args.output)) if value is None]
    if missing:
        raise UserError(f"the following arguments are required: {', '.join(missing)}")
    args.model = resolve_model(args)
    _check_options(args)
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
    _, run = _runner(model, args.runtime)
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
        rgb, alpha = upscale_image(run, image, scale=scale, device=device, tile=args.tile,
                                   tile_pad=tile_pad, dtype=dtype,
                                   alpha_upsampler=args.alpha_upsampler, pre_pad=args.pre_pad,
                                   outscale=args.outscale,
                                   progress=not args.no_progress and bool(args.tile), stats=stats)
        rgb, alpha, notes = fit_format(dst, rgb, alpha)
        for note in notes:
            bar.write(f"note: {dst}: {note}", file=sys.stderr)
        write_image(dst, rgb, alpha, gray=image.gray, quality=args.quality)
        bar.write(f"{src} -> {dst} ({rgb.shape[1]}x{rgb.shape[0]})")
    if stats.get("fallbacks"):
        print(f"{stats['fallbacks']} tile(s) recomputed in float32 after non-finite reduced-precision output",
              file=sys.stderr)
    if bad:
        raise UserError(f"{len(bad)} of {len(jobs)} images could not be read and were skipped "
                        f"(the others were written): {', '.join(bad)}")
    return 0
