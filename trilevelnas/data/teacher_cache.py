"""The teacher-output cache: distillation at the cost of one teacher pass per training image.

Without it the ESRGAN teacher runs on every training batch's LR patch. With it the teacher's SR
output of each whole training LR image (made exactly as the data set makes the LR crops:
:meth:`lr_image`) is computed once and stored; a training sample then takes the aligned patch of
that output (:meth:`CachedOutputs.crop`), flipped and rotated with its LR and HR crops by the data
set (the random draws are the same with or without the cache, so a step draws the same crops).

**Key.** ``<folder>/<key>.npy`` with ``key`` the SHA-256 of: the cache format, the SHA-256 of the
teacher weight *file's content*, the SHA-256 of the image's content (the image file — the HR file,
or the LR file of a paired set — or the decoded pixels of an embedded photograph), the scale, how
the LR image is made from it (``lr_origin()["method"]``) and the compute precision. A changed
teacher, image, scale or LR recipe gives another key, so nothing stale is ever served.

**Format.** ``uint16`` ``.npy``, ``H x W x 3`` (HR size), the clamped output times 65535, rounded:
the quantisation of a 16-bit PNG (a uniform step of 1/65535, at most 7.6e-6 off) in a file that
is memory-mapped, so a crop reads only its rows — a PNG must be decoded whole for every crop.
float16 would be coarser where it matters: its step is 2^-11 = 4.9e-4 for values in [0.5, 1).
It costs 6 bytes per HR pixel (DIV2K's 800 training images: about 14 GB).

**Safety.** Each entry is written atomically (:func:`trilevelnas.fileio.atomic_write`) as soon as
its image is done: a run killed while filling keeps the finished entries, never leaves a
half-written one under an entry's name, and the next run computes only the rest. An entry of
the wrong shape or type is a :class:`~trilevelnas.errors.UserError` naming it (delete it to recompute).

**Compute.** The teacher runs where it lives (the run's device), tiled in ``tile x tile`` LR tiles
with a receptive-field pad (:func:`~trilevelnas.inference.receptive_radius`), so tiles show no
seams (images up to ``tile`` LR pixels a side run whole). On CUDA, ``TRILEVELNAS_TEACHER_AUTOCAST
=fp16|bf16`` (opt-in) runs it under autocast; the first image computed is then also run in fp32
and the run stops with a UserError unless the autocast output is within :data:`AUTOCAST_MEAN_BOUND`
(mean) and :data:`AUTOCAST_MAX_BOUND` (max) of it. Such entries have keys of their own.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..fileio import atomic_write, check_writable_dir, os_error

__all__ = ["FORMAT", "TILE", "AUTOCAST_ENV", "AUTOCAST_MEAN_BOUND", "AUTOCAST_MAX_BOUND",
           "sha256_file", "sha256_array", "autocast_request", "TeacherCache", "CachedOutputs", "attach"]

FORMAT = 1
#: LR tile side of the teacher pass (images up to this size a side run whole).
TILE = 512
AUTOCAST_ENV = "TRILEVELNAS_TEACHER_AUTOCAST"
#: Mean |autocast - fp32| allowed on the guard image: at an L1 loss of 0.01 or more the loss
#: then moves by at most 1e-3 relative.
AUTOCAST_MEAN_BOUND = 1e-5
#: Max |autocast - fp32| allowed on the guard image (half an 8-bit grey level).
AUTOCAST_MAX_BOUND = 0.5 / 255
_PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16}
_CHUNK = 1 << 20


def sha256_file(path: str) -> str:
    """The hex SHA-256 of the file's content (a UserError naming it if it cannot be read)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(_CHUNK), b""):
                digest.update(block)
    except OSError as exc:
        raise os_error(exc, path, "read") from None
    return digest.hexdigest()


def sha256_array(arr: np.ndarray) -> str:
    """The hex SHA-256 of an array's dtype, shape and bytes."""
    arr = np.ascontiguousarray(arr)
    digest = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()


def autocast_request(device: torch.device) -> tuple[str, torch.dtype | None]:
    """``(precision name, autocast dtype)`` the teacher pass uses: ``("fp32", None)`` unless
    ``TRILEVELNAS_TEACHER_AUTOCAST`` asks for fp16 / bf16, which needs a CUDA device."""
    value = os.environ.get(AUTOCAST_ENV, "").strip().lower()
    if value in ("", "0", "off", "fp32"):
        return "fp32", None
    if value not in _PRECISIONS:
        raise UserError(f"{AUTOCAST_ENV}={value!r}: expected fp16, bf16 or off")
    if device.type != "cuda":
        raise UserError(f"{AUTOCAST_ENV}={value} needs the run on a CUDA device (it runs on {device}); "
                        "unset it for fp32")
    return value, _PRECISIONS[value]


