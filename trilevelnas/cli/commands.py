"""The ``trilevelnas`` command: one entry point for every program.

    trilevelnas search|train|evaluate|upscale|export|ablate [options]
    trilevelnas --version | --help

``trilevelnas PROG ARGS`` runs ``trilevelnas.cli.PROG.main(ARGS)`` through
:func:`trilevelnas.cli.run_main`, exactly as ``python -m trilevelnas.PROG ARGS`` does (a user
error is one line, ``trilevelnas PROG: error: ...``, exit status 2). ``pyproject.toml`` installs it
as the console script ``trilevelnas``; ``python -m trilevelnas`` runs it too.
"""
from __future__ import annotations

import importlib
import sys
from typing import Sequence

from .. import __version__
from . import run_main

__all__ = ["PROGRAMS", "main", "usage"]

#: subcommand → what it does (one line of ``trilevelnas --help``); each is the module ``trilevelnas.cli.<name>``
PROGRAMS = {
    "search": "Trilevel NAS: pretrain, search, derive, train from search",
    "train": "train a derived architecture (from a search checkpoint or from scratch)",
    "evaluate": "PSNR/SSIM of a model on one or more test sets, bicubic beside it",
    "upscale": "super-resolve image files or folders (tiles, alpha, 16-bit, --outscale)",
    "export": "export a model to ONNX or TorchScript and check it",
    "ablate": "the paper's ablation studies as one command",
}


def usage() -> str:
    """The text of ``trilevelnas --help``: the synopsis and one line per subcommand."""
    width = max(map(len, PROGRAMS))
    lines = ["usage: trilevelnas {" + ",".join(PROGRAMS) + "} [options]",
             "       trilevelnas --version",
             "",
             "Trilevel Neural Architecture Search for efficient single-image super-resolution.",
             "",
             "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in PROGRAMS.items()]
    lines += ["",
              "'trilevelnas COMMAND --help' shows a command's options; 'trilevelnas COMMAND ...' is the",
              "same as 'python -m trilevelnas.COMMAND ...'."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``argv`` (default ``sys.argv[1:]``) to a program; return its exit status.

    ``--help``/``-h`` print :func:`usage` (status 0); ``--version``/``-V`` print
    ``trilevelnas <version>`` (status 0); no command, or an unknown one, is a one-line error with
    status 2.
    """
    args = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    if not args:
        print("trilevelnas: error: a command is required: " + ", ".join(PROGRAMS)
              + " (trilevelnas --help lists them)", file=sys.stderr)
        return 2
    first = args[0]
    if first in ("-h", "--help"):
        print(usage())
        return 0
    if first in ("-V", "--version"):
        print(f"trilevelnas {__version__}")
        return 0
    if first not in PROGRAMS:
        print(f"trilevelnas: error: unknown command {first!r}: expected one of {', '.join(PROGRAMS)} "
              "(trilevelnas --help lists them)", file=sys.stderr)
        return 2
    module = importlib.import_module(f"{__package__}.{first}")
    return run_main(f"trilevelnas {first}", module.main, args[1:])
