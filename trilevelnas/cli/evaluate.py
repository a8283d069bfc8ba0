"""Evaluate an SR model: PSNR/SSIM on Y (crop = scale, BasicSR convention) with the bicubic baseline.

    python -m trilevelnas.evaluate [--model MODEL | -n NAME] [--data HR_DIR | --gt GT_DIR --lq LQ_DIR
                                   [--filename-tmpl '{}x4']] ... | [--sets FILE]
                                   [--metrics psnr,ssim[,lpips,niqe]] [--channel y|rgb] [--json FILE]
                                   [--lpips-backbone FILE] [--niqe-params FILE]
                                   [--save-dir DIR] [--reference teacher:FILE]

``--data``: a folder of HR images, LR made with MATLAB bicubic after modcrop; ``--gt/--lq``:
BasicSR-style paired folders; neither: the embedded validation photographs. Prints per-image and
mean PSNR/SSIM of the model and of bicubic upscaling, the model's parameters and its GFLOPs at a
256x256 LR input (the paper's convention). ``--metrics`` chooses the metrics and ``--channel rgb``
measures on RGB instead of Y (BasicSR's ``test_y_channel: false``); ``lpips`` and ``niqe``
(:mod:`trilevelnas.iqa`, lower is better) read their weights from the files named by
``--lpips-backbone`` / ``--niqe-params`` (nothing is downloaded). ``-n NAME`` evaluates a
shipped model (:mod:`trilevelnas.zoo`; ``--list-models`` prints their cards), and with neither
``--model`` nor ``-n`` the default shipped model is evaluated.

Several test sets in one run: repeat ``--data`` or ``--gt/--lq`` (one ``--filename-tmpl`` for all
pairs or one per pair), or list them in ``--sets FILE`` (JSON or YAML;
:mod:`trilevelnas.evalsets`). Each set gets its table, then a summary table has one row per set
and their mean; the JSON holds ``{"sets": {name: result}, "summary": {...}}`` beside the model's
cost, and ``--save-dir`` gets one subfolder per set. With one set, the output is as before.
"""
from __future__ import annotations

import json
import os


from . import ArgumentParser
from ..errors import UserError
from ..fileio import check_writable_dir, check_writable_file, write_text
from ..data.datasets import build_dataset
from ..evalsets import TestSet, load_sets, sets_from_args
from ..evaluation import CHANNELS, check_metrics, cost_of, evaluate_model, metric_key, side_by_side
from ..inference import check_tile, choose_device, load_model_file, model_scale, receptive_radius
from ..zoo import add_model_arguments, print_cards, resolve_model

__all__ = ["main", "evaluate_model"]


#: the files the perceptual metrics read (:mod:`trilevelnas.iqa`; nothing is downloaded)
IQA_FILES = {
    "--lpips-backbone": "for lpips: torchvision's ImageNet weights of VGG16 (vgg16-397923af.pth) or AlexNet",
    "--lpips-heads": "for lpips: the v0.1 linear heads (default: the installed lpips package's)",
    "--niqe-params": "for niqe: the pristine model, BasicSR's niqe_pris_params.npz or MATLAB's modelparameters.mat",
}


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m trilevelnas.evaluate", description=__doc__.split("\n\n")[0])
    add_model_arguments(p, "the model to evaluate")
    p.add_argument("--data", action="append", help="folder of HR images (LR made by MATLAB-style bicubic); repeatable")
    p.add_argument("--gt", action="append", help="folder of GT images (paired with --lq); repeatable, in pairs")
    p.add_argument("--lq", action="append", help="folder of LR images (paired with --gt); repeatable, in pairs")
    p.add_argument("--filename-tmpl", action="append",
                   help="LR file stem from the GT stem, e.g. '{}x4' (default '{}'); once for all pairs or once per pair")
    p.add_argument("--sets", metavar="FILE",
                   help="a JSON or YAML list of test sets: {name, gt, lq, filename_tmpl} or {name, data}")
    p.add_argument("--metrics", default="psnr,ssim",
                   help="comma-separated: psnr, ssim (default both), lpips, niqe (these two need their file below)")
    for flag, what in IQA_FILES.items():
        p.add_argument(flag, metavar="FILE", help=what)
    p.add_argument("--channel", choices=CHANNELS, default="y",
                   help="measure on Y of YCbCr (default, BasicSR's test_y_channel: true) or on RGB")
    p.add_argument("--crop-border", type=int, default=None, help="pixels cropped per side (default: the scale)")
    p.add_argument("--json", help="write the results to this JSON file")
    p.add_argument("--save-dir", help="write the SR images to this folder (one subfolder per set with several sets)")
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


