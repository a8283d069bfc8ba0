"""SR data sets returning BasicSR-style samples ``{"lq": CHW float, "gt": CHW float, "name": str}``.

* :class:`HRFolderDataset` — a folder of HR images; the LR image is made on the fly with
  MATLAB-style bicubic :func:`~trilevelnas.data.imresize` after ``modcrop`` and rounded to the
  source's bit depth (as an LR image saved by MATLAB would be).
* :class:`PairedFolderDataset` — BasicSR's ``dataroot_gt`` / ``dataroot_lq`` folders; the LR
  file of ``<stem>.<ext>`` is ``filename_tmpl.format(stem)`` with any image extension.
* :class:`EmbeddedDataset` — the photographs bundled with scikit-image (see
  :mod:`~trilevelnas.data.embedded`), treated as HR images.

With ``patch_size`` (GT patch side, a multiple of ``scale``) each sample is a random aligned crop;
without it, whole images. ``augment`` applies random flips and 90° rotations. Alpha channels are
dropped and grey images are replicated to RGB. The view ``dataset.with_teacher(crops)`` of a data
set (``crops``: the teacher-output cache's :class:`~trilevelnas.data.teacher_cache.CachedOutputs`)
also carries ``"teacher"`` in each sample: the cached teacher output at the sample's crop,
flipped and rotated with it. Problems with the data (an empty
folder, a missing LR file, an image smaller than the patch, a GT/LR size mismatch) raise
:class:`~trilevelnas.errors.UserError` naming the culprit when the data set is built.
"""
from __future__ import annotations

import copy
import os
import random as _random
import warnings

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import UserError
from .embedded import embedded_images
from .imresize import imresize
from .io import IMAGE_EXTENSIONS, check_image, image_to_tensor, list_images, read_image, to_float
from .png16 import png_header
from .transforms import augment as _augment
from .transforms import modcrop, random_crop_box

__all__ = ["HRFolderDataset", "PairedFolderDataset", "EmbeddedDataset", "build_dataset",
           "image_size", "lr_patch"]


LR_CACHE_BYTES = 1 << 30
"""At most this many bytes of LR images are kept per HR-source data set by default (the embedded set needs
~10 MB; a DIV2K-sized folder, more: past the budget, crops are resized from HR windows)."""


def image_size(path: str) -> tuple[int, int]:
    """``(height, width)`` of an image file from its header (:class:`UserError` if unreadable)."""
    check_image(path)
    head = png_header(path)
    if head is not None:
        return head["height"], head["width"]
    if path.lower().endswith((".tif", ".tiff")):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            shape = tif.pages[0].shape
            axes = tif.pages[0].axes
        return shape[axes.index("Y")], shape[axes.index("X")]
    with Image.open(path) as im:
        width, height = im.size
        orientation = im.getexif().get(0x0112, 1)
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def _check_scale_patch(scale, patch_size) -> tuple[int, int | None]:
    if int(scale) != scale or scale < 1:
        raise UserError(f"scale must be a positive integer, got {scale}")
    scale = int(scale)
    if patch_size is not None:
        if int(patch_size) != patch_size or patch_size < scale or patch_size % scale:
            raise UserError(f"patch size {patch_size} must be a positive multiple of the scale {scale}")
        patch_size = int(patch_size)
    return scale, patch_size


def lr_patch(hr: np.ndarray, top: int, left: int, lq_patch: int, scale: int) -> np.ndarray:
    """The ``lq_patch`` square at LR position ``(top, left)`` of ``imresize(hr, 1/scale)``.

    Only an HR window around the patch is resized (with a margin of ``3 * scale`` HR pixels that
    covers the antialiasing kernel, clipped at the image borders, where the symmetric padding is
    the same), so the result equals cropping the LR image of the whole ``hr`` (``hr`` must be
    modcropped).
    """
    margin = 3 * scale
    h, w = hr.shape[:2]
    y0, x0 = max(0, top * scale - margin), max(0, left * scale - margin)
    y1 = min(h, (top + lq_patch) * scale + margin)
    x1 = min(w, (left + lq_patch) * scale + margin)
    small = imresize(hr[y0:y1, x0:x1], 1.0 / scale)
    ty, tx = top - y0 // scale, left - x0 // scale
    return small[ty:ty + lq_patch, tx:tx + lq_patch]


