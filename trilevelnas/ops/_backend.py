"""Loading of the compiled extension and the choice of GPU backend.

The extension ``trilevelnas._C`` registers the ops under ``torch.ops.trilevelnas``. If it cannot be
imported, the package still imports (so that error messages and the references work), but a warning
says why, :func:`backend` reports ``extension: False`` and the ops raise ``RuntimeError`` naming the
import error: no op silently runs a slower substitute. The test suite fails in that state.

On CUDA tensors each op runs either its CUDA kernel or its Triton kernel, chosen by the environment
variable ``TRILEVELNAS_GPU_BACKEND`` (``cuda``, the default, or ``triton``) or :func:`set_gpu_backend`.
"""
from __future__ import annotations

import os
import warnings

import torch

_C = None
_C_error: Exception | None = None
try:
    from trilevelnas import _C  # noqa: F401  (registers the ops on import)
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    _C_error = exc
    warnings.warn(
        f"trilevelnas: the compiled extension trilevelnas._C did not load ({exc}); "
        "install with `pip install --no-build-isolation .` to build it",
        RuntimeWarning,
        stacklevel=2,
    )

try:
    import triton  # noqa: F401

    _triton_available = True
except Exception:  # triton absent or broken
    _triton_available = False

_GPU_BACKENDS = ("cuda", "triton")
_gpu_backend = os.environ.get("TRILEVELNAS_GPU_BACKEND", "cuda").lower()
if _gpu_backend not in _GPU_BACKENDS:
    raise ValueError(
        f"TRILEVELNAS_GPU_BACKEND={_gpu_backend!r}: expected one of {', '.join(_GPU_BACKENDS)}"
    )


def require_extension() -> None:
    """Raise ``RuntimeError`` if the compiled extension is not loaded."""
    if _C is None:
        raise RuntimeError(
            f"trilevelnas._C is not available ({_C_error}); "
            "reinstall with `pip install --no-build-isolation .`"
        )


def extension_has_cuda() -> bool:
    """True when the extension was compiled with its CUDA kernels."""
    return _C is not None and bool(_C.with_cuda())


def triton_available() -> bool:
    return _triton_available


def gpu_backend() -> str:
    """The backend used for CUDA tensors: ``"cuda"`` or ``"triton"``."""
    return _gpu_backend


def set_gpu_backend(name: str) -> None:
    """Select the backend for CUDA tensors (``"cuda"`` or ``"triton"``)."""
    global _gpu_backend
    name = name.lower()
    if name not in _GPU_BACKENDS:
        raise ValueError(f"gpu backend {name!r}: expected one of {', '.join(_GPU_BACKENDS)}")
    if name == "triton" and not _triton_available:
        raise RuntimeError("gpu backend 'triton' requested but triton does not import")
    _gpu_backend = name


def backend() -> dict:
    """What the ops run on: the extension, its CUDA kernels, Triton, and the GPU choice."""
    cuda_device = torch.cuda.is_available()
    return {
        "extension": _C is not None,
        "extension_error": None if _C_error is None else str(_C_error),
        "cpu": "c++" if _C is not None else None,
        "cuda_kernels": extension_has_cuda(),
        "triton": _triton_available,
        "cuda_device": cuda_device,
        "gpu_backend": (_gpu_backend if cuda_device else None),
    }
