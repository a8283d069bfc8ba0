"""PSNR and SSIM as BasicSR computes them, so that numbers compare with SR papers.

Inputs are ``HxWxC`` images in the 0..255 range (uint8, or float holding such values), RGB
channel order. ``crop_border`` pixels are removed on every side (papers use the scale). With
``y_channel=True`` both images are converted to the Y channel of BT.601 YCbCr
(``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``, unrounded, range 16..235); all
arithmetic is float64. SSIM uses an 11x11 Gaussian window with sigma 1.5 over the 'valid'
region, ``C1 = (0.01 * 255)^2``, ``C2 = (0.03 * 255)^2``, averaged over channels.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import UserError

__all__ = ["psnr", "ssim", "rgb_to_y", "gaussian_window"]

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Y of BT.601 YCbCr of an RGB ``HxWx3`` image in 0..255 → float64 ``HxW`` in 16..235."""
    arr = np.asarray(img, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise UserError(f"rgb_to_y needs an HxWx3 RGB image, got shape {arr.shape}")
    return arr @ _Y_WEIGHTS + 16.0


def _prepare(img, ref, crop_border: int, y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(img), np.asarray(ref)
    if a.shape != b.shape:
        raise UserError(f"image shapes differ: {a.shape} vs {b.shape}")
    if a.ndim == 2:
        a, b = a[:, :, None], b[:, :, None]
    if a.ndim != 3:
        raise UserError(f"metrics need HxW or HxWxC images, got shape {a.shape}")
    if crop_border < 0:
        raise UserError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border:
        if min(a.shape[:2]) <= 2 * crop_border:
            raise UserError(f"image of shape {a.shape[:2]} is too small for crop_border={crop_border}")
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        return rgb_to_y(a)[:, :, None], rgb_to_y(b)[:, :, None]
    return a.astype(np.float64), b.astype(np.float64)


def psnr(img, ref, crop_border: int = 4, y_channel: bool = True) -> float:
    """PSNR in dB (peak 255) between ``img`` and ``ref``; ``inf`` for identical images."""
    a, b = _prepare(img, ref, crop_border, y_channel)
    mse = np.mean((a - b) ** 2)
    if mse == 0:
        return float("inf")
    return float(10.0 * math.log10(255.0 ** 2 / mse))


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian (OpenCV's ``getGaussianKernel(size, sigma)``)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x ** 2) / (2.0 * sigma ** 2))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of ``img`` (HxW) with ``g`` ⊗ ``g``."""
    k = g.size
    h, w = img.shape
    rows = sum(g[i] * img[i:h - k + 1 + i, :] for i in range(k))
    return sum(g[j] * rows[:, j:w - k + 1 + j] for j in range(k))


def _ssim_channel(a: np.ndarray, b: np.ndarray, g: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a ** 2
    var_b = _filter_valid(b * b, g) - mu_b ** 2
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def ssim(img, ref, crop_border: int = 4, y_channel: bool = True) -> float:
    """SSIM between ``img`` and ``ref`` (BasicSR: Gaussian 11x11, sigma 1.5, mean over channels)."""
    a, b = _prepare(img, ref, crop_border, y_channel)
    if min(a.shape[:2]) < 11:
        raise UserError(f"SSIM needs images of at least 11x11 after cropping, got {a.shape[:2]}")
    g = gaussian_window(11, 1.5)
    return float(np.mean([_ssim_channel(a[:, :, c], b[:, :, c], g) for c in range(a.shape[2])]))
