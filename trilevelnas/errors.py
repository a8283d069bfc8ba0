"""The package's error types. The library raises them; the programs only format them
(:func:`trilevelnas.cli.run_main`: one line naming the culprit, exit status 2).

- :class:`UserError` — anything wrong with what the user gave (a file, a setting, an argument);
  a ``ValueError``, so library callers can catch it as one.
- :class:`ConfigError` — an inconsistent or out-of-range setting.
- :class:`InputFileError` — a file or folder that is missing, unreadable, unwritable or corrupt.
- :class:`OpArgumentError` — bad arguments to one of the custom ops (shape, dtype, device, width).
- :class:`Interrupted` — Ctrl-C stopped a run after it saved its state (exit 130).
"""
from __future__ import annotations


class UserError(ValueError):
    """An error in the user's input; its message names the culprit."""


class ConfigError(UserError):
    """A setting that is out of range or inconsistent with another one."""


class InputFileError(UserError):
    """A file or folder that cannot be read, written, or parsed."""


class OpArgumentError(UserError):
    """Bad arguments to a custom op (the message starts with the op's name)."""


class Interrupted(Exception):
    """Ctrl-C stopped a run after it saved its state; the message says how to resume (exit 130)."""


__all__ = ["UserError", "ConfigError", "InputFileError", "OpArgumentError", "Interrupted"]