def _test_sets(args) -> list[TestSet]:
    """The sets of ``--sets`` or of the folder options; empty for the embedded validation set."""
    listed = sets_from_args(args.data, args.gt, args.lq, args.filename_tmpl)
    if args.sets is not None:
        if listed:
            raise UserError("give either --sets FILE or --data / --gt / --lq, not both")
        return load_sets(args.sets)
    if args.filename_tmpl and not args.gt:
        raise UserError("--filename-tmpl applies to paired folders (--gt/--lq), and none is given")
    return listed


def _label(key: str) -> str:
    """``psnr_y`` → ``PSNR-Y``, ``ssim_rgb`` → ``SSIM-RGB``, ``lpips`` → ``LPIPS``."""
    metric, _, channel = key.partition("_")
    return f"{metric.upper()}-{channel.upper()}" if channel else metric.upper()


def _cell(key: str, value: float, width: int) -> str:
    digits = 4 if "ssim" in key else 3
    return f"{value:{width}.{digits}f}"


def _table(rows: list[dict], columns: list[list[str]], headers: list[list[str]], width: int,
           first: str = "image") -> None:
    """Print ``rows`` (each with a ``name``): groups of metric columns, three spaces between groups."""
    col = max(7, *(len(h) for group in headers for h in group))
    print(f"{first:<{width}}  " + "   ".join(" ".join(f"{h:>{col}}" for h in group) for group in headers))
    for r in rows:
        print(f"{r['name']:<{width}}  " + "   ".join(" ".join(_cell(k, r[k], col) for k in group)
                                                    for group in columns))


def _print_result(result: dict, keys: list[str], reference: str | None) -> None:
    """One set's tables: per image and the mean, the model beside bicubic (and the reference's)."""
    width = max(12, max(len(r["name"]) for r in result["images"]))
    rows = result["images"] + [dict(result, name="mean")]
    labels = [_label(k) for k in keys]
    _table(rows, [keys, ["bicubic_" + k for k in keys]],
           [labels, ["bicubic"] + [""] * (len(keys) - 1)], width)
    if reference is not None:
        print(f"\nagainst the reference's output ({reference}):")
        vs = [k for k in keys if k + "_vs_ref" in result]
        _table(rows, [[k + "_vs_ref" for k in vs], ["bicubic_" + k + "_vs_ref" for k in vs], ["ref_" + keys[0]]],
               [[_label(k) for k in vs], ["bicubic"] + [""] * (len(vs) - 1), ["ref vs HR"]], width)


def _evaluate_set(test_set: TestSet | None, model, scale: int, args, device, tile_pad, reference,
                  metrics, save_dir: str | None) -> dict:
    """:func:`evaluate_model` on one set (None: the embedded validation photographs)."""
    ts = test_set or TestSet("embedded")
    dataset = build_dataset(ts.data, ts.gt, ts.lq, scale=scale, filename_tmpl=ts.filename_tmpl,
                            split="val", skip_bad_images=args.skip_bad_images)
    result = evaluate_model(model, dataset, scale=scale, crop_border=args.crop_border, device=device,
                            tile=args.tile, tile_pad=tile_pad, save_dir=save_dir,
                            progress=not args.no_progress, reference=reference, ref_tile=args.tile,
                            ref_tile_pad=receptive_radius(reference) if reference is not None and args.tile else None,
                            keep_images=reference is not None and bool(save_dir),
                            metrics=metrics, channel=args.channel, iqa_models=args.iqa_models)
    if reference is not None:
        if save_dir:
            side_by_side(result["images"], os.path.join(save_dir, "side_by_side.png"))
        for row in result["images"]:
            row.pop("pictures", None)
    return result


