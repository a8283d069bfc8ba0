"""LPIPS and NIQE, the perceptual metrics SR papers report beside PSNR and SSIM.

Nothing is downloaded: the weights and the NIQE model come from files the user names, or from an
installed package.

**LPIPS** v0.1 (Zhang et al. 2018) between two RGB images: both are scaled from [0, 1] to [-1, 1],
shifted by ``[-.030, -.088, -.188]`` and divided by ``[.458, .448, .450]`` per channel, run
through an ImageNet backbone (VGG16, taps after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3; or
AlexNet, after its five ReLUs); each tapped feature map is divided by its L2 norm over channels
(plus 1e-10), the two images' normalised features are subtracted and squared, weighted over
channels by the learned linear head of the layer (a 1x1 convolution without bias), averaged over
space, and the five layers are summed. The backbone is a torchvision state dict
(``features.N.weight``/``bias``, e.g. ``vgg16-397923af.pth``); the heads are the ``lpips``
package's ``weights/v0.1/vgg.pth`` / ``alex.pth`` (``pip install --no-deps lpips``; found without
importing ``lpips``, which needs torchvision) or a file in the same format.

**NIQE** (Mittal et al. 2013) of one image, as BasicSR's ``calculate_niqe`` and the MATLAB release
compute it: Y channel (BT.601, as :func:`trilevelnas.metrics.rgb_to_y`; a grey image as it is),
``crop_border`` pixels off each side, rounded to integers; cut to whole 96x96 patches; at two
scales (the second a MATLAB-bicubic 1/2 downscale, 48x48 patches) the MSCN coefficients
``(I - mu) / (sigma + 1)`` with a 7x7 Gaussian (sigma 7/6, replicated borders); per patch and
scale 18 features: an AGGD fit of the coefficients (shape, mean of the two scales) and of their
products with the four neighbours (horizontal, vertical, two diagonals; circular within the
patch) (shape, mean, left and right scale). The 36-feature MVG of the image's patches (mean
ignoring NaNs, covariance of the patches without NaN) is compared to the pristine model's:
``sqrt((mu_p - mu)^T pinv((cov_p + cov) / 2) (mu_p - mu))``; lower is better.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import gamma
from torch import nn

from .data.imresize import imresize
from .errors import InputFileError, UserError
from .fileio import atomic_write, load_torch
from .metrics import gaussian_window, rgb_to_y
from .models.weights import check_state_dict

__all__ = ["LPIPS", "lpips", "lpips_heads_path", "NIQEModel", "niqe", "fit_niqe_model", "niqe_features"]

# torchvision's `features` stacks up to the last tapped ReLU: ints are 3x3 convs (padding 1) with
# that many outputs, tuples are (out, kernel, stride, padding) convs, "M" max pools (VGG 2/2,
# AlexNet 3/2); every conv is followed by a ReLU
_NETS = {
    "vgg": dict(layers=[64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
                pool=(2, 2), taps=(3, 8, 15, 22, 29), min_size=16),
    "alex": dict(layers=[(64, 11, 4, 2), "M", (192, 5, 1, 2), "M", 384, 256, 256],
                 pool=(3, 2), taps=(1, 4, 7, 9, 11), min_size=31),
}


def _features(net: str) -> tuple[nn.Sequential, list[int]]:
    spec, layers, channels, widths = _NETS[net], [], 3, []
    for item in spec["layers"]:
        if item == "M":
            layers.append(nn.MaxPool2d(*spec["pool"]))
            continue
        out, kernel, stride, padding = (item, 3, 1, 1) if isinstance(item, int) else item
        layers += [nn.Conv2d(channels, out, kernel, stride, padding), nn.ReLU()]
        channels = out
        if len(layers) - 1 in spec["taps"]:
            widths.append(out)
    return nn.Sequential(*layers), widths


def lpips_heads_path(net: str = "vgg") -> str:
    """The installed ``lpips`` package's v0.1 linear heads for ``net`` ("vgg" or "alex"), found
    without importing it; UserError when the package is not installed."""
    spec = importlib.util.find_spec("lpips")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "weights", "v0.1", f"{net}.pth")
        if os.path.isfile(path):
            return path
    raise UserError(f"LPIPS needs the linear heads ({net}.pth of the lpips package): "
                    "pip install --no-deps lpips, or name a heads file")


class LPIPS(nn.Module):
    """LPIPS v0.1 with a VGG16 or AlexNet backbone; weights come from :meth:`from_files` (a bare
    instance is untrained). ``forward(x, y)`` takes two ``NCHW`` RGB batches in [0, 1] and
    returns the ``N`` distances (0 for identical images, symmetric)."""

    def __init__(self, net: str = "vgg"):
        super().__init__()
        if net not in _NETS:
            raise UserError(f"unknown LPIPS backbone {net!r} (use 'vgg' or 'alex')")
        self.net = net
        self.features, widths = _features(net)
        self.taps = _NETS[net]["taps"]
        self.heads = nn.ParameterList(nn.Parameter(torch.full((1, c, 1, 1), 1.0 / c)) for c in widths)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_files(cls, backbone: str | os.PathLike, heads: str | os.PathLike | None = None) -> "LPIPS":
        """LPIPS from a torchvision VGG16 or AlexNet state dict (the net is told by its keys; other
        keys than ``features.*`` are ignored) and a heads file (default: the installed lpips
        package's). Wrong keys or shapes are an InputFileError naming the file."""
        backbone = os.fspath(backbone)
        state = load_torch(backbone, "backbone file")
        if not isinstance(state, dict):
            raise InputFileError(f"{backbone}: not a state dict (a {type(state).__name__})")
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        net = "vgg" if "28.weight" in state else "alex" if "10.weight" in state else None
        if net is None:
            raise InputFileError(f"{backbone}: not a torchvision VGG16 or AlexNet state dict "
                                 "(no features.28.weight nor features.10.weight)")
        model = cls(net)
        check_state_dict(model.features.state_dict(), state, backbone, f"the {net} features")
        model.features.load_state_dict(state)
        heads = os.fspath(heads) if heads is not None else lpips_heads_path(net)
        lins = load_torch(heads, "LPIPS heads file")
        if not isinstance(lins, dict):
            raise InputFileError(f"{heads}: not a state dict (a {type(lins).__name__})")
        target = {f"lin{i}.model.1.weight": h for i, h in enumerate(model.heads)}
        check_state_dict(target, lins, heads, f"the LPIPS {net} heads")
        for i, h in enumerate(model.heads):
            h.copy_(lins[f"lin{i}.model.1.weight"])
        return model

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        size = _NETS[self.net]["min_size"]
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3 or min(x.shape[-2:]) < size:
            raise UserError(f"LPIPS ({self.net}) needs two NCHW RGB batches of one shape, at least "
                            f"{size}x{size}; got {tuple(x.shape)} and {tuple(y.shape)}")
        total = 0
        for fx, fy, head in zip(self._taps(x), self._taps(y), self.heads):
            fx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            fy = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + F.conv2d((fx - fy) ** 2, head).mean((1, 2, 3))
        return total

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, out = ((2 * x - 1) - self.shift) / self.scale, []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.taps:
                out.append(h)
        return out


def lpips(img, ref, net: LPIPS, crop_border: int = 0) -> float:
    """LPIPS between two ``HxWx3`` RGB images in 0..255 (uint8 or float; the :mod:`metrics`
    convention), ``crop_border`` pixels removed per side, on ``net``'s device, in float32."""
    a, b = np.asarray(img), np.asarray(ref)
    if a.shape != b.shape or a.ndim != 3 or a.shape[2] != 3:
        raise UserError(f"LPIPS needs two HxWx3 RGB images of one shape, got {a.shape} and {b.shape}")
    if crop_border < 0 or min(a.shape[:2]) <= 2 * crop_border:
        raise UserError(f"crop_border={crop_border} does not fit an image of shape {a.shape[:2]}")
    if crop_border:
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    device = net.shift.device
    x, y = (torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32) / 255.0).permute(2, 0, 1)[None].to(device)
            for v in (a, b))
    with torch.no_grad():
        return float(net(x, y)[0])


