"""LPIPS and NIQE (trilevelnas.iqa) against independent computations.

LPIPS: the lpips package's own ``LPIPS`` class (``pip install --no-deps lpips``), with torchvision
replaced by a stand-in whose ``vgg16``/``alexnet`` carry the same random backbone as ours (no
ImageNet weights here), and its shipped v0.1 heads. NIQE: a slow per-pixel, per-patch
re-derivation from the paper and the MATLAB release's description, written here.
"""
from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest
import scipy.io
import torch
from scipy.special import gamma
from torch import nn

from trilevelnas import iqa
from trilevelnas.data.embedded import embedded_images
from trilevelnas.data.imresize import imresize
from trilevelnas.errors import UserError

HAS_LPIPS = importlib.util.find_spec("lpips") is not None
needs_lpips = pytest.mark.skipif(not HAS_LPIPS, reason="lpips is not installed (pip install --no-deps lpips): "
                                                       "its heads and its reference LPIPS class are needed")


# ---- LPIPS -----------------------------------------------------------------------------------

def _vgg16_features() -> nn.Sequential:
    layers, c = [], 3
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            c = v
    return nn.Sequential(*layers)


def _alexnet_features() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))


BUILDERS = {"vgg": _vgg16_features, "alex": _alexnet_features}


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    """{net: (path, features)}: random backbones saved as torchvision state dicts (with a
    classifier key, which a whole-model file has)."""
    out = {}
    for i, (net, build) in enumerate(BUILDERS.items()):
        torch.manual_seed(i)
        features = build().eval()
        state = {f"features.{k}": v for k, v in features.state_dict().items()}
        state["classifier.0.weight"] = torch.zeros(4, 4)
        path = tmp_path_factory.mktemp("backbone") / f"{net}.pth"
        torch.save(state, path)
        out[net] = (str(path), features)
    return out


@pytest.fixture
def reference(backbones, monkeypatch):
    """lpips.LPIPS(net) built on the same backbones, through a stand-in torchvision."""
    if not HAS_LPIPS:
        pytest.skip("lpips is not installed (pip install --no-deps lpips)")
    models = types.ModuleType("torchvision.models")
    for name, net in (("vgg16", "vgg"), ("alexnet", "alex")):
        def make(*args, _net=net, **kwargs):
            return types.SimpleNamespace(features=backbones[_net][1])
        setattr(models, name, make)
    tv = types.ModuleType("torchvision")
    tv.models = models
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    before = set(sys.modules)
    import lpips
    yield lambda net: lpips.LPIPS(net=net, version="0.1", verbose=False).eval()
    for name in set(sys.modules) - before:
        if name == "lpips" or name.startswith("lpips."):
            del sys.modules[name]


