"""``python -m trilevelnas.search``: the search program, :mod:`trilevelnas.cli.search`."""
import sys

from .cli import run_main
from .cli.search import main

if __name__ == "__main__":
    sys.exit(run_main("trilevelnas.search", main))
