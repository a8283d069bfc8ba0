"""``python -m trilevelnas.export``: the export program, :mod:`trilevelnas.cli.export`;
also its documented Python entry points (docs/toolkit.md)."""
import sys

from .cli import run_main
from .cli.export import check_export, export_memory, export_onnx, export_torchscript, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(run_main("trilevelnas.export", main))
