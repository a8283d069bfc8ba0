"""``python -m trilevelnas.train``: train a derived network from an architecture file.

``--arch ARCH.json`` names the network; ``--init`` a search ``checkpoint.pt`` (its supernet's
weights are inherited: train from search) or a saved ``model.pt``; without ``--init`` the network
starts from scratch. ``--baseline espcn|fsrcnn|plain`` trains a textbook network instead
(docs/architectures.md, "Baselines"), from scratch at ``data.scale``. ``--preset`` selects the
training settings (the config's ``train`` section).
Writes ``model.pt``, ``checkpoint.pt``, ``log.csv`` and a summary into ``--out``.
"""
from __future__ import annotations

import argparse
import os

from ..data.teacher_cache import sha256_file
from ..errors import ConfigError, InputFileError, UserError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trilevelnas.train", description=__doc__.split("\n\n")[0])
    from .program import add_common_arguments, run_program
    from ..training.train_run import TrainRun

    from ..models.baselines import BASELINES

    network = parser.add_mutually_exclusive_group(required=True)
    network.add_argument("--arch", help="architecture JSON (from the search)")
    network.add_argument("--baseline", choices=sorted(BASELINES),
                         help="train a textbook network with the same recipe (from scratch, at data.scale)")
    parser.add_argument("--init", help="search checkpoint.pt or model.pt whose weights to inherit")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.baseline is not None:
        return _train_baseline(args)
    from ..arch import Architecture

    arch = Architecture.from_json(args.arch)

    def make_run(cfg, out, ctx, device, resume, progress):
        init = None
        if resume is not None:
            record = resume.meta.init
            return TrainRun(cfg, out, ctx, device, check_resume(resume, arch, args.init, out),
                            inherited=record is not None and record.get("inherited", False),
                            resume=resume, progress=progress, init_record=record)
        if args.init is not None:
            if cfg.train.init == "scratch":
                raise ConfigError(f"--init {args.init!r} asks to inherit weights but the config says "
                                  "train.init = 'scratch'; drop one of them")
            init = load_init(args.init, arch)
        inherited = args.init is not None and cfg.train.init == "search"
        record = {"file": os.path.abspath(args.init), "sha256": sha256_file(args.init),
                  "inherited": inherited} if args.init is not None else None
        return TrainRun(cfg, out, ctx, device, arch, init=init, inherited=inherited, resume=resume,
                        progress=progress, init_record=record)

    run_program("train", args, make_run, arch=arch, init=args.init)
    return 0


def check_resume(resume, arch, init: str | None, out: str):
    """The architecture of a resumed train run (``resume``: its
    :class:`~trilevelnas.training.checkpoint.Checkpoint`): ``--arch`` must be the checkpoint's, and
    an ``--init`` given again must be the file the run started from (by content); else ConfigError."""
    from ..arch import Architecture

    ckpt_path = os.path.join(out, "checkpoint.pt")
    stored = resume.weights.architecture
    if stored is not None and Architecture.from_dict(stored).to_dict() != arch.to_dict():
        raise ConfigError(f"--resume: --arch differs from the architecture of the run in {ckpt_path}; "
                          "give the same --arch, or start a new --out")
    record = resume.meta.init
    if init is not None:
        if record is None:
            raise ConfigError(f"--resume: --init {init!r} was not given to the run in {ckpt_path} (it started "
                              "from scratch); drop --init to resume it")
        if sha256_file(init) != record.get("sha256"):
            raise ConfigError(f"--resume: --init {init!r} is not the file the run in {ckpt_path} started from "
                              f"({record.get('file')}); drop --init to resume it")
    return arch


def _train_baseline(args) -> int:
    """``--baseline NAME``: the train program on a textbook network at the run's ``data.scale``."""
    from ..models.baselines import BaselineSpec
    from .program import run_program
    from ..training.train_run import BaselineRun

    if args.init is not None:
        raise ConfigError(f"--init {args.init!r}: a --baseline network starts from scratch")
    spec = BaselineSpec(args.baseline, _run_scale(args))

    def make_run(cfg, out, ctx, device, resume, progress):
        return BaselineRun(cfg, out, ctx, device, spec, resume=resume, progress=progress)

    run_program("train", args, make_run, arch=spec)
    return 0


def _run_scale(args) -> int:
    """The ``data.scale`` the run will have: the checkpoint's on ``--resume``, else that of the
    preset, ``--config`` and ``--set`` (the program checks them again)."""
    import os

    from ..training import checkpoint as ckpt
    from ..training import build_config

    path = os.path.join(args.out, "checkpoint.pt")
    if args.resume and os.path.isfile(path):
        return int(build_config(None, None, [], {}, base=ckpt.read(path).meta.config).data.scale)
    return int(build_config(args.preset, args.config, args.sets).data.scale)


def load_init(path: str, arch):
    """The weights ``--init path`` gives the network ``arch``: a search checkpoint's supernet,
    extracted (train from search), or a saved model of the same architecture. Anything else, or
    a supernet or model that does not fit ``arch``, raises InputFileError naming ``--init``."""
    from ..models import load_model
    from ..models.io import model_architecture
    from ..training import checkpoint as ckpt
    from ..training import components as comp
    from ..training.train_run import InitWeights

    state = ckpt.load(path, "--init file", required=())
    search = ckpt.Checkpoint.from_dict(state).search if ckpt.is_program_checkpoint(state) else None
    if search is not None and search.supernet is not None and search.supernet_config:
        supernet_cfg = search.supernet_config
        if arch.scale != supernet_cfg.get("scale", arch.scale) or \
                arch.channels != supernet_cfg.get("channels", arch.channels) or \
                arch.backbone != supernet_cfg.get("backbone", arch.backbone):
            raise InputFileError(f"--arch (backbone {arch.backbone}, {arch.channels} channels, "
                                 f"x{arch.scale}) does not fit the supernet of --init {path}")
        return InitWeights(comp.extract_network(search.supernet, supernet_cfg, arch), supernet_cfg, search.arch)
    try:
        model = load_model(path)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - anything else means it is not one of our files
        raise InputFileError(f"--init {path!r} is neither a search checkpoint nor a saved model "
                             f"({type(exc).__name__})") from None
    init_arch = model_architecture(model)
    if init_arch is None:
        raise InputFileError(f"--init {path!r} holds a {type(model).__name__}, not a derived "
                             "network or a search checkpoint (a teacher goes to --teacher)")
    if init_arch.to_dict() != arch.to_dict():
        raise InputFileError(f"--init {path!r} holds a different architecture than --arch")
    return InitWeights(model)
