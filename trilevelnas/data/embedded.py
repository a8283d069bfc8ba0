"""The embedded default data set: the natural photographs shipped in scikit-image's wheel.

scikit-image bundles about 28 images in ``skimage/data/`` (no download). Of those, the natural
photographs taken with an ordinary camera are used — not the synthetic ones (``color``, ``logo``,
the chessboards, ``phantom``), the blurred one (``clock_motion``), the silhouette (``horse``), nor
scientific imagery (``hubble_deep_field``, ``retina``, ``ihc``, ``cell``, ``microaneurysms``).
Grey photographs are replicated to RGB. The fixed split:

* train (11): the colour photographs ``astronaut``, ``rocket``, ``motorcycle_left`` and
  ``motorcycle_right`` and the grey ones ``brick``, ``coins``, ``grass``, ``gravel``, ``moon``,
  ``page``, ``text``. The order puts the stereo pair ``motorcycle_left``/``motorcycle_right`` at
  even indices, so the search's two halves (even / odd indices) never split the pair;
* validation, held out (3): ``chelsea`` (colour, 300x451), ``coffee`` (colour, 400x600) and
  ``camera`` (grey, 512x512). Neither the search nor training ever sees them.

It is meant for demos of the pipeline, not for numbers to put in a paper.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import UserError
from .io import read_image

__all__ = ["EMBEDDED_SPLITS", "embedded_dir", "embedded_paths", "embedded_images"]

EMBEDDED_SPLITS = {
    "train": ("motorcycle_left.png", "astronaut.png", "motorcycle_right.png", "rocket.jpg", "brick.png",
              "coins.png", "grass.png", "gravel.png", "moon.png", "page.png", "text.png"),
    "val": ("chelsea.png", "coffee.png", "camera.png"),
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
