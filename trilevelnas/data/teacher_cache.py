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

**Trust.** Next to each entry ``<key>.npy`` a record ``<key>.json`` holds what the key was made
of (the teacher's and the image's digests, the scale, the LR recipe, the precision) and the
SHA-256 of the entry file's bytes. An entry is used only if its record matches what this run
would have written and its bytes match the record's digest: an array planted under a predictable
key, a truncated or bit-flipped entry, or one of another teacher is recomputed (when filling) or
refused (when reading). Entries and records are opened without following links, and the folder
itself must not be a link. The default folder (:func:`default_folder`) is private to the user
(mode 0700, owned by them, checked on every run); a folder named explicitly (``--teacher-cache``)
may be shared, and then whoever can write there is trusted with the digests.

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
import stat
import sys
import time

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..fileio import atomic_write, check_writable_dir, os_error

__all__ = ["FORMAT", "TILE", "default_folder", "check_private_folder", "AUTOCAST_ENV", "AUTOCAST_MEAN_BOUND", "AUTOCAST_MAX_BOUND",
           "sha256_file", "sha256_array", "autocast_request", "TeacherCache", "CachedOutputs"]

FORMAT = 2
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


def default_folder() -> str:
    """The per-user default cache folder: ``$XDG_CACHE_HOME/trilevelnas/teacher``, with
    ``XDG_CACHE_HOME`` defaulting to ``~/.cache`` (the convention of pip and torch hub)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "trilevelnas", "teacher")


def check_private_folder(folder: str) -> None:
    """Create ``folder`` with mode 0700 if missing; UserError unless it is then a real folder (not a
    link), owned by this user and writable by no one else."""
    try:
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise os_error(exc, folder) from None
    st = os.lstat(folder)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UserError(f"teacher cache folder {folder} is a link or not a folder; remove it (it is "
                        "recreated as a private folder)")
    if st.st_uid != os.geteuid():
        raise UserError(f"teacher cache folder {folder} belongs to uid {st.st_uid}, not to you; remove it "
                        "or name another with --teacher-cache")
    if st.st_mode & 0o022:
        raise UserError(f"teacher cache folder {folder} is writable by others (mode "
                        f"{stat.S_IMODE(st.st_mode):o}); chmod 700 it, or name another with --teacher-cache")


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

    ``teacher`` runs on its own device; ``weights`` is the file it was loaded from (its content,
    and for an ncnn ``.param`` that of its ``.bin`` too, is part of every key). ``precision`` / ``dtype``: see :func:`autocast_request`.
    """

    def __init__(self, folder: str, teacher: nn.Module, weights: str, scale: int, *,
                 precision: str = "fp32", dtype: torch.dtype | None = None, tile: int = TILE,
                 tile_pad: int | None = None):
        self.folder = os.fspath(folder)
        self.teacher, self.scale = teacher, int(scale)
        self.precision, self.dtype = precision, dtype
        self.tile, self.tile_pad = tile, tile_pad
        from ..models.weights import weight_files

        files = weight_files(weights)  # an ncnn teacher: its .param and its .bin
        self.teacher_sha256 = sha256_file(files[0]) if len(files) == 1 else hashlib.sha256(
            "".join(sha256_file(f) for f in files).encode()).hexdigest()
        self._guarded = dtype is None
        self._channels_last = False
        self._entries: dict[int, tuple[object, list[tuple[str, tuple[int, int]]]]] = {}

    def key_fields(self, origin: dict) -> dict:
        """What the entry of an image described by ``origin`` (a data set's ``lr_origin(i)``) is
        made from: the format, the teacher's and the image's digests, scale, LR recipe, precision."""
        if "file" in origin:
            image = "file:" + sha256_file(origin["file"])
        else:
            image = "array:" + sha256_array(origin["array"])
        return {"format": FORMAT, "teacher": self.teacher_sha256, "image": image,
                "scale": self.scale, "lr": origin["method"], "precision": self.precision}

    def key(self, origin: dict) -> str:
        """The entry key of an image described by ``origin`` (a data set's ``lr_origin(i)``)."""
        return _key(self.key_fields(origin))

    def entry_path(self, key: str) -> str:
        """The file of entry ``key``."""
        return os.path.join(self.folder, key + ".npy")

    def entries(self, dataset) -> list[tuple[str, tuple[int, int], dict]]:
        """``(entry file, HR (height, width), key fields)`` of every image of ``dataset``, whether
        or not the file exists yet (the images are hashed once per data set and cache object)."""
        memo = self._entries.get(id(dataset))
        if memo is None or memo[0] is not dataset:
            found = []
            for i in range(_num_images(dataset)):
                origin = dataset.lr_origin(i)
                h, w = origin["lr_size"]
                fields = self.key_fields(origin)
                found.append((self.entry_path(_key(fields)), (h * self.scale, w * self.scale), fields))
            memo = self._entries[id(dataset)] = (dataset, found)
        return memo[1]

    def _check_folder(self) -> None:
        """UserError if the cache folder is a link (a link is never followed into)."""
        if os.path.islink(self.folder):
            raise UserError(f"teacher cache folder {self.folder} is a symbolic link; name the real "
                            "folder with --teacher-cache")

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
        """The teacher's output of ``x`` in channels-last memory format (oneDNN's and cuDNN's
        preferred layout: 1.19x faster for x4plus on this CPU, within 5.5e-6 of contiguous;
        benchmarks/results/teacher_pass.md)."""
        from ..inference import upscale_tensor

        if not self._channels_last:
            self.teacher.to(memory_format=torch.channels_last)
            self._channels_last = True
        return upscale_tensor(self.teacher, x.contiguous(memory_format=torch.channels_last), scale=self.scale,
                              tile=self.tile, tile_pad=self.tile_pad, dtype=dtype)

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
        self._check_folder()
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, self.folder) from None
        entries = self.entries(dataset)
        mine = [i for i in range(len(entries)) if i % world == rank]
        todo = [i for i in mine if _entry_problem(*entries[i]) is not None]
        bar = _Progress(len(mine), len(mine) - len(todo), self.folder, progress)
        try:
            for i in todo:
                lr = dataset.lr_image(i)
                out = self.compute(lr)
                if out.shape != (*entries[i][1], 3):
                    raise UserError(f"the teacher made a {out.shape[0]}x{out.shape[1]} output of "
                                    f"{dataset.names[i]} where {entries[i][1]} was expected")
                _write_entry(entries[i][0], out, entries[i][2])
                bar.step()
        finally:
            bar.close()
        return {"images": len(mine), "computed": len(todo), "cached": len(mine) - len(todo)}

    def output(self, dataset, index: int) -> np.ndarray:
        """The checked entry of ``dataset``'s image ``index`` (``H x W x 3`` uint16), computed and
        stored first if it is missing or fails its check (one teacher pass)."""
        self._check_folder()
        os.makedirs(self.folder, exist_ok=True)
        path, size, fields = self.entries(dataset)[index]
        if _entry_problem(path, size, fields) is None:
            return np.array(_open(path))
        out = self.compute(dataset.lr_image(index))
        _write_entry(path, out, fields)
        return out

    def outputs(self, dataset) -> "CachedOutputs":
        """The entries of all of ``dataset``'s images, checked (record, digest, shape, type); a
        missing or failing one is a UserError naming it."""
        self._check_folder()
        entries = self.entries(dataset)
        for entry in entries:
            problem = _entry_problem(*entry)
            if problem is not None:
                raise UserError(f"teacher cache entry {entry[0]} {problem}; run again to recompute it")
        return CachedOutputs([entry[0] for entry in entries], self.scale)


