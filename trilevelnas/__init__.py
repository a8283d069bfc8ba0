"""Trilevel Neural Architecture Search for efficient single-image super-resolution.

Subpackages, in layering order: ``ops`` (fused kernels and their references) ← ``space`` (candidate
operations, superkernels, cells) ← ``supernet`` (tree / trellis / fixed-path supernets) ←
``models`` / ``data`` ← the programs (``trilevelnas search|train|evaluate|upscale|export|ablate``,
the console script of :mod:`trilevelnas.commands`; or ``python -m trilevelnas.search`` etc.).
"""

__version__ = "0.1.0"


def profile(model, lr_size=(256, 256)):
    """Parameters, multiply-accumulates and the paper's GFLOPs of ``model`` at an LR input size.

    Returns ``{"params": int, "macs": int, "gflops": float}``; see :mod:`trilevelnas.complexity`.
    """
    from .complexity import profile as _profile

    return _profile(model, lr_size=lr_size)


__all__ = ["__version__", "profile"]
