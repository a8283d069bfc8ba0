"""``python -m trilevelnas.upscale``: the upscale program, :mod:`trilevelnas.cli.upscale`;
also its documented Python entry points (docs/toolkit.md)."""
import sys

from .cli import run_main
from .cli.upscale import fit_format, main, upscale_image  # noqa: F401

if __name__ == "__main__":
    sys.exit(run_main("trilevelnas.upscale", main))
