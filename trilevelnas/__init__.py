"""Trilevel Neural Architecture Search for efficient single-image super-resolution.

Subpackages, in layering order: ``ops`` (fused kernels and their references) ← ``space`` (candidate
operations, superkernels, cells) ← ``supernet`` (tree / trellis / fixed-path supernets) ←
``models`` / ``data`` ← ``training`` ← the programs in ``cli`` (``trilevelnas
search|train|evaluate|upscale|export|ablate``, the console script of :mod:`trilevelnas.cli.commands`;
or ``python -m trilevelnas.search`` etc.), which nothing in the library imports (docs/layout.md).
"""

__version__ = "0.1.0"


def profile(model, lr_size=(256, 256)):
    """Parameters, multiply-accumulates and the paper's GFLOPs of ``model`` at an LR input size.

    Returns ``{"params": int, "macs": int, "gflops": float}``; see :mod:`trilevelnas.complexity`.
    """
    from .complexity import profile as _profile

    return _profile(model, lr_size=lr_size)


__all__ = ["__version__", "profile"]
