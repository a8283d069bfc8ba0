"""``python -m trilevelnas.train``: the train program, :mod:`trilevelnas.cli.train`."""
import sys

from .cli import run_main
from .cli.train import main

if __name__ == "__main__":
    sys.exit(run_main("trilevelnas.train", main))
