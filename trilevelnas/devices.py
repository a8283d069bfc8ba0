"""Resolving a device name (``auto``, ``cpu``, ``cuda``, ``cuda:N``) with one-line errors."""
from __future__ import annotations

import torch

from .errors import UserError

__all__ = ["available_cores", "available_devices", "resolve_device"]


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` elsewhere)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def available_devices() -> list[str]:
    """The device names this process can use: ``cpu`` and one ``cuda:N`` per visible GPU."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["cpu"] + [f"cuda:{i}" for i in range(n)]


def resolve_device(spec: str, what: str = "device", cuda_index: int = 0) -> torch.device:
    """``auto`` → ``cuda:<cuda_index>`` when CUDA is available, else CPU; otherwise ``spec``, checked.

    A malformed name, or a device this machine does not have, is a UserError naming ``spec`` and
    what is available. Nothing is initialised here (no ``set_device``).
    """
    if not isinstance(spec, str):
        raise UserError(f"{what} must be a string such as auto, cpu, cuda or cuda:N, got {spec!r}")
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise UserError(f"{what} {spec!r} is not a device name (use auto, cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"{what} {spec!r} is not supported (use auto, cpu, cuda or cuda:N)")
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", cuda_index)
        if str(device) not in available_devices():
            raise UserError(f"{what} {spec!r} is not available on this machine (available: "
                            + ", ".join(available_devices()) + ")")
    return device
