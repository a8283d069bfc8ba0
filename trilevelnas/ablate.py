"""``python -m trilevelnas.ablate``: the ablation program, :mod:`trilevelnas.cli.ablate`."""
import sys

from .cli import run_main
from .cli.ablate import main

if __name__ == "__main__":
    sys.exit(run_main("trilevelnas.ablate", main))
