"""Named presets: the JSON files in ``trilevelnas/configs/`` (layered by
:func:`~trilevelnas.training.config.build_config`)."""
from __future__ import annotations

import os

from ..errors import UserError

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
DEFAULT_PRESET = "demo"


def available() -> list[str]:
    """The names of the presets shipped with the package."""
    return sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".json"))


def preset_file(name: str) -> str:
    """The file of preset ``name``; an unknown name raises UserError listing the known."""
    path = os.path.join(CONFIG_DIR, f"{name}.json")
    if not os.path.isfile(path):
        raise UserError(f"--preset {name!r}: unknown preset (available: {', '.join(available())})")
    return path
