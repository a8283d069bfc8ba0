"""The embedded default data set: natural colour photographs shipped in scikit-image's wheel.

scikit-image bundles a few images in ``skimage/data/`` (no download). Of those, only the natural
colour photographs taken with an ordinary camera are used — not the grey ones, the synthetic ones
(``color``, ``logo``, ``chessboard_RGB``), nor scientific imagery (``hubble_deep_field``,
``retina``, ``ihc``). The fixed split:

* train: ``astronaut`` (512x512), ``rocket`` (427x640), ``motorcycle_left`` and
  ``motorcycle_right`` (500x741; a stereo pair, kept together so that validation does not see a
  near-duplicate of a training image);
* validation: ``chelsea`` (300x451) and ``coffee`` (400x600).

It is meant for smoke tests and demos of the pipeline, not for numbers to put in a paper.
"""
from __future__ import annotations

import os

import numpy as np

from ..cli import UserError
from .io import read_image

__all__ = ["EMBEDDED_SPLITS", "embedded_dir", "embedded_paths", "embedded_images"]

EMBEDDED_SPLITS = {
    "train": ("astronaut.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png"),
    "val": ("chelsea.png", "coffee.png"),
}
_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val"}


def embedded_dir() -> str:
    """The folder of scikit-image's bundled images."""
    try:
        import skimage
    except ImportError:
        raise UserError("the embedded data set needs scikit-image (pip install scikit-image); "
                        "or give an image folder with --data") from None
    return os.path.join(os.path.dirname(skimage.__file__), "data")


def _split(split: str) -> str:
    key = _ALIASES.get(str(split).lower())
    if key is None:
        raise UserError(f"unknown embedded split {split!r} (use 'train' or 'val')")
    return key


def embedded_paths(split: str) -> list[tuple[str, str]]:
    """``[(name, path)]`` of the embedded split (``"train"`` or ``"val"``)."""
    root = embedded_dir()
    out = []
    for filename in EMBEDDED_SPLITS[_split(split)]:
        path = os.path.join(root, filename)
        if not os.path.isfile(path):
            raise UserError(f"embedded image {filename} is missing from {root} (scikit-image "
                            "installed without its bundled data?); give an image folder with --data")
        out.append((os.path.splitext(filename)[0], path))
    return out


def embedded_images(split: str) -> list[tuple[str, np.ndarray]]:
    """``[(name, HxWx3 uint8 RGB)]`` of the embedded split (``"train"`` or ``"val"``)."""
    return [(name, read_image(path).rgb) for name, path in embedded_paths(split)]
