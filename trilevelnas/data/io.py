"""Reading and writing images: RGB uint8/uint16 plus an optional alpha channel.

Every image is read as ``HxWx3`` RGB (grey images are replicated to three channels and remember
that they were grey), 8-bit or 16-bit, with its alpha channel split off. Writing does the inverse
and keeps alpha, 16-bit depth and greyness. A missing, unreadable or corrupt file raises
:class:`trilevelnas.errors.InputFileError` naming it.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputFileError, UserError
from ..fileio import os_error, replacing
from .png16 import png_header, read_png16, write_png16

__all__ = [
    "IMAGE_EXTENSIONS", "LoadedImage", "read_image", "write_image", "list_images", "scan_images",
    "check_image", "to_float", "from_float", "image_to_tensor", "tensor_to_image",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_TIFF = (".tif", ".tiff")
_EIGHT_BIT_ONLY = (".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".webp")
_WITH_ALPHA = (".png", ".webp", ".tif", ".tiff")


@dataclass
class LoadedImage:
    """An image as read from disk.

    ``rgb``: ``HxWx3`` uint8 or uint16; ``alpha``: ``HxW`` of the same dtype or None; ``gray``:
    the file had a single colour channel (``rgb`` holds it three times); ``path``: the file.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    gray: bool
    path: str

    @property
    def bit_depth(self) -> int:
        return 16 if self.rgb.dtype == np.uint16 else 8

    @property
    def max_value(self) -> int:
        return 65535 if self.rgb.dtype == np.uint16 else 255


def _from_channels(arr: np.ndarray, path: str) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Split an ``HxW`` / ``HxWxC`` (C in 1..4) integer array into rgb, alpha, gray."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise InputFileError(f"cannot read image {path}: unsupported layout {arr.shape}")
    if arr.dtype not in (np.uint8, np.uint16):
        raise InputFileError(f"cannot read image {path}: unsupported sample type {arr.dtype} "
                        "(8-bit and 16-bit images are supported)")
    channels = arr.shape[2]
    colour = arr[:, :, :1] if channels <= 2 else arr[:, :, :3]
    alpha = arr[:, :, channels - 1].copy() if channels in (2, 4) else None
    gray = channels <= 2
    rgb = np.ascontiguousarray(np.repeat(colour, 3, axis=2) if gray else colour)
    return rgb, alpha, gray


def _read_pil(path: str) -> tuple[np.ndarray, np.ndarray | None, bool]:
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        mode = im.mode
        if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
            return _from_channels(np.array(im).astype(np.uint16), path)
        if mode == "I":
            arr = np.array(im)
            if arr.min() < 0 or arr.max() > 65535:
                raise InputFileError(f"cannot read image {path}: 32-bit integer samples outside 0..65535")
            return _from_channels(arr.astype(np.uint16), path)
        if mode == "F":
            raise InputFileError(f"cannot read image {path}: floating-point images are not supported")
        if mode in ("LA", "La") or (mode in ("1", "L") and "transparency" in im.info):
            return _from_channels(np.array(im.convert("LA")), path)
        if mode in ("1", "L"):
            return _from_channels(np.array(im.convert("L")), path)
        has_alpha = mode in ("RGBA", "RGBa", "PA", "La") or "transparency" in im.info
        if has_alpha:
            return _from_channels(np.array(im.convert("RGBA")), path)
        return _from_channels(np.array(im.convert("RGB")), path)


def _read_tiff(path: str) -> tuple[np.ndarray, np.ndarray | None, bool]:
    import tifffile

    arr = tifffile.imread(path)
    if arr.ndim == 3 and arr.shape[0] in (1, 2, 3, 4) and arr.shape[2] not in (1, 2, 3, 4):
        arr = np.moveaxis(arr, 0, 2)  # planar (CHW) storage
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    return _from_channels(arr, path)