# ---- NIQE ------------------------------------------------------------------------------------

_PATCH = 96
_GAM = 0.2 + 0.001 * np.arange(9801)  # the AGGD shapes tried: 0.2:0.001:10
_R_GAM = gamma(2 / _GAM) ** 2 / (gamma(1 / _GAM) * gamma(3 / _GAM))


@dataclasses.dataclass
class NIQEModel:
    """The pristine MVG: ``mu`` (36,) and ``cov`` (36, 36) of the patch features."""

    mu: np.ndarray
    cov: np.ndarray

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "NIQEModel":
        """Read BasicSR's ``niqe_pris_params.npz`` (``mu_pris_param``, ``cov_pris_param``) or the
        MATLAB release's ``modelparameters.mat`` (``mu_prisparam``, ``cov_prisparam``); an
        InputFileError naming the file when it is unreadable or its arrays are not 36 and 36x36."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise InputFileError(f"NIQE model file {path!r} does not exist")
        mat = path.lower().endswith(".mat")
        keys = ("mu_prisparam", "cov_prisparam") if mat else ("mu_pris_param", "cov_pris_param")
        try:
            if mat:
                import scipy.io
                data = scipy.io.loadmat(path)
            else:
                with np.load(path, allow_pickle=False) as npz:
                    data = {k: npz[k] for k in npz.files}
        except Exception as exc:  # noqa: BLE001 - a wrong or torn file
            raise InputFileError(f"{path!r} is not a readable NIQE model file "
                                 f"({type(exc).__name__}: {str(exc).strip()[:200]})") from None
        for key in keys:
            if key not in data:
                raise InputFileError(f"{path}: no {key!r} (a NIQE model has {keys[0]!r} and {keys[1]!r})")
        mu, cov = np.asarray(data[keys[0]], np.float64).reshape(-1), np.asarray(data[keys[1]], np.float64)
        if mu.shape != (36,) or cov.shape != (36, 36) or not (np.isfinite(mu).all() and np.isfinite(cov).all()):
            raise InputFileError(f"{path}: a NIQE model needs 36 finite means and a 36x36 finite "
                                 f"covariance, got {mu.shape} and {cov.shape}")
        return cls(mu, cov)

    def save(self, path: str | os.PathLike) -> None:
        """Write the model as BasicSR's ``niqe_pris_params.npz`` (with its ``gaussian_window``)."""
        window = np.outer(gaussian_window(7, 7 / 6), gaussian_window(7, 7 / 6))
        atomic_write(os.fspath(path), lambda f: np.savez(f, mu_pris_param=self.mu, cov_pris_param=self.cov,
                                                         gaussian_window=window))


