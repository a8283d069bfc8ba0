"""``python -m trilevelnas.search``: Trilevel NAS from data to a trained efficient SR model.

Runs the paper's Algorithm 1 (pretrain, search, derive) and, unless the config says otherwise,
trains the derived network from search. Writes into ``--out``: ``arch.json``, ``checkpoint.pt``,
``log.csv``, ``config.json``, plots (``curves.png``, ``arch_params.png``, ``architecture.png``),
``summary.json``/``summary.txt`` and, when it trained, ``model.pt``. See ``docs/pipeline.md``.
"""
from __future__ import annotations

import argparse


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trilevelnas.search", description=__doc__.split("\n\n")[0])
    from .program import add_common_arguments, run_program
    from ..training.search_run import SearchRun

    add_common_arguments(parser)
    parser.add_argument("--gflops", type=float, metavar="X",
                        help="derive a network of X GFLOPs at a 256x256 LR input, ±10%% "
                             "(shortcut for --set loss.flops_target=X)")
    args = parser.parse_args(argv)
    if args.gflops is not None:
        args.sets.append(f"loss.flops_target={args.gflops!r}")
    run_program("search", args, SearchRun)
    return 0