def _check_pixel_count(path: str, width: int, height: int) -> None:
    """InputFileError when a header declares more pixels than Pillow's decompression-bomb limit allows."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > 2 * limit:
        raise InputFileError(f"cannot read image {path}: its header declares {width} x {height} = "
                        f"{width * height} pixels, more than twice Pillow's limit of {limit} "
                        "(a decompression bomb?)")


def _check_image_path(path: str) -> None:
    """InputFileError unless ``path`` is an existing regular file we may read (names the cause)."""
    if not os.path.lexists(path):
        raise InputFileError(f"image file not found: {path}")
    if os.path.isdir(path):
        raise InputFileError(f"cannot read image {path}: it is a folder, not a file")
    if not os.path.exists(path):
        raise InputFileError(f"cannot read image {path}: a broken symbolic link")
    if not os.path.isfile(path):
        raise InputFileError(f"cannot read image {path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise InputFileError(f"cannot read image {path}: permission denied")


def read_image(path) -> LoadedImage:
    """Read an image file into a :class:`LoadedImage` (RGB + alpha, 8 or 16 bits).

    Grey, grey+alpha, palette, RGB and RGBA files in PNG, JPEG, BMP, TIFF, WebP and PNM are
    supported; 16-bit PNG and TIFF keep their 16 bits. EXIF orientation is applied. Raises
    :class:`InputFileError` naming the file if it is missing or cannot be decoded.
    """
    path = os.fspath(path)
    _check_image_path(path)
    try:
        head = png_header(path)
        if head is not None:
            _check_pixel_count(path, head["width"], head["height"])
        if head is not None and head["bit_depth"] == 16 and head["color_type"] != 0:
            rgb, alpha, gray = _from_channels(read_png16(path), path)
        elif path.lower().endswith(_TIFF):
            rgb, alpha, gray = _read_tiff(path)
        else:
            rgb, alpha, gray = _read_pil(path)
    except UserError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputFileError(f"cannot read image {path}: {exc}".split(" could be decompression")[0]
                        + " (a decompression bomb?)") from None
    except MemoryError:
        raise InputFileError(f"cannot read image {path}: not enough memory to decode it") from None
    except UnidentifiedImageError as exc:
        raise InputFileError(f"cannot read image {path}: {exc}") from None
    except OSError as exc:
        if exc.errno is not None:  # the file system's error, not a decoder's
            raise os_error(exc, f"image {path}", "read") from None
        raise InputFileError(f"cannot read image {path}: {exc}") from None
    except (ValueError, SyntaxError, EOFError) as exc:
        raise InputFileError(f"cannot read image {path}: {exc}") from None
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InputFileError(f"cannot read image {path}: it has no pixels")
    return LoadedImage(rgb=rgb, alpha=alpha, gray=gray, path=path)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """Grey level of an RGB integer image (BT.601 weights), same dtype."""
    info = np.iinfo(rgb.dtype)
    y = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.clip(np.round(y), 0, info.max).astype(rgb.dtype)


def write_image(path, rgb: np.ndarray, alpha: np.ndarray | None = None, gray: bool = False,
                quality: int = 95) -> None:
    """Write ``rgb`` (``HxWx3`` uint8/uint16) and optional ``alpha`` (``HxW``, same dtype).

    The format follows the extension; ``quality`` (1..100) is JPEG's and WebP's (ignored by the
    lossless formats). ``gray=True`` writes a single grey channel (BT.601 luma of
    ``rgb``). 16-bit data needs PNG or TIFF; alpha needs PNG, WebP or TIFF; otherwise
    :class:`InputFileError` names the file. Parent folders are created.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in IMAGE_EXTENSIONS:
        raise InputFileError(f"cannot write {path}: unknown image extension {ext!r} "
                        f"(use one of {', '.join(IMAGE_EXTENSIONS)})")
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"write_image needs HxWx3 uint8/uint16 data, got {rgb.shape} {rgb.dtype}")
    if alpha is not None and (alpha.shape != rgb.shape[:2] or alpha.dtype != rgb.dtype):
        raise ValueError("alpha must be HxW with the dtype of rgb")
    sixteen = rgb.dtype == np.uint16
    if sixteen and ext in _EIGHT_BIT_ONLY:
        raise InputFileError(f"cannot write {path}: {ext} cannot hold 16-bit images (use .png or .tif)")
    if alpha is not None and ext not in _WITH_ALPHA:
        raise InputFileError(f"cannot write {path}: {ext} cannot hold an alpha channel (use .png)")
    colour = _luma(rgb)[:, :, None] if gray else rgb
    arr = colour if alpha is None else np.concatenate([colour, alpha[:, :, None]], axis=2)
    with replacing(path) as tmp:
        _write_pixels(tmp, arr, ext, sixteen, gray, alpha is not None, quality)


