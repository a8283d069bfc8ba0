"""``python -m trilevelnas.zoo``: list the shipped models or write a card, :mod:`trilevelnas.cli.zoo`."""
import sys

from ..cli import run_main
from ..cli.zoo import main

if __name__ == "__main__":
    sys.exit(run_main("python -m trilevelnas.zoo", main))
