"""Atomic checkpoints and the random-number-generator state they carry.

A checkpoint is written to a temporary file in the same folder, flushed and fsync'ed, then renamed
over the old one with ``os.replace`` (atomic on POSIX), and the folder is fsync'ed: a run killed at
any moment leaves either the previous checkpoint or the new one, never a torn file.
"""
from __future__ import annotations

import os
import random
import tempfile
from typing import Any

import numpy as np
import torch

from ..cli import UserError


def save_atomic(obj: Any, path: str) -> None:
    """``torch.save(obj)`` to ``path`` atomically (tmp file + fsync + os.replace + dir fsync)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path: str, what: str = "checkpoint") -> dict:
    """A checkpoint dict from ``path``; a missing or unreadable file raises UserError naming it.

    Checkpoints hold Python objects (RNG states, the config), so they are unpickled in full: load
    only checkpoints you wrote yourself.
    """
    if not os.path.isfile(path):
        raise UserError(f"{what} {path!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a wrong or torn file
        raise UserError(f"{what} {path!r} cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{what} {path!r} is not a trilevelnas checkpoint (not a dict)")
    return obj


def rng_state() -> dict:
    """The Python, NumPy and torch (CPU and CUDA) generator states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) with ``seed`` (reduced to 32 bits for NumPy)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def step_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed derived from the run seed and integer keys (phase, step, rank), order-sensitive.

    Seeding every step from (seed, phase, step) makes the random draws of step t independent of how
    the run got there, so a resumed run replays exactly the batches and Gumbel noise of an
    uninterrupted one.
    """
    ss = np.random.SeedSequence([seed % (2 ** 63), *[k % (2 ** 63) for k in keys]])
    return int(ss.generate_state(1, dtype=np.uint64)[0]) >> 1