class _Progress:
    """Teacher-pass progress: a tqdm bar on a terminal (stderr), else a line every ``every``
    seconds on stdout; nothing with ``enabled=False`` (``None``: decide by the terminal)."""

    def __init__(self, total: int, done: int, folder: str, enabled: bool | None, every: float = 15.0):
        self.total, self.done, self.every = total, done, every
        self.t0 = self.last = time.time()
        self.bar, self.lines = None, False
        if enabled is False:
            return
        if total == done:
            print(f"teacher cache: all {total} teacher outputs found in {folder}", flush=True)
            return
        if enabled or sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc="teacher cache", unit="image",
                            dynamic_ncols=True, file=sys.stderr)
        else:
            self.lines = True
            print(f"teacher cache: computing {total - done} of {total} teacher outputs into {folder}",
                  flush=True)

    def step(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.lines and (time.time() - self.last >= self.every or self.done == self.total):
            self.last = time.time()
            print(f"teacher cache {self.done}/{self.total} images, elapsed {time.time() - self.t0:.0f} s",
                  flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class TeacherCache:
    """The cache folder of one teacher at one scale.

    ``teacher`` runs on its own device; ``weights`` is the file it was loaded from (its content
    is part of every key). ``precision`` / ``dtype``: see :func:`autocast_request`.
    """

    def __init__(self, folder: str, teacher: nn.Module, weights: str, scale: int, *,
                 precision: str = "fp32", dtype: torch.dtype | None = None, tile: int = TILE,
                 tile_pad: int | None = None):
        self.folder = os.fspath(folder)
        self.teacher, self.scale = teacher, int(scale)
        self.precision, self.dtype = precision, dtype
        self.tile, self.tile_pad = tile, tile_pad
        self.teacher_sha256 = sha256_file(weights)
        self._guarded = dtype is None
        self._entries: dict[int, tuple[object, list[tuple[str, tuple[int, int]]]]] = {}

    def key(self, origin: dict) -> str:
        """The entry key of an image described by ``origin`` (a data set's ``lr_origin(i)``)."""
        if "file" in origin:
            image = "file:" + sha256_file(origin["file"])
        else:
            image = "array:" + sha256_array(origin["array"])
        text = json.dumps({"format": FORMAT, "teacher": self.teacher_sha256, "image": image,
                           "scale": self.scale, "lr": origin["method"], "precision": self.precision},
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:40]

    def entry_path(self, key: str) -> str:
        """The file of entry ``key``."""
        return os.path.join(self.folder, key + ".npy")

    def entries(self, dataset) -> list[tuple[str, tuple[int, int]]]:
        """``(entry file, HR (height, width))`` of every image of ``dataset``, whether or not the
        file exists yet (the images are hashed once per data set and cache object)."""
        memo = self._entries.get(id(dataset))
        if memo is None or memo[0] is not dataset:
            found = []
            for i in range(_num_images(dataset)):
                origin = dataset.lr_origin(i)
                h, w = origin["lr_size"]
                found.append((self.entry_path(self.key(origin)), (h * self.scale, w * self.scale)))
            memo = self._entries[id(dataset)] = (dataset, found)
        return memo[1]

    @torch.no_grad()
    def compute(self, lr: np.ndarray) -> np.ndarray:
        """The teacher's output of a whole ``HxWx3`` float LR image, clamped, as ``uint16`` HR-sized."""
        param = next(self.teacher.parameters())
        x = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1), dtype=np.float32))[None]
        x = x.to(param.device)
        out = self._run(x, self.dtype)
        if not self._guarded:
            self._guard(out, self._run(x, None))
        out = out[0].clamp_(0, 1).mul_(65535).round_().to("cpu", torch.int32).numpy()
        return np.ascontiguousarray(out.transpose(1, 2, 0).astype(np.uint16))

    def _run(self, x: torch.Tensor, dtype) -> torch.Tensor:
        from ..inference import upscale_tensor

        return upscale_tensor(self.teacher, x, scale=self.scale, tile=self.tile, tile_pad=self.tile_pad,
                              dtype=dtype)

    def _guard(self, fast: torch.Tensor, exact: torch.Tensor) -> None:
        """Check the autocast output against fp32 on the first image computed (UserError if off)."""
        err = (fast.clamp(0, 1) - exact.clamp(0, 1)).abs()
        mean, worst = float(err.mean()), float(err.max())
        if mean > AUTOCAST_MEAN_BOUND or worst > AUTOCAST_MAX_BOUND:
            raise UserError(f"{AUTOCAST_ENV}={self.precision}: the teacher's {self.precision} output is "
                            f"{mean:.2e} (mean) / {worst:.2e} (max) from fp32, over the bounds "
                            f"{AUTOCAST_MEAN_BOUND:.0e} / {AUTOCAST_MAX_BOUND:.1e}; unset it for fp32")
        self._guarded = True

    def fill(self, dataset, *, rank: int = 0, world: int = 1, progress: bool | None = None) -> dict:
        """Compute and store every missing entry of ``dataset``'s images ``i`` with
        ``i % world == rank``; return ``{"images", "computed", "cached"}`` for this share.

        Existing entries are checked (shape, type) but not recomputed; each new entry is written
        atomically as soon as it is done. A folder that cannot be written is a one-line UserError
        naming it.
        """
        check_writable_dir(self.folder, "teacher cache folder")
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, self.folder) from None
        entries = self.entries(dataset)
        mine = [i for i in range(len(entries)) if i % world == rank]
        todo = []
        for i in mine:
            path, size = entries[i]
            if os.path.exists(path):
                _check_entry(path, size)
            else:
                todo.append(i)
        bar = _Progress(len(mine), len(mine) - len(todo), self.folder, progress)
        try:
            for i in todo:
                lr = dataset.lr_image(i)
                out = self.compute(lr)
                if out.shape != (*entries[i][1], 3):
                    raise UserError(f"the teacher made a {out.shape[0]}x{out.shape[1]} output of "
                                    f"{dataset.names[i]} where {entries[i][1]} was expected")
                atomic_write(entries[i][0], lambda f, a=out: np.save(f, a, allow_pickle=False))
                bar.step()
        finally:
            bar.close()
        return {"images": len(mine), "computed": len(todo), "cached": len(mine) - len(todo)}

    def outputs(self, dataset) -> "CachedOutputs":
        """The entries of all of ``dataset``'s images, checked; a missing one is a UserError."""
        entries = self.entries(dataset)
        for path, size in entries:
            if not os.path.exists(path):
                raise UserError(f"teacher cache entry {path} is missing (was the cache filled?)")
            _check_entry(path, size)
        return CachedOutputs([path for path, _ in entries], self.scale)


