"""Named presets: JSON files in ``trilevelnas/configs/``, and the layered config builder."""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from ..errors import UserError
from .config import Config, apply_overrides, load_json, parse_set, validate

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
DEFAULT_PRESET = "demo"


def available() -> list[str]:
    """The names of the presets shipped with the package."""
    return sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".json"))


def preset_overrides(name: str) -> dict:
    """The override dict of preset ``name``; an unknown name raises UserError listing the known."""
    path = os.path.join(CONFIG_DIR, f"{name}.json")
    if not os.path.isfile(path):
        raise UserError(f"--preset {name!r}: unknown preset (available: {', '.join(available())})")
    return load_json(path, "preset file")


def build_config(preset: str | None = None, config_file: str | None = None,
                 sets: Sequence[str] | None = None, flags: Mapping[str, Mapping[str, Any]] | None = None,
                 base: Mapping[str, Any] | None = None) -> Config:
    """Defaults ← ``base`` (e.g. a checkpoint's config) ← preset ← config file ← ``--set`` ← flags.

    ``preset`` None means the default preset unless ``base`` is given; ``flags`` is a nested dict
    of the dedicated command-line options that were given (None values are skipped).
    """
    cfg = Config()
    if base is not None:
        apply_overrides(cfg, base, source="checkpoint config")
    if preset is None and base is None:
        preset = DEFAULT_PRESET
    if preset is not None:
        apply_overrides(cfg, preset_overrides(preset), source=f"preset {preset}")
        cfg.preset = preset
    if config_file is not None:
        apply_overrides(cfg, load_json(config_file, "--config file"), source=f"--config {config_file}")
    apply_overrides(cfg, parse_set(list(sets or [])), source="--set")
    given = {sec: {k: v for k, v in vals.items() if v is not None} for sec, vals in (flags or {}).items()}
    apply_overrides(cfg, {sec: vals for sec, vals in given.items() if vals}, source="command line")
    validate(cfg)
    return cfg
