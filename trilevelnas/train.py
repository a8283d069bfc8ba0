"""``python -m trilevelnas.train``: train a derived network from an architecture file.

``--arch ARCH.json`` names the network; ``--init`` a search ``checkpoint.pt`` (its supernet's
weights are inherited: train from search) or a saved ``model.pt``; without ``--init`` the network
starts from scratch. ``--preset`` selects the training settings (the config's ``train`` section).
Writes ``model.pt``, ``checkpoint.pt``, ``log.csv`` and a summary into ``--out``.
"""
from __future__ import annotations

import argparse
import sys

from .cli import run_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trilevelnas.train", description=__doc__.split("\n\n")[0])
    from .training.program import add_common_arguments, run_program

    parser.add_argument("--arch", required=True, help="architecture JSON (from the search)")
    parser.add_argument("--init", help="search checkpoint.pt or model.pt whose weights to inherit")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    from .arch import Architecture

    arch = Architecture.from_json(args.arch)
    run_program("train", args, arch=arch, init=args.init)
    return 0


if __name__ == "__main__":
    sys.exit(run_main("trilevelnas.train", main))
