"""trilevelnas.metrics: PSNR/SSIM as BasicSR computes them, checked against skimage and by hand."""
import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from trilevelnas.errors import UserError
from trilevelnas.metrics import gaussian_window, psnr, rgb_to_y, ssim


def pair(seed, shape=(40, 36, 3), noise=25):
    r = np.random.default_rng(seed)
    a = r.integers(0, 256, shape).astype(np.uint8)
    b = np.clip(a.astype(int) + r.integers(-noise, noise + 1, shape), 0, 255).astype(np.uint8)
    return a, b


def y_by_hand(img):
    r, g, b = (img[:, :, i].astype(np.float64) for i in range(3))
    return 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0


def test_rgb_to_y_is_bt601_studio_range():
    assert rgb_to_y(np.zeros((1, 1, 3), np.uint8))[0, 0] == pytest.approx(16.0)
    assert rgb_to_y(np.full((1, 1, 3), 255, np.uint8))[0, 0] == pytest.approx(235.0, abs=1e-9)
    a, _ = pair(0)
    assert np.allclose(rgb_to_y(a), y_by_hand(a), atol=1e-12)


@pytest.mark.parametrize("crop", [0, 2, 4])
def test_psnr_y_matches_hand_formula_and_skimage(crop):
    a, b = pair(crop)
    sl = slice(crop, -crop) if crop else slice(None)
    ya, yb = y_by_hand(a)[sl, sl], y_by_hand(b)[sl, sl]
    hand = 10 * math.log10(255 ** 2 / np.mean((ya - yb) ** 2))
    assert psnr(a, b, crop_border=crop) == pytest.approx(hand, abs=1e-10)
    assert psnr(a, b, crop_border=crop) == pytest.approx(peak_signal_noise_ratio(ya, yb, data_range=255), abs=1e-10)


def test_psnr_rgb_uses_all_channels():
    a, b = pair(5)
    c = a[4:-4, 4:-4].astype(np.float64) - b[4:-4, 4:-4]
    assert psnr(a, b, 4, y_channel=False) == pytest.approx(10 * math.log10(255 ** 2 / np.mean(c ** 2)), abs=1e-10)


@pytest.mark.parametrize("seed,noise", [(1, 10), (2, 60)])
def test_ssim_y_matches_skimage_gaussian_ssim(seed, noise):
    a, b = pair(seed, noise=noise)
    ya, yb = y_by_hand(a)[4:-4, 4:-4], y_by_hand(b)[4:-4, 4:-4]
    ref = structural_similarity(ya, yb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                data_range=255)
    assert ssim(a, b) == pytest.approx(ref, abs=1e-9)


def test_ssim_rgb_is_mean_of_channels():
    a, b = pair(3)
    ref = np.mean([structural_similarity(a[4:-4, 4:-4, c].astype(np.float64), b[4:-4, 4:-4, c].astype(np.float64),
                                         gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                         data_range=255) for c in range(3)])
    assert ssim(a, b, 4, y_channel=False) == pytest.approx(ref, abs=1e-9)


def test_identical_and_border_only_differences():
    a, _ = pair(4)
    assert psnr(a, a) == math.inf and ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    b = a.copy()
    b[:3] = 255 - b[:3]
    assert psnr(a, b, crop_border=3) == math.inf
    assert psnr(a, b, crop_border=2) < 40


def test_gaussian_window_is_normalised_opencv_kernel():
    g = gaussian_window(11, 1.5)
    x = np.arange(11) - 5
    raw = np.exp(-x ** 2 / 4.5)
    assert g.sum() == pytest.approx(1.0) and np.allclose(g, raw / raw.sum())


def test_float_inputs_in_0_255_equal_uint8():
    a, b = pair(6)
    assert psnr(a.astype(np.float32), b.astype(np.float64)) == pytest.approx(psnr(a, b), abs=1e-10)
    assert ssim(a.astype(np.float64), b) == pytest.approx(ssim(a, b), abs=1e-12)


def test_bad_inputs_raise_user_error():
    a, b = pair(7)
    with pytest.raises(UserError, match="shapes differ"):
        psnr(a, b[:-1])
    with pytest.raises(UserError, match="too small"):
        psnr(a[:8, :8], b[:8, :8], crop_border=4)
    with pytest.raises(UserError, match="RGB"):
        ssim(a[:, :, 0], b[:, :, 0], y_channel=True)
    with pytest.raises(UserError, match="11x11"):
        ssim(a[:16, :16], b[:16, :16], crop_border=4)