def _write_pixels(path, arr, ext, sixteen, gray, has_alpha, quality=95) -> None:
    if ext in _TIFF:
        import tifffile

        tifffile.imwrite(path, arr[:, :, 0] if arr.shape[2] == 1 else arr,
                         photometric="minisblack" if gray else "rgb",
                         extrasamples=("unassalpha",) if has_alpha else None)
        return
    if sixteen:
        if arr.shape[2] == 1:
            Image.fromarray(arr[:, :, 0], mode=None).save(path)
        else:
            write_png16(path, arr)
        return
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
    img = Image.fromarray(arr[:, :, 0] if mode == "L" else arr, mode=None)
    if img.mode != mode:
        img = img.convert(mode)
    options = {"quality": int(quality)} if ext in (".jpg", ".jpeg", ".webp") else {}
    img.save(path, **options)


def check_image(path) -> None:
    """Raise :class:`InputFileError` naming ``path`` if it is missing or not a decodable image.

    Checks the header and the file structure (chunk CRCs for PNG) without decoding all pixels.
    """
    path = os.fspath(path)
    _check_image_path(path)
    try:
        if path.lower().endswith(_TIFF):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                if not tif.pages:
                    raise InputFileError(f"cannot read image {path}: the TIFF has no pages")
            return
        with Image.open(path) as im:
            im.verify()
    except UserError:
        raise
    except OSError as exc:
        if exc.errno is not None:  # the file system's error, not a decoder's
            raise os_error(exc, f"image {path}", "read") from None
        raise InputFileError(f"cannot read image {path}: {exc}") from None
    except Exception as exc:  # PIL raises many exception types for broken files
        raise InputFileError(f"cannot read image {path}: {exc}") from None


def list_images(root, recursive: bool = False) -> list[str]:
    """Sorted paths of the image files (by extension) in the folder ``root``.

    Raises :class:`InputFileError` if ``root`` is not a folder or holds no image files.
    """
    root = os.fspath(root)
    if not os.path.exists(root):
        raise InputFileError(f"image folder not found: {root}")
    if not os.path.isdir(root):
        raise InputFileError(f"image folder {root}: it is a file, not a folder")
    paths = []

    def walk_error(exc: OSError):
        raise os_error(exc, f"image folder {exc.filename or root}", "list")

    try:
        if recursive:
            for base, dirs, files in os.walk(root, onerror=walk_error):
                dirs.sort()
                paths += [os.path.join(base, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
        else:
            paths = [os.path.join(root, f) for f in os.listdir(root)
                     if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(root, f))]
    except OSError as exc:
        raise os_error(exc, f"image folder {root}", "list") from None
    if not paths:
        raise InputFileError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder {root}")
    return sorted(paths)


def scan_images(root, skip_bad: bool = False, recursive: bool = False) -> list[str]:
    """The readable images of folder ``root`` (see :func:`check_image`).

    With ``skip_bad=False`` the first bad image raises :class:`InputFileError` naming it; with
    ``skip_bad=True`` bad images are left out with a warning each. Raises if nothing is left.
    """
    good = []
    for path in list_images(root, recursive=recursive):
        try:
            check_image(path)
        except UserError as exc:
            if not skip_bad:
                raise
            warnings.warn(f"skipping bad image: {exc}", stacklevel=2)
            continue
        good.append(path)
    if not good:
        raise InputFileError(f"no readable images in folder {root}")
    return good


def to_float(arr: np.ndarray) -> np.ndarray:
    """uint8/uint16 → float32 in [0, 1]."""
    out = arr.astype(np.float32)
    out /= np.float32(65535.0 if arr.dtype == np.uint16 else 255.0)
    return out


def from_float(arr: np.ndarray, dtype=np.uint8) -> np.ndarray:
    """float in [0, 1] → uint8/uint16 (clipped, rounded half to even)."""
    dtype = np.dtype(dtype)
    top = 65535.0 if dtype == np.uint16 else 255.0
    return np.clip(np.round(np.asarray(arr, dtype=np.float64) * top), 0, top).astype(dtype)


def image_to_tensor(arr: np.ndarray) -> torch.Tensor:
    """``HxWxC`` (uint8/uint16 or float in [0, 1]) → float32 tensor ``CxHxW`` in [0, 1]."""
    if np.issubdtype(arr.dtype, np.integer):
        arr = to_float(arr)
    chw = arr.transpose(2, 0, 1)
    # always a copy: the array may be a view of a kept image
    return torch.from_numpy(np.array(chw, dtype=np.float32, order="C", copy=True))


def tensor_to_image(tensor: torch.Tensor, dtype=np.uint8) -> np.ndarray:
    """Float tensor ``CxHxW`` in [0, 1] → ``HxWxC`` uint8/uint16, clamped and rounded."""
    arr = tensor.detach().to("cpu", torch.float64).clamp_(0, 1).numpy().transpose(1, 2, 0)
    return from_float(arr, dtype)
