"""Files we own: atomic writes that never follow links, plain-typed torch files, run-folder locks.

Every output is written to a fresh temporary file in the target's folder (``mkstemp``: ``O_EXCL``,
so a planted link at a temporary name is never followed), flushed, fsync'ed and renamed over the
target with ``os.replace``. The rename replaces a symbolic link at the target instead of writing
through it, and a write that fails (no space, permission, a folder in the way) leaves the previous
file intact. Failures are :class:`~trilevelnas.errors.InputFileError` naming the path and the cause.

Torch files are read with ``weights_only=True`` only: they hold tensors and plain values (str, int,
float, bool, None, and lists, tuples and dicts of them), never pickled code.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from contextlib import contextmanager
from typing import Any, BinaryIO, Callable

import torch

from .errors import InputFileError

__all__ = ["os_error", "atomic_write", "write_json", "write_text", "save_torch", "load_torch",
           "check_plain", "append_text", "replacing", "check_writable_dir", "check_writable_file", "RunLock"]

_UMASK = os.umask(0)
os.umask(_UMASK)

_CAUSES = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (a size limit, e.g. ulimit -f)",
    errno.ENOTDIR: "a path component is not a folder",
    errno.EISDIR: "it is a folder",
    errno.EEXIST: "it exists and is not a folder",
    errno.ENOENT: "no such file or folder",
    errno.ELOOP: "too many symbolic links",
    errno.ENAMETOOLONG: "the name is too long",
}


def os_error(exc: OSError, path: str, action: str = "write") -> InputFileError:
    """A one-line :class:`InputFileError` for an OSError on ``path``: ``cannot <action> <path>: <cause>``."""
    cause = _CAUSES.get(exc.errno) or exc.strerror or str(exc)
    return InputFileError(f"cannot {action} {path}: {cause}")


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _torn_write(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's zip writer reporting a short write (a full disk, ``ulimit -f``)."""
    return isinstance(exc, RuntimeError) and any(
        s in str(exc) for s in ("unexpected pos", "enforce fail", "File too large"))


@contextmanager
def replacing(path: str, action: str = "write"):
    """Yield a fresh temporary file name next to ``path`` (ending in ``path``'s name, so writers that
    go by the extension — Pillow, matplotlib, torch.jit, ONNX — see it) and, once the block is done,
    fsync it and rename it over ``path``: a link there is replaced, not followed. On any failure the
    temporary file is removed and ``path`` is left as it was; an OSError (or torch's short-write
    RuntimeError) becomes a InputFileError naming ``path`` and the cause."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) and not os.path.islink(path):
        raise InputFileError(f"cannot {action} {path}: it is a folder")
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path)[-64:], dir=folder)
        os.fchmod(fd, 0o666 & ~_UMASK)
        os.close(fd)
    except OSError as exc:
        raise os_error(exc, path, action) from None
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise os_error(exc, path, action) from None
        if _torn_write(exc):
            raise InputFileError(f"cannot {action} {path}: the write failed ({str(exc).splitlines()[0][:120]}); "
                            "is the disk full?") from None
        raise
    _fsync_dir(folder)


def atomic_write(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(binary_file)`` atomically (:func:`replacing`)."""
    with replacing(path) as tmp, open(tmp, "wb") as f:
        write(f)


def write_text(text: str, path: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_json(obj: Any, path: str) -> None:
    """Write ``obj`` as indented JSON (with a final newline) to ``path`` atomically."""
    write_text(json.dumps(obj, indent=2) + "\n", path)


def check_plain(value: Any, where: str) -> None:
    """Raise TypeError unless ``value`` is made of values ``torch.load(weights_only=True)`` reads."""
    if value is None or isinstance(value, (str, int, float, bool, torch.Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where} has a key of type {type(k).__name__}; use str or int")
            check_plain(v, f"{where}[{k!r}]")
        return
    raise TypeError(f"{where} is a {type(value).__name__}; our torch files hold only plain values")


def save_torch(obj: Any, path: str, where: str = "file") -> None:
    """``torch.save(obj)`` atomically after checking that ``obj`` is plain (:func:`check_plain`)."""
    check_plain(obj, where)
    atomic_write(path, lambda f: torch.save(obj, f))


def load_torch(path: str, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; every failure is a InputFileError naming ``what`` and the file."""
    if os.path.isdir(path):
        raise InputFileError(f"{what} {path!r} is a folder, not a file")
    if not os.path.isfile(path):
        raise InputFileError(f"{what} {path!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise os_error(exc, path, "read") from None
    except Exception as exc:  # noqa: BLE001 - a wrong, torn or unsafe file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Weights only load failed" in str(exc) or "weights_only" in str(exc):
            first = "it holds pickled Python objects, which are not loaded (only tensors and plain values are)"
        raise InputFileError(f"{path!r} is not a readable torch {what} ({type(exc).__name__}: {first[:200]})") from None


def append_text(path: str, text: str) -> None:
    """Append ``text`` to the regular file ``path`` without following a symbolic link there."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(fd, "a", encoding="utf-8", newline="") as f:
            f.write(text)
    except OSError as exc:
        raise os_error(exc, path) from None


def check_writable_dir(path: str, what: str, shown: str | None = None) -> None:
    """InputFileError unless ``path`` is (or can be created as) a folder we can write into; the message
    names ``what`` and ``shown`` (default ``path``)."""
    shown = path if shown is None else shown
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise InputFileError(f"{what} {shown}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputFileError(f"{what} {shown}: cannot write into {probe}: permission denied")


def check_writable_file(path: str, what: str) -> None:
    """InputFileError unless a file can be written at ``path`` (its folder writable, not a folder itself)."""
    if os.path.isdir(path):
        raise InputFileError(f"{what} {path} is a folder; give a file name")
    check_writable_dir(os.path.dirname(os.path.abspath(path)), what, shown=path)
    if os.path.exists(path) and not os.path.islink(path) and not os.access(path, os.W_OK):
        raise InputFileError(f"{what} {path}: cannot write it: permission denied")


class RunLock:
    """An exclusive ``flock`` on ``<folder>/.lock`` held for the life of the process (or until :meth:`release`).

    A second run into the same folder gets a InputFileError naming the folder and the holder's pid.
    """

    def __init__(self, folder: str, what: str = "--out"):
        import fcntl

        self.path = os.path.join(folder, ".lock")
        try:
            os.makedirs(folder, exist_ok=True)
            if os.path.islink(self.path):
                os.unlink(self.path)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise os_error(exc, folder) from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.pread(self.fd, 32, 0).decode("ascii", "replace").strip() or "?"
            except OSError:
                holder = "?"
            os.close(self.fd)
            self.fd = None
            raise InputFileError(f"{what} {folder} is in use by another run (pid {holder}); wait for it to "
                            f"end or choose another {what}") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        """Drop the lock (the file stays; an unlocked file means no run holds the folder)."""
        if self.fd is not None:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
