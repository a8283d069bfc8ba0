"""``python -m trilevelnas.evaluate``: the evaluate program, :mod:`trilevelnas.cli.evaluate`;
also its documented Python entry points (docs/toolkit.md)."""
import sys

from .cli import run_main
from .cli.evaluate import evaluate_model, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(run_main("trilevelnas.evaluate", main))
