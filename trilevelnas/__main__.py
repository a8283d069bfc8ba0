"""``python -m trilevelnas PROG ...``: the ``trilevelnas`` command (:mod:`trilevelnas.commands`)."""
import sys

from .commands import main

if __name__ == "__main__":
    sys.exit(main())
