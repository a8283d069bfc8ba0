"""``python -m trilevelnas PROG ...``: the ``trilevelnas`` command (:mod:`trilevelnas.cli.commands`)."""
import sys

from .cli.commands import main

if __name__ == "__main__":
    sys.exit(main())
