"""Atomic checkpoints and the random-number-generator state they carry.

A checkpoint is written to a temporary file in the same folder, flushed and fsync'ed, then renamed
over the old one with ``os.replace`` (atomic on POSIX), and the folder is fsync'ed: a run killed at
any moment leaves either the previous checkpoint or the new one, never a torn file. Checkpoints
hold only tensors and plain values and are read with ``weights_only=True``, so loading a crafted
file never runs code.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from ..errors import InputFileError
from ..fileio import load_torch, save_torch


def save_atomic(obj: Any, path: str) -> None:
    """Write the checkpoint ``obj`` to ``path`` atomically (:func:`trilevelnas.fileio.save_torch`).

    ``obj`` must be plain (tensors and plain values) so that it loads with ``weights_only=True``; a
    failed write (no space, permission) is a InputFileError and leaves the previous checkpoint intact.
    """
    save_torch(obj, path, "checkpoint")


#: What every loop checkpoint holds; a file without one of these is not a (complete) checkpoint.
REQUIRED_KEYS = ("loop", "rng")
#: What a checkpoint of the search and train programs holds besides.
PROGRAM_KEYS = ("version", "program", "config") + REQUIRED_KEYS


def load(path: str, what: str = "checkpoint", required: tuple[str, ...] = REQUIRED_KEYS) -> dict:
    """A checkpoint dict from ``path``, loaded with ``weights_only=True`` (never runs pickled code).

    A missing, unreadable, unsafe or foreign file, or one that lacks any of ``required``, raises a
    InputFileError naming the file (and the missing keys).
    """
    obj = load_torch(path, what)
    if not isinstance(obj, dict):
        raise InputFileError(f"{what} {path!r} is not a trilevelnas checkpoint (not a dict)")
    missing = [k for k in required if k not in obj]
    if missing:
        raise InputFileError(f"{what} {path!r} is not a complete trilevelnas checkpoint: it lacks "
                        + ", ".join(repr(k) for k in missing))
    return obj


def rng_state() -> dict:
    """The Python, NumPy and torch (CPU and CUDA) generator states."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    py, nps = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    np.random.set_state((nps["name"], nps["keys"].numpy().astype(np.uint32), nps["pos"],
                         nps["has_gauss"], nps["cached_gaussian"]))
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