def _max_value(raw: np.ndarray) -> int:
    """The largest value of an integer image's dtype (uint16 or uint8)."""
    return 65535 if raw.dtype == np.uint16 else 255


def _quantize(img: np.ndarray, max_value: int) -> np.ndarray:
    return (np.clip(np.round(img.astype(np.float64) * max_value), 0, max_value) / max_value).astype(np.float32)


class _SRBase(Dataset):
    """Shared sampling for the data sets (patch crop, augmentation, repeat)."""

    def __init__(self, scale, patch_size, augment, repeat, seed):
        self.scale, self.patch_size = _check_scale_patch(scale, patch_size)
        self.augment = bool(augment)
        if int(repeat) != repeat or repeat < 1:
            raise UserError(f"repeat must be a positive integer, got {repeat}")
        self.repeat = int(repeat)
        self._seeded = _random.Random(seed) if seed is not None else _random
        self._worker_rng = (None, None)
        self._teacher_crops = None  # see with_teacher

    @property
    def _rng(self):
        """The main process: ``random.Random(seed)`` (or the ``random`` module without a seed).
        A DataLoader worker: a generator seeded with the worker's seed (PyTorch derives it from
        its own RNG, so crops differ between workers and epochs and follow ``torch.manual_seed``)."""
        info = torch.utils.data.get_worker_info()
        if info is None:
            return self._seeded
        if self._worker_rng[0] != (info.id, info.seed):
            self._worker_rng = ((info.id, info.seed), _random.Random(info.seed))
        return self._worker_rng[1]

    def _num_images(self) -> int:
        raise NotImplementedError

    def __len__(self) -> int:
        return self._num_images() * self.repeat

    def lr_image(self, index: int) -> np.ndarray:
        """The whole LR image of image ``index`` (``HxWx3`` float32), exactly as the training
        crops are cut from it (a patch of it is what ``__getitem__`` returns as ``"lq"``)."""
        raise NotImplementedError

    def lr_origin(self, index: int) -> dict:
        """What :meth:`lr_image` is made from, for content-keyed caches: ``"file"`` (a path) or
        ``"array"`` (the integer image), ``"method"`` (how the LR image is made from it) and
        ``"lr_size"`` (the LR image's ``(height, width)``)."""
        raise NotImplementedError

    def with_teacher(self, crops) -> "_SRBase":
        """This data set (the same images and random draws) whose samples also carry
        ``"teacher"``: ``crops.crop(index, box)``, the teacher's output of image ``index`` at the
        sample's LR box ``(top, left, height, width)``, flipped and rotated with the sample.
        ``crops`` holds one entry per image (:class:`~trilevelnas.data.teacher_cache.CachedOutputs`)."""
        if len(crops) != self._num_images():
            raise ValueError(f"{len(crops)} teacher outputs for {self._num_images()} images")
        view = copy.copy(self)
        view._teacher_crops = crops
        return view

    def _teacher(self, index: int, box: tuple[int, int, int, int]) -> np.ndarray | None:
        """The teacher output at LR ``box`` of image ``index`` (HR-sized) of a :meth:`with_teacher` view."""
        return None if self._teacher_crops is None else self._teacher_crops.crop(index, box)

    def _finish(self, gt: np.ndarray, lq: np.ndarray, name: str, teacher: np.ndarray | None = None) -> dict:
        images = [gt, lq] if teacher is None else [gt, lq, teacher]
        if self.augment:  # the same draws with or without a teacher crop: one transform for all
            images = _augment(images, hflip=True, rotation=True, rng=self._rng, copy=False)
        item = {"lq": image_to_tensor(images[1]), "gt": image_to_tensor(images[0]), "name": name}
        if teacher is not None:
            item["teacher"] = image_to_tensor(images[2])
        return item


