"""Command-line plumbing shared by ``python -m trilevelnas.search`` and ``python -m trilevelnas.train``."""
from __future__ import annotations

import argparse
import os

from ..cli import UserError
from . import checkpoint as ckpt
from .algorithm import Pipeline, format_summary, write_json_atomic
from .distributed import init_from_env, pick_device, shutdown
from .presets import DEFAULT_PRESET, available, build_config


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both programs take (DESIGN §5)."""
    parser.add_argument("--preset", help=f"named settings (default {DEFAULT_PRESET}; one of {', '.join(available())})")
    parser.add_argument("--config", help="a JSON config file layered over the preset")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (repeatable), e.g. --set search.steps=50")
    parser.add_argument("--data", help="training images: a folder of HR images (default: the embedded photographs)")
    parser.add_argument("--teacher", help="ESRGAN RRDBNet weights to distil from (default: supervise with the HR images)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint.pt")
    parser.add_argument("--seed", type=int, help="random seed (config run.seed)")
    parser.add_argument("--skip-bad-images", action="store_true", help="leave out unreadable images instead of stopping")
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N (config run.device)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_program(program: str, args: argparse.Namespace, arch=None, init: str | None = None) -> dict:
    """Build the config, (re)start the run in ``args.out``, run it, print and return the summary."""
    out = args.out
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out!r} exists and is not a folder")
    ckpt_path = os.path.join(out, "checkpoint.pt")
    resume_state = None
    if os.path.isfile(ckpt_path):
        if not args.resume:
            raise UserError(f"--out {out!r} already holds a run (checkpoint.pt); pass --resume to "
                            "continue it or choose another --out")
        resume_state = ckpt.load(ckpt_path)
        if resume_state.get("program") != program:
            raise UserError(f"{ckpt_path} was written by the {resume_state.get('program')} program, "
                            f"not by {program}")
    flags = {
        "data": {"root": args.data, "skip_bad_images": True if args.skip_bad_images else None},
        "loss": {"teacher": args.teacher},
        "run": {"seed": args.seed, "device": args.device},
    }
    cfg = build_config(args.preset, args.config, args.sets, flags,
                       base=resume_state["config"] if resume_state is not None else None)
    if arch is not None and arch.scale != cfg.data.scale:
        raise UserError(f"--arch is a x{arch.scale} network but the config has data.scale = {cfg.data.scale}")
    device = pick_device(cfg.run.device)
    ctx = init_from_env(device)
    try:
        if ctx.is_main:
            os.makedirs(out, exist_ok=True)
            write_json_atomic(cfg.to_dict(), os.path.join(out, "config.json"))
        pipeline = Pipeline(cfg, out, program, ctx, device, resume=resume_state, arch=arch, init=init,
                            progress=False if args.no_progress else None)
        summary = pipeline.run()
        if ctx.is_main:
            table = format_summary(summary)
            with open(os.path.join(out, "summary.txt"), "w", encoding="utf-8") as f:
                f.write(table + "\n")
            print(table, flush=True)
        return summary
    finally:
        shutdown(ctx)
