"""MATLAB-compatible bicubic ``imresize`` for numpy arrays and torch tensors.

Super-resolution benchmarks make their low-resolution images with MATLAB's
``imresize(img, 1/scale, 'bicubic')``; PSNR numbers are only comparable with papers when the LR
images are made the same way. MATLAB's rules, reproduced here:

* cubic convolution kernel with ``a = -0.5`` (Keys);
* output size ``ceil(in * scale)``; output pixel ``x`` (1-based) samples the input at
  ``u = x / scale + 0.5 * (1 - 1 / scale)``;
* antialiasing when downscaling: the kernel is stretched to ``h(x) = scale * cubic(scale * x)``
  (support ``4 / scale``);
* the weights of each output pixel are normalised to sum 1;
* indices outside the image are mirrored symmetrically (``... 2 1 1 2 ... n n n-1 ...``);
* the two dimensions are resized one after the other (the one with the smaller scale first).

The computation runs in float64 for numpy (float32 and float64 tensors keep their dtype for torch).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import UserError

__all__ = ["imresize", "cubic", "resize_weights"]


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with ``a = -0.5`` (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def resize_weights(in_length: int, out_length: int, scale: float,
                   antialiasing: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Contribution weights and (0-based, mirrored) input indices for one dimension.

    Returns ``(weights, indices)``, both of shape ``[out_length, P]``: output pixel ``i`` is
    ``sum_k weights[i, k] * input[indices[i, k]]``. Columns whose weights are zero for every output
    pixel are dropped, as MATLAB does.
    """
    antialias = antialiasing and scale < 1
    kernel_width = 4.0 / scale if antialias else 4.0
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based
    distance = u[:, None] - indices
    weights = scale * cubic(scale * distance) if antialias else cubic(distance)
    weights = weights / weights.sum(axis=1, keepdims=True)
    keep = np.any(weights != 0, axis=0)
    weights, indices = weights[:, keep], indices[:, keep].astype(np.int64)
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    indices = mirror[np.mod(indices - 1, mirror.size)]
    return weights, indices


def _check_scale(scale) -> float:
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise UserError(f"imresize: scale must be a positive number, got {scale!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"imresize: scale must be a positive number, got {scale!r}")
    return value


def _out_length(length: int, scale: float) -> int:
    # MATLAB: ceil(scale * in); round first so that e.g. 0.25 * 40 is exactly 10
    return int(math.ceil(round(length * scale, 9)))


def _resize_numpy(img: np.ndarray, scale: float, antialiasing: bool) -> np.ndarray:
    from scipy.sparse import csr_matrix

    out = img.astype(np.float64)
    for dim in (0, 1):  # equal scales: rows first, as MATLAB
        length = out.shape[dim]
        weights, indices = resize_weights(length, _out_length(length, scale), scale, antialiasing)
        rows = np.repeat(np.arange(weights.shape[0]), weights.shape[1])
        # duplicate (row, index) pairs from the mirrored borders are summed by csr_matrix
        matrix = csr_matrix((weights.ravel(), (rows, indices.ravel())), shape=(weights.shape[0], length))
        moved = np.moveaxis(out, dim, 0)
        flat = matrix @ moved.reshape(length, -1)
        out = np.moveaxis(flat.reshape((weights.shape[0],) + moved.shape[1:]), 0, dim)
    return out


def _resize_torch(img: torch.Tensor, scale: float, antialiasing: bool) -> torch.Tensor:
    dtype = img.dtype if img.dtype in (torch.float32, torch.float64) else torch.float32
    out = img.to(dtype)
    for dim in (-2, -1):  # H then W
        length = out.shape[dim]
        weights, indices = resize_weights(length, _out_length(length, scale), scale, antialiasing)
        w = torch.as_tensor(weights, dtype=dtype, device=img.device)
        idx = torch.as_tensor(indices, device=img.device)
        acc = None
        shape = [1] * out.dim()
        shape[dim] = w.shape[0]
        for k in range(w.shape[1]):
            term = out.index_select(dim, idx[:, k]) * w[:, k].reshape(shape)
            acc = term if acc is None else acc + term
        out = acc
    return out


def imresize(img, scale, antialiasing: bool = True):
    """Resize ``img`` by ``scale`` with MATLAB's bicubic ``imresize`` (antialiased downscaling).

    ``img`` is either a numpy array ``HxW`` or ``HxWxC`` — float (any range; typically [0, 1]),
    returned as float of the same dtype; or uint8/uint16, computed in float64 and rounded and
    clipped back to the integer dtype, as MATLAB does — or a torch tensor ``CHW`` or ``NCHW``
    (float32/float64 keep their dtype, other dtypes are computed and returned in float32). The
    output size is ``ceil(size * scale)`` in each spatial dimension. Values are not clipped for
    float inputs (bicubic overshoots slightly at edges, as in MATLAB). ``antialiasing=False`` is
    MATLAB's ``'Antialiasing', false`` (plain cubic interpolation when downscaling).
    """
    value = _check_scale(scale)
    if isinstance(img, torch.Tensor):
        if img.dim() not in (3, 4):
            raise UserError(f"imresize: a tensor must be CHW or NCHW, got shape {tuple(img.shape)}")
        if min(img.shape[-2:]) < 1:
            raise UserError(f"imresize: empty image of shape {tuple(img.shape)}")
        return _resize_torch(img, value, antialiasing)
    if not isinstance(img, np.ndarray):
        raise UserError(f"imresize: expected a numpy array or a torch tensor, got {type(img).__name__}")
    if img.ndim not in (2, 3):
        raise UserError(f"imresize: a numpy image must be HxW or HxWxC, got shape {img.shape}")
    if min(img.shape[:2]) < 1:
        raise UserError(f"imresize: empty image of shape {img.shape}")
    out = _resize_numpy(img, value, antialiasing)
    if np.issubdtype(img.dtype, np.integer):
        info = np.iinfo(img.dtype)
        return np.clip(np.round(out), info.min, info.max).astype(img.dtype)
    if np.issubdtype(img.dtype, np.floating):
        return out.astype(img.dtype, copy=False)
    raise UserError(f"imresize: unsupported dtype {img.dtype}")