class _HRSource(_SRBase):
    """HR images → LR by bicubic downscaling (``_load(i)`` returns an integer ``HxWx3`` image)."""

    def __init__(self, names, sizes, scale, patch_size, augment, repeat, quantize, seed):
        super().__init__(scale, patch_size, augment, repeat, seed)
        self.names = list(names)
        self.sizes = [tuple(hw) for hw in sizes]  # (height, width) of each image
        self.quantize = bool(quantize)
        self._lr_cache: dict[int, np.ndarray] = {}
        self._lr_cached_bytes = 0
        self._lr_over_budget: set[int] = set()  # images whose LR did not fit: crops resized from HR
        self.lr_cache_bytes = LR_CACHE_BYTES  #: this data set's budget of kept LR images
        for name, (h, w) in zip(self.names, sizes):
            self._check_size(name, h, w)

    def _check_size(self, name, h, w):
        need = self.patch_size or self.scale
        hs, ws = h - h % self.scale, w - w % self.scale
        if hs < need or ws < need:
            what = f"the patch size {self.patch_size}" if self.patch_size else f"the scale {self.scale}"
            raise UserError(f"image {name} ({h}x{w}) is smaller than {what}")

    def _num_images(self) -> int:
        return len(self.names)

    def _load(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        index %= len(self.names)
        raw = modcrop(self._load(index), self.scale)
        if self.patch_size:
            s, lq_patch = self.scale, self.patch_size // self.scale
            top, left = random_crop_box((raw.shape[0] // s, raw.shape[1] // s), lq_patch, self._rng,
                                        self.names[index])
            gt = to_float(raw[top * s:(top + lq_patch) * s, left * s:(left + lq_patch) * s])
            lq = self._lr_crop(index, raw, top, left, lq_patch)
            box = (top, left, lq_patch, lq_patch)
        else:
            gt, lq = to_float(raw), self._whole_lr(index, raw).copy()
            box = (0, 0, gt.shape[0] // self.scale, gt.shape[1] // self.scale)
        return self._finish(gt, lq, self.names[index], self._teacher(index, box))

    def _whole_lr(self, index: int, raw: np.ndarray) -> np.ndarray:
        """The LR image of the (modcropped) ``raw`` image ``index``, kept while the kept LR images
        total at most :attr:`lr_cache_bytes` (crops are then cut from it instead of resized)."""
        lr = self._lr_cache.get(index)
        if lr is None:
            lr = imresize(to_float(raw), 1.0 / self.scale)
            if self.quantize:
                lr = _quantize(lr, _max_value(raw))
            if self._lr_cached_bytes + lr.nbytes <= self.lr_cache_bytes:
                self._lr_cache[index] = lr
                self._lr_cached_bytes += lr.nbytes
            else:
                self._lr_over_budget.add(index)
        return lr

    def _lr_crop(self, index: int, raw: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
        """The ``size`` square at LR ``(top, left)`` of image ``index``'s LR image: cut from the
        kept LR image, or (past the cache's budget) resized from an HR window (:func:`lr_patch`,
        the same values). A slice of the kept image is a view: the item's tensors are copies."""
        if index not in self._lr_over_budget:
            return self._whole_lr(index, raw)[top:top + size, left:left + size]
        lq = lr_patch(to_float(raw), top, left, size, self.scale)
        return _quantize(lq, _max_value(raw)) if self.quantize else lq

    def lr_image(self, index: int) -> np.ndarray:
        index %= len(self.names)
        return self._whole_lr(index, modcrop(self._load(index), self.scale)).copy()

    def _lr_origin(self, index: int, **source) -> dict:
        h, w = self.sizes[index % len(self.names)]
        method = (f"modcrop {self.scale}, MATLAB bicubic imresize 1/{self.scale}"
                  + (", rounded to the source bit depth" if self.quantize else ", float"))
        return {**source, "method": method, "lr_size": (h // self.scale, w // self.scale)}


def _usable(paths, skip_bad, check):
    """Apply ``check(path)`` to each path; raise on the first failure or skip it with a warning."""
    out = []
    for path in paths:
        try:
            result = check(path)
        except UserError as exc:
            if not skip_bad:
                raise
            warnings.warn(f"skipping bad image: {exc}", stacklevel=3)
            continue
        out.append((path, result))
    return out


class HRFolderDataset(_HRSource):
    """HR images from the folder ``root``; LR images made with MATLAB bicubic on the fly.

    ``skip_bad_images``: leave out unreadable images and images too small for the patch, with a
    warning each, instead of raising :class:`UserError`. ``cache``: keep decoded images in memory.
    ``repeat``: iterate the images that many times per epoch. ``quantize``: round the LR image to
    the source's bit depth. ``seed``: a random generator of its own for crops/augmentation in the
    main process (default: the ``random`` module); in DataLoader workers each worker draws from
    the seed PyTorch gives it, so workers differ and runs repeat under ``torch.manual_seed``.
    """

    def __init__(self, root, scale, patch_size=None, augment=False, *, skip_bad_images=False,
                 cache=False, repeat=1, quantize=True, recursive=False, seed=None):
        _check_scale_patch(scale, patch_size)
        self.root = os.fspath(root)
        paths = list_images(self.root, recursive=recursive)
        need = (patch_size or scale)

        def check(path):
            h, w = image_size(path)
            if h - h % int(scale) < need or w - w % int(scale) < need:
                what = f"the patch size {patch_size}" if patch_size else f"the scale {scale}"
                raise UserError(f"image {path} ({h}x{w}) is smaller than {what}")
            return h, w

        usable = _usable(paths, skip_bad_images, check)
        if not usable:
            raise UserError(f"no usable images in folder {self.root}")
        self.paths = [p for p, _ in usable]
        names = [os.path.splitext(os.path.relpath(p, self.root))[0] for p in self.paths]
        super().__init__(names, [s for _, s in usable], scale, patch_size, augment, repeat, quantize, seed)
        self.cache = {} if cache else None

    def _load(self, index: int) -> np.ndarray:
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        rgb = read_image(self.paths[index]).rgb
        if self.cache is not None:
            self.cache[index] = rgb
        return rgb

    def lr_origin(self, index: int) -> dict:
        return self._lr_origin(index, file=self.paths[index % len(self.paths)])


class EmbeddedDataset(_HRSource):
    """The scikit-image photographs of ``split`` (``"train"`` / ``"val"``) as HR images."""

    def __init__(self, split, scale, patch_size=None, augment=False, *, repeat=1, quantize=True, seed=None):
        _check_scale_patch(scale, patch_size)
        images = embedded_images(split)
        self.split = split
        self.images = [img for _, img in images]
        super().__init__([n for n, _ in images], [i.shape[:2] for i in self.images], scale,
                         patch_size, augment, repeat, quantize, seed)

    def _load(self, index: int) -> np.ndarray:
        return self.images[index]

    def lr_origin(self, index: int) -> dict:
        return self._lr_origin(index, array=self.images[index % len(self.images)])


def _find_lq(lq_root: str, stem: str, ext: str, filename_tmpl: str) -> str | None:
    try:
        lq_stem = filename_tmpl.format(stem)
    except (IndexError, KeyError, ValueError) as exc:
        raise UserError(f"bad filename template {filename_tmpl!r}: {exc}") from None
    exact = os.path.join(lq_root, lq_stem + ext)
    if os.path.isfile(exact):
        return exact
    for other in IMAGE_EXTENSIONS:
        for cand in (lq_stem + other, lq_stem + other.upper()):
            if os.path.isfile(os.path.join(lq_root, cand)):
                return os.path.join(lq_root, cand)
    return None


class PairedFolderDataset(_SRBase):
    """GT images from ``gt_root`` with their LR images from ``lq_root`` (BasicSR layout).

    The LR file of GT ``<stem>.<ext>`` is ``filename_tmpl.format(stem)`` plus the same extension
    (or any image extension), e.g. ``filename_tmpl="{}x4"`` for ``baby.png`` → ``babyx4.png``.
    The GT image must be ``scale`` times the LR image, up to a modcrop remainder (it is cropped to
    exactly ``scale`` times, as BasicSR does at test time).
    """

    def __init__(self, gt_root, lq_root, scale, patch_size=None, augment=False, filename_tmpl="{}",
                 *, skip_bad_images=False, cache=False, repeat=1, recursive=False, seed=None):
        super().__init__(scale, patch_size, augment, repeat, seed)
        self.gt_root, self.lq_root = os.fspath(gt_root), os.fspath(lq_root)
        if not os.path.exists(self.lq_root):
            raise UserError(f"LR image folder not found: {self.lq_root}")
        if not os.path.isdir(self.lq_root):
            raise UserError(f"LR image folder {self.lq_root}: it is a file, not a folder")
        self.filename_tmpl = filename_tmpl
        s, need = self.scale, (self.patch_size or self.scale) // self.scale

        def check(gt_path):
            stem, ext = os.path.splitext(os.path.relpath(gt_path, self.gt_root))
            lq_path = _find_lq(self.lq_root, stem, ext, filename_tmpl)
            if lq_path is None:
                raise UserError(f"no LR image for {gt_path}: expected "
                                f"{os.path.join(self.lq_root, filename_tmpl.format(stem) + ext)}")
            (hg, wg), (hl, wl) = image_size(gt_path), image_size(lq_path)
            if not (hl * s <= hg < (hl + 1) * s and wl * s <= wg < (wl + 1) * s):
                raise UserError(f"GT {gt_path} ({hg}x{wg}) is not {s}x its LR image {lq_path} ({hl}x{wl})")
            if hl < need or wl < need:
                raise UserError(f"LR image {lq_path} ({hl}x{wl}) is smaller than the LR patch size {need}")
            return lq_path

        usable = _usable(list_images(self.gt_root, recursive=recursive), skip_bad_images, check)
        if not usable:
            raise UserError(f"no usable image pairs in {self.gt_root} and {self.lq_root}")
        self.gt_paths = [g for g, _ in usable]
        self.lq_paths = [l for _, l in usable]
        self.names = [os.path.splitext(os.path.relpath(p, self.gt_root))[0] for p in self.gt_paths]
        self.cache = {} if cache else None

    def _num_images(self) -> int:
        return len(self.gt_paths)

    def _load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        pair = read_image(self.gt_paths[index]).rgb, read_image(self.lq_paths[index]).rgb
        if self.cache is not None:
            self.cache[index] = pair
        return pair

    def __getitem__(self, index: int) -> dict:
        index %= len(self.gt_paths)
        gt_raw, lq_raw = self._load_pair(index)
        s = self.scale
        h, w = lq_raw.shape[:2]
        if gt_raw.shape[0] < h * s or gt_raw.shape[1] < w * s:
            raise UserError(f"GT {self.gt_paths[index]} is not {s}x its LR image {self.lq_paths[index]}")
        gt, lq = to_float(gt_raw[: h * s, : w * s]), to_float(lq_raw)
        box = (0, 0, h, w)
        if self.patch_size:  # paired_random_crop's draws and boxes, with the box kept
            p = self.patch_size // s
            top, left = random_crop_box((h, w), p, self._rng, self.names[index])
            lq = lq[top:top + p, left:left + p]
            gt = gt[top * s:(top + p) * s, left * s:(left + p) * s]
            box = (top, left, p, p)
        return self._finish(gt, lq, self.names[index], self._teacher(index, box))

    def lr_image(self, index: int) -> np.ndarray:
        return to_float(self._load_pair(index % len(self.lq_paths))[1])

    def lr_origin(self, index: int) -> dict:
        path = self.lq_paths[index % len(self.lq_paths)]
        return {"file": path, "method": "paired LR file", "lr_size": image_size(path)}


def build_dataset(data=None, gt=None, lq=None, *, scale=4, patch_size=None, augment=False,
                  filename_tmpl="{}", split="train", skip_bad_images=False, cache=False, repeat=1,
                  seed=None) -> Dataset:
    """Choose the data set from the command-line style options.

    ``gt`` and ``lq`` → :class:`PairedFolderDataset`; ``data`` → :class:`HRFolderDataset`;
    neither → :class:`EmbeddedDataset` of ``split``.
    """
    if (gt is None) != (lq is None):
        raise UserError("paired folders need both --gt and --lq")
    if gt is not None:
        if data is not None:
            raise UserError("give either --data (HR folder) or --gt/--lq (paired folders), not both")
        return PairedFolderDataset(gt, lq, scale, patch_size, augment, filename_tmpl,
                                   skip_bad_images=skip_bad_images, cache=cache, repeat=repeat, seed=seed)
    if data is not None:
        return HRFolderDataset(data, scale, patch_size, augment, skip_bad_images=skip_bad_images,
                               cache=cache, repeat=repeat, seed=seed)
    return EmbeddedDataset(split, scale, patch_size, augment, repeat=repeat, seed=seed)
