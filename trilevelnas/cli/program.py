"""Command-line plumbing shared by ``python -m trilevelnas.search`` and ``python -m trilevelnas.train``."""
from __future__ import annotations

import argparse
import os
import shlex
from typing import Callable

from . import DEBUG_FLAG, DEBUG_HELP
from ..errors import ConfigError, InputFileError
from ..fileio import RunLock, check_writable_dir, check_out_dir, mark_out_dir, remove_stale_temps, write_json, write_text
from ..memory import check_training_memory
from ..training import checkpoint as ckpt
from ..training.config import build_config, check_paths
from ..training.distributed import init_from_env, pick_device, shutdown
from ..training.presets import DEFAULT_PRESET, available
from ..training.run import Run
from ..training.summary import format_summary

#: ``make_run(cfg, out_dir, ctx, device, resume=Checkpoint or None, progress=...)``: the program's
#: run (a :class:`~trilevelnas.training.run.Run`), e.g. the SearchRun class itself.
MakeRun = Callable[..., Run]


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both programs take (docs/pipeline.md "Configuration")."""
    parser.add_argument("--preset", help=f"named settings (default {DEFAULT_PRESET}; one of {', '.join(available())})")
    parser.add_argument("--config", help="a JSON config file layered over the preset")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (repeatable), e.g. --set search.steps=50")
    parser.add_argument("--data", help="training images: a folder of HR images (default: the embedded photographs)")
    parser.add_argument("--teacher", help="teacher weights to distil from, in any format --model takes (ESRGAN/"
                                          "Real-ESRGAN .pth, .safetensors, ncnn .param: docs/teachers.md); "
                                          "default: supervise with the HR images")
    parser.add_argument("--teacher-cache", metavar="DIR",
                        help="folder of the teacher's stored outputs, computed once per training image "
                             "(default: the private per-user ~/.cache/trilevelnas/teacher; 'off': run the teacher on "
                             "every batch)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint.pt")
    parser.add_argument("--allow-data-change", action="store_true",
                        help="with --resume: continue on the training and validation images as they are "
                             "now, although they changed since the checkpoint (refused without it)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --out that holds other files and no trilevelnas run "
                             "(those files may be replaced); without it such a folder is refused")
    parser.add_argument("--seed", type=int, help="random seed (config run.seed)")
    parser.add_argument("--skip-bad-images", action="store_true", help="leave out unreadable images instead of stopping")
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N (config run.device)")
    parser.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true",
                        help="no progress bars and no progress lines")
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)


#: Settings a resumed run may change: where and how fast it runs, not what it computes.
RESUME_MAY_CHANGE = {("run", "device"), ("run", "threads"), ("run", "log_every"), ("run", "checkpoint_every"),
                     ("run", "allow_data_change")}


def _differences(old, new, prefix: str = "") -> list[tuple[str, object, object]]:
    """``(key path, old value, new value)`` for every leaf where two config dicts differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        diffs = []
        for k in list(old) + [k for k in new if k not in old]:
            diffs += _differences(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else str(k))
        return diffs
    return [] if old == new else [(prefix, old, new)]


def resume_config(stored: dict, ckpt_path: str, args: argparse.Namespace, flags: dict):
    """The configuration of a resumed run: the checkpoint's, with only :data:`RESUME_MAY_CHANGE` changed.

    A ``--preset``, ``--config``, ``--set`` or option that changes anything else is a ConfigError
    naming each differing key with the checkpoint's value and the requested one.
    """
    if not isinstance(stored, dict):
        raise InputFileError(f"{ckpt_path} is not a complete trilevelnas checkpoint: its 'config' is not a dict")
    if args.preset is not None and args.preset != stored.get("preset"):
        raise ConfigError(f"--resume: --preset {args.preset} differs from the preset of the run in "
                          f"{ckpt_path} ({stored.get('preset')}); drop --preset to resume it")
    base = build_config(None, None, [], {}, base=stored).to_dict()
    cfg = build_config(None, args.config, args.sets, flags, base=stored)
    diffs = [(k, a, b) for k, a, b in _differences(base, cfg.to_dict())
             if tuple(k.split(".")[:2]) not in RESUME_MAY_CHANGE]
    if diffs:
        listed = "; ".join(f"{k}: checkpoint {a!r}, requested {b!r}" for k, a, b in diffs)
        raise ConfigError(f"--resume: the options differ from the run in {ckpt_path}: {listed}; drop "
                          "them to resume (the checkpoint's configuration is used), or start a new --out")
    return cfg