class CachedOutputs:
    """The cached teacher outputs of a data set's images, read by aligned crops.

    ``crop(index, (top, left, h, w))`` is the output at the LR box: the HR rows
    ``top*s .. (top+h)*s`` and columns ``left*s .. (left+w)*s`` as float32 in [0, 1]. The entry is
    memory-mapped for each crop (only the crop's pages are read; no file stays open).
    """

    def __init__(self, paths: list[str], scale: int):
        self.paths, self.scale = list(paths), int(scale)

    def __len__(self) -> int:
        return len(self.paths)

    def crop(self, index: int, box: tuple[int, int, int, int]) -> np.ndarray:
        top, left, h, w = box
        s = self.scale
        path = self.paths[index]
        arr = _open(path)
        patch = arr[top * s:(top + h) * s, left * s:(left + w) * s]
        if patch.shape[:2] != (h * s, w * s):
            raise UserError(f"teacher cache entry {path} ({arr.shape[0]}x{arr.shape[1]}) has no "
                            f"{h * s}x{w * s} crop at ({top * s}, {left * s})")
        return patch.astype(np.float32) / np.float32(65535)


def attach(dataset, outputs: CachedOutputs) -> None:
    """Make ``dataset``'s samples carry ``"teacher"``: the aligned crop of ``outputs``."""
    if len(outputs) != _num_images(dataset):
        raise ValueError(f"{len(outputs)} cached outputs for {_num_images(dataset)} images")
    dataset.teacher_crops = outputs


def _num_images(dataset) -> int:
    return dataset._num_images()


def _open(path: str) -> np.ndarray:
    """The entry memory-mapped read-only (a UserError naming it if it is not a readable .npy)."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except OSError as exc:
        raise os_error(exc, path, "read") from None
    except (ValueError, EOFError) as exc:
        raise UserError(f"teacher cache entry {path} cannot be read ({exc}); delete it to recompute") from None


def _check_entry(path: str, size: tuple[int, int]) -> None:
    """UserError unless ``path`` is a uint16 ``H x W x 3`` array of the HR ``size``."""
    arr = _open(path)
    if arr.dtype != np.uint16 or arr.shape != (*size, 3):
        raise UserError(f"teacher cache entry {path} holds {arr.dtype} {arr.shape}, not uint16 "
                        f"{(*size, 3)}; delete it to recompute")
