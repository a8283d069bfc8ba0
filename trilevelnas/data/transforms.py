"""Array transforms of SR training (BasicSR's ``modcrop``, ``paired_random_crop``, ``augment``).

All functions take numpy images ``HxW`` or ``HxWxC``. Randomness comes from a ``random.Random``
(default: the ``random`` module, which PyTorch reseeds in every DataLoader worker).
"""
from __future__ import annotations

import random as _random
from typing import Sequence

import numpy as np

from ..errors import UserError

__all__ = ["modcrop", "paired_random_crop", "augment", "random_crop_box"]


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so that height and width are multiples of ``scale``."""
    scale = int(scale)
    if scale < 1:
        raise UserError(f"modcrop: scale must be a positive integer, got {scale}")
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale, ...]


def random_crop_box(lq_hw: tuple[int, int], lq_patch: int, rng=None, name: str = "image") -> tuple[int, int]:
    """Top-left corner ``(top, left)`` of a random ``lq_patch`` square in an LR image of size
    ``lq_hw``; :class:`UserError` naming ``name`` if the image is smaller than the patch."""
    rng = rng or _random
    h, w = lq_hw
    if h < lq_patch or w < lq_patch:
        raise UserError(f"{name}: LR size {h}x{w} is smaller than the LR patch size {lq_patch}")
    return rng.randint(0, h - lq_patch), rng.randint(0, w - lq_patch)


def paired_random_crop(gt: np.ndarray, lq: np.ndarray, gt_patch_size: int, scale: int, rng=None,
                       name: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """Crop aligned random patches: ``gt_patch_size`` from ``gt``, ``gt_patch_size // scale`` from
    ``lq`` (BasicSR's ``paired_random_crop``). ``gt`` must be ``scale`` times ``lq``."""
    if gt_patch_size % scale:
        raise UserError(f"patch size {gt_patch_size} is not a multiple of the scale {scale}")
    lq_patch = gt_patch_size // scale
    h_lq, w_lq = lq.shape[:2]
    h_gt, w_gt = gt.shape[:2]
    if (h_gt, w_gt) != (h_lq * scale, w_lq * scale):
        raise UserError(f"{name}: GT size {h_gt}x{w_gt} is not {scale}x the LR size {h_lq}x{w_lq}")
    top, left = random_crop_box((h_lq, w_lq), lq_patch, rng, name)
    lq = lq[top:top + lq_patch, left:left + lq_patch, ...]
    gt = gt[top * scale:(top + lq_patch) * scale, left * scale:(left + lq_patch) * scale, ...]
    return gt, lq


def augment(imgs: Sequence[np.ndarray], hflip: bool = True, rotation: bool = True,
            rng=None, copy: bool = True) -> list[np.ndarray]:
    """Apply the same random flips / 90° rotation to every image (BasicSR's ``augment``).

    Draws three coin flips: horizontal flip (if ``hflip``), vertical flip and transpose (if
    ``rotation``); together they give all 8 dihedral transforms. Returns contiguous copies, or
    with ``copy=False`` views of the inputs (for a caller that copies them next anyway).
    """
    rng = rng or _random
    do_h = hflip and rng.random() < 0.5
    do_v = rotation and rng.random() < 0.5
    do_t = rotation and rng.random() < 0.5
    out = []
    for img in imgs:
        if do_h:
            img = img[:, ::-1, ...]
        if do_v:
            img = img[::-1, :, ...]
        if do_t:
            img = img.swapaxes(0, 1)
        out.append(np.ascontiguousarray(img) if copy else img)
    return out