def run_program(program: str, args: argparse.Namespace, make_run: MakeRun, arch=None,
                init: str | None = None) -> dict:
    """Build the config, (re)start the run of ``program`` in ``args.out`` with ``make_run``, run
    it, print and return the summary. ``arch`` and ``init``: the train program's ``--arch``
    (an Architecture) and ``--init`` (a path).

    Everything the user gave is checked before any output is written: the configuration, the
    device, the paths, that ``--out`` is a writable folder of ours (empty, or a run's: else
    ``--overwrite`` is needed) that no other run holds (a lock), and on ``--resume`` that the
    checkpoint is ours and its configuration is not contradicted. Temporary files that an
    interrupted write left in ``--out`` are removed once the lock is held.
    """
    out = args.out
    check_writable_dir(out, "--out")
    rank = int(os.environ.get("RANK", "0") or 0)
    lock = None
    if rank == 0:
        check_out_dir(out, overwrite=getattr(args, "overwrite", False))
        lock = RunLock(out)
    try:
        if lock is not None:
            mark_out_dir(out, program)
            remove_stale_temps(out)
        return _run_locked(program, args, make_run, arch, init)
    finally:
        if lock is not None:
            lock.release()


def _run_locked(program: str, args: argparse.Namespace, make_run: MakeRun, arch, init) -> dict:
    out = args.out
    ckpt_path = os.path.join(out, "checkpoint.pt")
    if os.path.isdir(ckpt_path):
        raise InputFileError(f"{ckpt_path} is a folder; checkpoints cannot be written there")
    flags = {
        "data": {"root": args.data, "skip_bad_images": True if args.skip_bad_images else None},
        "loss": {"teacher": args.teacher, "teacher_cache": args.teacher_cache},
        "run": {"seed": args.seed, "device": args.device,
                "allow_data_change": bool(getattr(args, "allow_data_change", False))},
    }
    resume_state = None
    if os.path.lexists(ckpt_path):
        if not args.resume:
            raise InputFileError(f"--out {out!r} already holds a run (checkpoint.pt); pass --resume to "
                                 "continue it or choose another --out")
        resume_state = ckpt.read(ckpt_path)
        if resume_state.meta.program != program:
            raise InputFileError(f"{ckpt_path} was written by the {resume_state.meta.program} program, "
                                 f"not by {program}")
        cfg = resume_config(resume_state.meta.config, ckpt_path, args, flags)
    else:
        cfg = build_config(args.preset, args.config, args.sets, flags)
    if arch is not None and arch.scale != cfg.data.scale:
        raise ConfigError(f"--arch is a x{arch.scale} network but the config has data.scale = {cfg.data.scale}")
    device = pick_device(cfg.run.device)
    check_paths(cfg, {"--init": init})  # before any data is read or any model is built
    check_training_memory(program, cfg, device, arch)
    ctx = init_from_env(device)
    try:
        run = make_run(cfg, out, ctx, device, resume=resume_state, progress=False if args.no_progress else None)
        if ctx.is_main:  # only once the data, the teacher and the models are known to load
            write_json(cfg.to_dict(), os.path.join(out, "config.json"))
        run.loop.resume_hint = f"continue with: {resume_command(program, args)}"
        summary = run.run()
        if ctx.is_main:
            table = format_summary(summary)
            write_text(table + "\n", os.path.join(out, "summary.txt"))
            print(table, flush=True)
        return summary
    finally:
        shutdown(ctx)


def resume_command(program: str, args: argparse.Namespace) -> str:
    """The command line that continues the run in ``args.out`` (the checkpoint holds the rest)."""
    arch = f" --arch {shlex.quote(args.arch)}" if getattr(args, "arch", None) else ""
    return f"python -m trilevelnas.{program}{arch} --out {shlex.quote(args.out)} --resume"