@needs_lpips
@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_lpips_matches_the_lpips_package(net, backbones, reference):
    ours, ref = iqa.LPIPS.from_files(backbones[net][0]), reference(net)
    assert ours.net == net
    g = torch.Generator().manual_seed(7)
    x, y = torch.rand(2, 3, 64, 48, generator=g), torch.rand(2, 3, 64, 48, generator=g)
    y[1] = (x[1] + 0.05 * torch.randn(3, 64, 48, generator=g)).clamp(0, 1)
    with torch.no_grad():
        want = ref(x, y, normalize=True).view(-1)
        got = ours(x, y)
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)
        assert float(want.min()) > 0
        # the numpy entry point on 0..255 images
        a = (x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        b = (y[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        ta, tb = (torch.from_numpy(v / 255.0).float().permute(2, 0, 1)[None] for v in (a, b))
        assert iqa.lpips(a, b, ours) == pytest.approx(float(ref(ta, tb, normalize=True)), rel=1e-5)


@needs_lpips
def test_lpips_identity_symmetry_and_noise(backbones):
    net = iqa.LPIPS.from_files(backbones["vgg"][0], iqa.lpips_heads_path("vgg"))
    photo = dict(embedded_images("val"))["chelsea"][100:164, 200:264].astype(np.float64)
    rng = np.random.default_rng(0)
    assert iqa.lpips(photo, photo, net) == 0.0
    noisy = [np.clip(photo + rng.normal(0, s, photo.shape), 0, 255) for s in (4, 16, 48)]
    scores = [iqa.lpips(n, photo, net) for n in noisy]
    assert scores == sorted(scores) and scores[0] > 0
    assert iqa.lpips(photo, noisy[1], net) == pytest.approx(scores[1], rel=1e-6)
    assert iqa.lpips(noisy[1], photo, net, crop_border=4) != scores[1]


@needs_lpips
def test_lpips_bad_files_are_one_line_errors(backbones, tmp_path):
    state = torch.load(backbones["vgg"][0], weights_only=True)
    cases = {
        "bn.pth": dict(state, **{"features.1.running_mean": torch.zeros(64)}),
        "shape.pth": dict(state, **{"features.0.weight": torch.zeros(64, 1, 3, 3)}),
        "missing.pth": {k: v for k, v in state.items() if k != "features.2.bias"},
        "other.pth": {"conv.weight": torch.zeros(1)},
        "list.pth": [1, 2],
    }
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(UserError) as info:
            iqa.LPIPS.from_files(tmp_path / name)
        assert str(tmp_path / name) in str(info.value) and "\n" not in str(info.value), name
    with pytest.raises(UserError, match="alex.pth.*shape"):  # AlexNet heads on VGG16
        iqa.LPIPS.from_files(backbones["vgg"][0], heads=iqa.lpips_heads_path("alex"))
    with pytest.raises(UserError, match="does not exist"):
        iqa.LPIPS.from_files(tmp_path / "none.pth")
    net = iqa.LPIPS.from_files(backbones["alex"][0])
    with pytest.raises(UserError, match="at least 31x31"):
        iqa.lpips(np.zeros((30, 30, 3)), np.zeros((30, 30, 3)), net)
    with pytest.raises(UserError, match="HxWx3"):
        iqa.lpips(np.zeros((40, 40)), np.zeros((40, 40)), net)


def test_lpips_heads_need_the_package(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install --no-deps lpips"):
        iqa.lpips_heads_path("vgg")


# ---- NIQE ------------------------------------------------------------------------------------

def _slow_niqe(y: np.ndarray, mu_p: np.ndarray, cov_p: np.ndarray) -> float:
    """NIQE of a rounded luma image, re-derived per pixel and per patch."""
    r = np.arange(-3, 4)
    window = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * (7 / 6) ** 2))
    window /= window.sum()
    gam = np.arange(0.2, 10.001, 0.001)
    r_gam = gamma(2 / gam) ** 2 / (gamma(1 / gam) * gamma(3 / gam))

    def aggd(v):
        with np.errstate(invalid="ignore", divide="ignore"):  # a flat patch: NaN, as in MATLAB
            return aggd_nan(v)

    def aggd_nan(v):
        left = np.sqrt(np.mean(v[v < 0] ** 2)) if (v < 0).any() else np.nan
        right = np.sqrt(np.mean(v[v > 0] ** 2)) if (v > 0).any() else np.nan
        g = left / right
        rn = np.mean(np.abs(v)) ** 2 / np.mean(v ** 2) * (g ** 3 + 1) * (g + 1) / (g ** 2 + 1) ** 2
        alpha = gam[0] if np.isnan(rn) else gam[np.argmin((r_gam - rn) ** 2)]
        f = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
        return alpha, left * f, right * f

    def patch_features(p):
        n = p.shape[0]
        alpha, bl, br = aggd(p.ravel())
        feats = [alpha, (bl + br) / 2]
        for dr, dc in ((0, 1), (1, 0), (1, 1), (-1, 1)):  # MATLAB circshift offsets
            shifted = np.empty_like(p)
            for i in range(n):
                for j in range(n):
                    shifted[i, j] = p[(i - dr) % n, (j - dc) % n]
            alpha, bl, br = aggd((p * shifted).ravel())
            feats += [alpha, (br - bl) * gamma(2 / alpha) / gamma(1 / alpha), bl, br]
        return feats

    h, w = y.shape[0] // 96 * 96, y.shape[1] // 96 * 96
    img, rows = y[:h, :w].astype(np.float64), None
    for scale in (1, 2):
        size = 96 // scale
        hh, ww = img.shape
        mscn = np.empty_like(img)
        for i in range(hh):
            for j in range(ww):
                ii = np.clip(np.arange(i - 3, i + 4), 0, hh - 1)
                jj = np.clip(np.arange(j - 3, j + 4), 0, ww - 1)
                nb = img[np.ix_(ii, jj)]
                mu = np.sum(window * nb)
                sigma = np.sqrt(abs(np.sum(window * nb * nb) - mu * mu))
                mscn[i, j] = (img[i, j] - mu) / (sigma + 1)
        feats = [patch_features(mscn[a:a + size, b:b + size])
                 for a in range(0, hh, size) for b in range(0, ww, size)]
        rows = np.array(feats) if rows is None else np.hstack([rows, np.array(feats)])
        img = imresize(img, 0.5)
    mu = np.array([np.mean(c[~np.isnan(c)]) for c in rows.T])
    good = rows[~np.isnan(rows).any(axis=1)]
    centred = good - good.mean(axis=0)
    cov = sum(np.outer(v, v) for v in centred) / (len(good) - 1)
    d = mu_p - mu
    return float(np.sqrt(d @ np.linalg.pinv((cov_p + cov) / 2) @ d))


@pytest.fixture(scope="module")
def pristine():
    return iqa.fit_niqe_model(img for _, img in embedded_images("train"))


@pytest.fixture(scope="module")
def coffee():
    return dict(embedded_images("val"))["coffee"]


def test_niqe_matches_slow_rederivation(pristine, coffee):
    img = coffee[40:240, 100:400]  # 2x3 patches after cropping to whole patches
    y = np.round(16 + (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255)
    want = _slow_niqe(y[3:-3, 3:-3], pristine.mu, pristine.cov)
    assert iqa.niqe(img, pristine, crop_border=3) == pytest.approx(want, rel=1e-9)
    flat = y.copy()
    flat[:102, :102] = 0  # a flat patch (exact zeros): NaN features, left out of the covariance
    assert iqa.niqe(flat, pristine) == pytest.approx(_slow_niqe(flat, pristine.mu, pristine.cov), rel=1e-9)


def test_niqe_prefers_pristine_images(pristine):
    img = dict(embedded_images("train"))["astronaut"].astype(np.float64)
    rng = np.random.default_rng(0)
    clean = iqa.niqe(img, pristine)
    blurred = iqa.niqe(imresize(imresize(img, 0.25), 4), pristine)
    noisy = iqa.niqe(np.clip(img + rng.normal(0, 12, img.shape), 0, 255), pristine)
    assert clean < blurred and clean < noisy, (clean, blurred, noisy)


def test_niqe_distance_formula(coffee):
    own = iqa.fit_niqe_model([coffee], sharpness_threshold=0)  # every patch: the image's own MVG
    assert iqa.niqe(coffee, own) == 0.0
    d = np.random.default_rng(1).normal(0, 0.1, 36)
    moved = iqa.NIQEModel(own.mu + d, own.cov)
    assert iqa.niqe(coffee, moved) == pytest.approx(np.sqrt(d @ np.linalg.pinv(own.cov) @ d), rel=1e-9)
    kept = iqa.fit_niqe_model([coffee])  # only the sharpest patches: another model
    assert not np.allclose(kept.mu, own.mu)


def test_niqe_model_files(pristine, coffee, tmp_path):
    npz = tmp_path / "niqe_pris_params.npz"
    pristine.save(npz)
    with np.load(npz) as data:
        assert sorted(data.files) == ["cov_pris_param", "gaussian_window", "mu_pris_param"]
        assert data["gaussian_window"].shape == (7, 7)
    back = iqa.NIQEModel.from_file(npz)
    assert np.array_equal(back.mu, pristine.mu) and np.array_equal(back.cov, pristine.cov)
    mat = tmp_path / "modelparameters.mat"
    scipy.io.savemat(mat, {"mu_prisparam": pristine.mu[None, :], "cov_prisparam": pristine.cov})
    assert iqa.niqe(coffee, iqa.NIQEModel.from_file(mat)) == iqa.niqe(coffee, pristine)
    np.savez(tmp_path / "nokey.npz", mu_pris_param=pristine.mu)
    np.savez(tmp_path / "shape.npz", mu_pris_param=pristine.mu[:18], cov_pris_param=pristine.cov)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    for name, match in (("nokey.npz", "cov_pris_param"), ("shape.npz", "36"), ("junk.npz", "not a readable"),
                        ("none.npz", "does not exist")):
        with pytest.raises(UserError, match=match) as info:
            iqa.NIQEModel.from_file(tmp_path / name)
        assert str(tmp_path / name) in str(info.value) and "\n" not in str(info.value)


def test_niqe_bad_input(pristine):
    with pytest.raises(UserError, match="at least 96x96"):
        iqa.niqe(np.zeros((100, 200, 3)), pristine, crop_border=4)
    with pytest.raises(UserError, match="two 96x96 patches"):
        iqa.niqe(np.random.default_rng(0).uniform(0, 255, (100, 100)), pristine)
    with pytest.raises(UserError, match="grey or HxWx3"):
        iqa.niqe(np.zeros((200, 200, 4)), pristine)