class CachedOutputs:
    """The cached teacher outputs of a data set's images, read by aligned crops (a data set's
    ``with_teacher`` view carries them in its samples).

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


def _key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:40]


def _record_path(entry: str) -> str:
    return entry[:-len(".npy")] + ".json"


def _read_nofollow(path: str) -> bytes | None:
    """The bytes of the regular file ``path``, None if it is missing, a link or not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb") as f:
            fd = -1
            return f.read()
    finally:
        if fd >= 0:
            os.close(fd)


def _write_entry(path: str, out: np.ndarray, fields: dict) -> None:
    """Write the entry and then its record (the fields and the digest of the entry's bytes)."""
    import io

    buf = io.BytesIO()
    np.save(buf, out, allow_pickle=False)
    data = buf.getvalue()
    atomic_write(path, lambda f: f.write(data))
    record = dict(fields, shape=list(out.shape), sha256=hashlib.sha256(data).hexdigest())
    atomic_write(_record_path(path), lambda f: f.write(json.dumps(record, sort_keys=True).encode()))


def _entry_problem(path: str, size: tuple[int, int], fields: dict) -> str | None:
    """Why the entry at ``path`` cannot be used (missing, no or another record, digest, shape,
    type), or None when it is the uint16 ``H x W x 3`` output of the HR ``size`` its record and
    digest vouch for."""
    raw = _read_nofollow(_record_path(path))
    if raw is None:
        return "is missing or has no record (or a link is in its place)"
    try:
        record = json.loads(raw)
    except ValueError:
        return "has an unreadable record"
    if not isinstance(record, dict) or {k: record.get(k) for k in fields} != fields:
        return "has a record of another teacher, image or recipe"
    data = _read_nofollow(path)
    if data is None:
        return "is missing (or a link is in its place)"
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        return "does not match the digest in its record (changed or corrupt)"
    arr = _open(path)
    if arr.dtype != np.uint16 or arr.shape != (*size, 3):
        return f"holds {arr.dtype} {arr.shape}, not uint16 {(*size, 3)}"
    return None
