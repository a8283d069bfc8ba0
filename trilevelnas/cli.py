"""Shared command-line plumbing: one-line errors with exit status 2, and argument helpers.

Every program wraps its ``main`` with :func:`run_main`. Errors caused by the user's input (a missing
or corrupt file, an inconsistent config, a wrong weight file) are raised as :class:`UserError`; they
are printed as ``<prog>: error: <message>`` on one line, with no traceback, and the process exits
with status 2. Other exceptions are bugs and keep their traceback.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence


class UserError(Exception):
    """An error in the user's input; its message names the culprit."""


class Interrupted(Exception):
    """Ctrl-C stopped a run after it saved its state; the message says how to resume (exit 130)."""


def run_main(prog: str, main: Callable[[Sequence[str] | None], int | None],
             argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; turn :class:`UserError` (and Ctrl-C) into a one-line message.

    Returns the exit status: ``main``'s return value (0 if None), 2 for a user error, 130 for an
    interrupt.
    """
    try:
        code = main(argv)
    except UserError as exc:
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
