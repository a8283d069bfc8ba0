"""The programs and their shared command-line plumbing: one-line errors with exit status 2, and
argument helpers.

The programs are the modules of this package: ``search``, ``train`` (with ``program``, their
shared runner: arguments, resume, locking), ``evaluate``, ``upscale``, ``export``, ``ablate``,
``commands`` (the ``trilevelnas`` command) and ``zoo`` (``python -m trilevelnas.zoo``). The
library never imports this package; ``python -m trilevelnas.PROG`` runs the shim
``trilevelnas/PROG.py``, which forwards here.

Every program wraps its ``main`` with :func:`run_main`. Errors caused by the user's input (a missing
or corrupt file, an inconsistent config, a wrong weight file) are raised as :class:`UserError`; they
are printed as ``<prog>: error: <message>`` on one line, with no traceback, and the process exits
with status 2. Other exceptions are bugs and keep their traceback. With ``--debug`` on the command
line (every program accepts it; see :data:`DEBUG_FLAG`) or ``TRILEVELNAS_DEBUG=1`` in the
environment, a user error's traceback is printed to stderr before its one-line message.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Callable, Sequence

from ..errors import Interrupted, UserError  # noqa: F401  (formatted here, defined there)


DEBUG_FLAG = "--debug"
DEBUG_HELP = "on an error in the input, also print its traceback (for bug reports)"


def debug_requested(argv: Sequence[str] | None = None) -> bool:
    """True when ``argv`` (default ``sys.argv[1:]``) holds ``--debug`` before any ``--``, or the
    environment sets ``TRILEVELNAS_DEBUG`` to a non-empty value other than ``0``."""
    if os.environ.get("TRILEVELNAS_DEBUG", "") not in ("", "0"):
        return True
    args = list(sys.argv[1:] if argv is None else argv)
    if "--" in args:
        args = args[:args.index("--")]
    return DEBUG_FLAG in (str(a) for a in args)


def run_main(prog: str, main: Callable[[Sequence[str] | None], int | None],
             argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; turn :class:`UserError` (and Ctrl-C) into a one-line message.

    Returns the exit status: ``main``'s return value (0 if None), 2 for a user error, 130 for an
    interrupt. With :func:`debug_requested`, a user error's traceback precedes its message.
    """
    try:
        code = main(argv)
    except UserError as exc:
        if debug_requested(argv):
            traceback.print_exc(file=sys.stderr)
        message = " ".join(str(exc).split())  # one line, whatever the message held
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"{prog}: interrupted: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0 if code is None else int(code)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are :class:`UserError` (one line, status 2), with
    the ``--debug`` flag every program takes (:func:`run_main` reads it)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)

    def error(self, message):
        raise UserError(message)