def _iqa_models(args, metrics) -> dict:
    """The LPIPS network and NIQE model ``metrics`` ask for, read from the files the flags name."""
    from .. import iqa

    need = {"lpips": ("--lpips-backbone", args.lpips_backbone), "niqe": ("--niqe-params", args.niqe_params)}
    models = {}
    for m in metrics:
        if m in need:
            flag, path = need[m]
            if path is None:
                raise UserError(f"--metrics {m} needs {flag} FILE (nothing is downloaded; docs/toolkit.md says "
                                "where the file comes from)")
            models[m] = (iqa.LPIPS.from_files(path, args.lpips_heads) if m == "lpips"
                         else iqa.NIQEModel.from_file(path))
    return models


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
    if args.list_models:
        print_cards()
        return 0
    args.model = resolve_model(args)
    metrics = check_metrics(args.metrics, args.channel)
    args.iqa_models = _iqa_models(args, metrics)
    sets = _test_sets(args)
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
    keys = [metric_key(m, args.channel) for m in metrics]
    cost = cost_of(model)
    ref_info = None
    if reference is not None:
        ref_cost = cost_of(reference)
        ref_info = {"file": os.path.abspath(args.reference.partition(":")[2]), **ref_cost,
                    "compression": ref_cost["gflops"] / max(cost["gflops"], 1e-12)}
    if len(sets) <= 1:
        result = _evaluate_set(sets[0] if sets else None, model, scale, args, device, tile_pad, reference,
                               metrics, args.save_dir)
        result.update(cost)
        result["model"] = os.path.abspath(args.model)
        if ref_info is not None:
            result["reference"] = ref_info
        _print_result(result, keys, args.reference)
        count = f"{len(result['images'])} images"
    else:
        per_set = {}
        for ts in sets:
            save_dir = os.path.join(args.save_dir, ts.folder) if args.save_dir else None
            per_set[ts.name] = _evaluate_set(ts, model, scale, args, device, tile_pad, reference, metrics, save_dir)
            print(f"\n== {ts.name} ({len(per_set[ts.name]['images'])} images)")
            _print_result(per_set[ts.name], keys, args.reference)
        result = _summary(per_set, keys)
        result.update(cost)
        result.update({"model": os.path.abspath(args.model), "scale": scale,
                       "crop_border": next(iter(per_set.values()))["crop_border"]})
        if ref_info is not None:
            result["reference"] = ref_info
        print("\n== summary (mean over each set's images; last row: the mean of the sets)")
        rows = [dict(r, name=name) for name, r in per_set.items()] + [dict(result["summary"], name="mean of sets")]
        _table(rows, [keys, ["bicubic_" + k for k in keys]],
               [[_label(k) for k in keys], ["bicubic"] + [""] * (len(keys) - 1)],
               max(12, *(len(r["name"]) for r in rows)), first="set")
        count = f"{len(sets)} sets, {result['summary']['images']} images"
    print(f"x{scale}, crop {result['crop_border']}, {count}; "
          f"params {result['params'] / 1e6:.3f} M, {result['gflops']:.2f} GFLOPs at 256x256 LR")
    if ref_info is not None:
        print(f"reference: params {ref_info['params'] / 1e6:.3f} M, {ref_info['gflops']:.2f} GFLOPs "
              f"({ref_info['compression']:.0f}x the model's)")
    if args.json:
        write_text(json.dumps(result, indent=1) + "\n", args.json)
    return 0


def _summary(per_set: dict[str, dict], keys: list[str]) -> dict:
    """``{"sets": per_set, "summary": {...}}``: the summary holds, for every mean metric of the
    sets (the model's, bicubic's, and the reference's if any), the unweighted mean of the sets'
    means, and the total image count."""
    first = next(iter(per_set.values()))
    names = [k for k, v in first.items() if isinstance(v, float) and k not in ("scale", "crop_border")]
    summary = {k: sum(r[k] for r in per_set.values()) / len(per_set) for k in names}
    summary["images"] = sum(len(r["images"]) for r in per_set.values())
    return {"sets": per_set, "summary": summary}