def _luma(img, crop_border: int) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise UserError(f"NIQE needs an HxW grey or HxWx3 RGB image, got shape {arr.shape}")
    y = rgb_to_y(arr) if arr.ndim == 3 else arr.astype(np.float64)
    if crop_border < 0 or min(y.shape) <= 2 * crop_border:
        raise UserError(f"crop_border={crop_border} does not fit an image of shape {y.shape}")
    if crop_border:
        y = y[crop_border:-crop_border, crop_border:-crop_border]
    return np.round(y)


def _blur(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable correlation with ``g`` ⊗ ``g``, borders replicated, same size."""
    k, r = g.size, g.size // 2
    h, w = img.shape
    p = np.pad(img, r, mode="edge")
    rows = sum(g[i] * p[i:i + h, :] for i in range(k))
    return sum(g[j] * rows[:, j:j + w] for j in range(k))


def _aggd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AGGD (shape, left scale, right scale) of each row of ``x``, by moment matching over _GAM."""
    neg, pos, sq = x < 0, x > 0, x * x
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.sqrt((sq * neg).sum(1) / neg.sum(1))
        right = np.sqrt((sq * pos).sum(1) / pos.sum(1))
        g = left / right
        rhat = np.abs(x).mean(1) ** 2 / sq.mean(1)
        rnorm = rhat * (g ** 3 + 1) * (g + 1) / (g ** 2 + 1) ** 2
        # a NaN row (a flat patch) gives index 0, as MATLAB's min does
        alpha = _GAM[np.argmin((_R_GAM[None, :] - rnorm[:, None]) ** 2, axis=1)]
        factor = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left * factor, right * factor


def _patch_features(patches: np.ndarray) -> np.ndarray:
    """The 18 features of each ``[B, s, s]`` patch of MSCN coefficients."""
    flat = patches.reshape(len(patches), -1)
    alpha, bl, br = _aggd(flat)
    out = [alpha, (bl + br) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        alpha, bl, br = _aggd(flat * np.roll(patches, shift, axis=(1, 2)).reshape(len(patches), -1))
        out += [alpha, (br - bl) * gamma(2 / alpha) / gamma(1 / alpha), bl, br]
    return np.stack(out, axis=1)


def _patches(img: np.ndarray, size: int) -> np.ndarray:
    nh, nw = img.shape[0] // size, img.shape[1] // size
    return img[:nh * size, :nw * size].reshape(nh, size, nw, size).swapaxes(1, 2).reshape(-1, size, size)


def niqe_features(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(features [P, 36], sharpness [P])`` of the 96x96 patches of a luma image ``y`` (0..255,
    already cropped and rounded); sharpness is the mean local sigma of the patch at scale 1."""
    if min(y.shape) < _PATCH:
        raise UserError(f"NIQE needs images of at least {_PATCH}x{_PATCH} after cropping, got {y.shape}")
    y = y[:y.shape[0] // _PATCH * _PATCH, :y.shape[1] // _PATCH * _PATCH]
    g, feats = gaussian_window(7, 7 / 6), []
    for scale in (1, 2):
        mu = _blur(y, g)
        sigma = np.sqrt(np.abs(_blur(y * y, g) - mu * mu))
        feats.append(_patch_features(_patches((y - mu) / (sigma + 1), _PATCH // scale)))
        if scale == 1:
            sharpness = _patches(sigma, _PATCH).mean((1, 2))
            y = imresize(y, 0.5)
    return np.concatenate(feats, axis=1), sharpness


def _mvg(feats: np.ndarray) -> NIQEModel:
    complete = feats[~np.isnan(feats).any(axis=1)]
    if len(complete) < 2:
        raise UserError(f"NIQE needs at least two 96x96 patches without flat areas, got {len(complete)}")
    return NIQEModel(np.nanmean(feats, axis=0), np.cov(complete, rowvar=False))


def niqe(img, model: NIQEModel, crop_border: int = 0) -> float:
    """NIQE of an ``HxWx3`` RGB (or ``HxW`` grey) image in 0..255 against ``model`` (BasicSR's
    ``calculate_niqe(img, crop_border)``); the image needs at least two 96x96 patches after
    cropping."""
    own = _mvg(niqe_features(_luma(img, crop_border))[0])
    d = model.mu - own.mu
    return float(np.sqrt(max(d @ np.linalg.pinv((model.cov + own.cov) / 2) @ d, 0.0)))


def fit_niqe_model(images, sharpness_threshold: float = 0.75) -> NIQEModel:
    """The pristine model from ``images`` (HxWx3 RGB or HxW grey, 0..255), as the MATLAB
    release's ``estimatemodelparam``: of each image, the patches whose sharpness exceeds
    ``sharpness_threshold`` times the image's sharpest patch; preprocessed as :func:`niqe` does."""
    kept = []
    for img in images:
        feats, sharp = niqe_features(_luma(img, 0))
        kept.append(feats[sharp > sharpness_threshold * sharp.max()])
    if not kept:
        raise UserError("fit_niqe_model needs at least one image")
    return _mvg(np.concatenate(kept))
