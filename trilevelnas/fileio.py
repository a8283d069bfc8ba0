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
import hashlib
import json
import os
import stat
import tempfile
from contextlib import contextmanager
from typing import Any, BinaryIO, Callable

import torch

from .errors import InputFileError

__all__ = ["os_error", "atomic_write", "write_json", "write_text", "save_torch", "load_torch",
           "check_plain", "content_digest", "check_seal", "DIGEST_KEY", "append_text", "replacing", "check_writable_dir",
           "check_writable_file", "RunLock", "RUN_MARKER", "check_out_dir", "mark_out_dir", "remove_stale_temps"]

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


#: The key under which a sealed torch file (:func:`save_torch` with ``seal=True``) keeps its digest.
DIGEST_KEY = "sha256"


def _digest_update(h, value: Any) -> None:
    """Feed ``value`` (a plain value, :func:`check_plain`) into the hash ``h``, type-tagged and
    length-prefixed so that different structures never feed the same bytes."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}{t.numel() * t.element_size()}:".encode())
        if t.numel():
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    elif isinstance(value, dict):
        h.update(f"D{len(value)}:".encode())
        for k in sorted(value, key=lambda k: (type(k).__name__, str(k))):
            _digest_update(h, k)
            _digest_update(h, value[k])
    elif isinstance(value, (list, tuple)):
        h.update(f"{'L' if isinstance(value, list) else 'U'}{len(value)}:".encode())
        for v in value:
            _digest_update(h, v)
    else:  # None, bool, int, float, str
        text = repr(value).encode()
        h.update(f"{type(value).__name__}{len(text)}:".encode() + text)


def content_digest(obj: Any) -> str:
    """The hex SHA-256 of a plain structure: every key, value, tensor dtype, shape and byte.

    Equal structures give equal digests whatever the dict order; a flipped bit in any tensor or a
    changed value gives another."""
    h = hashlib.sha256()
    _digest_update(h, obj)
    return h.hexdigest()


def save_torch(obj: Any, path: str, where: str = "file", seal: bool = False) -> None:
    """``torch.save(obj)`` atomically after checking that ``obj`` is plain (:func:`check_plain`).

    ``seal``: ``obj`` is a dict, written with :data:`DIGEST_KEY` added (its :func:`content_digest`)
    so that :func:`load_torch` with ``sealed=True`` detects any change to its tensors or values."""
    check_plain(obj, where)
    if seal:
        obj = {k: v for k, v in obj.items() if k != DIGEST_KEY}
        obj[DIGEST_KEY] = content_digest(obj)
    atomic_write(path, lambda f: torch.save(obj, f))


def check_seal(obj: Any, path: str, what: str) -> None:
    """InputFileError unless the dict ``obj`` (read from ``path``) holds the digest of its own
    content under :data:`DIGEST_KEY` (see :func:`save_torch`)."""
    if not isinstance(obj, dict) or not isinstance(obj.get(DIGEST_KEY), str):
        raise InputFileError(f"{what} {path!r} carries no digest of its content; it was not written by "
                             "this trilevelnas")
    found = content_digest({k: v for k, v in obj.items() if k != DIGEST_KEY})
    if found != obj[DIGEST_KEY]:
        raise InputFileError(f"{what} {path!r} is corrupt: its content does not match its digest "
                             f"(stored {obj[DIGEST_KEY][:12]}..., found {found[:12]}...)")


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
    The lock file is opened without following a symbolic link and without truncating; it is used
    only if it is a regular file of ours with no other name (a hard link planted at ``.lock``
    would make the pid overwrite the file it points to), otherwise a InputFileError names it.
    """

    def __init__(self, folder: str, what: str = "--out"):
        import fcntl

        self.path = os.path.join(folder, ".lock")
        try:
            os.makedirs(folder, exist_ok=True)
            if os.path.islink(self.path):
                os.unlink(self.path)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC
                              | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise os_error(exc, folder) from None
        st = os.fstat(self.fd)
        why = ("it is not a regular file" if not stat.S_ISREG(st.st_mode) else
               f"it has {st.st_nlink} names (a hard link to another file)" if st.st_nlink != 1 else
               f"it belongs to uid {st.st_uid}" if st.st_uid != os.geteuid() else None)
        if why:
            os.close(self.fd)
            self.fd = None
            raise InputFileError(f"{what} {folder}: {self.path} is not a lock file of ours ({why}); "
                                 "remove it or choose another " + what)
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


#: The file that marks a folder as a trilevelnas run's output folder (written when a run claims it).
RUN_MARKER = ".trilevelnas-run"
#: Names a folder may hold and still count as empty: what a run writes before its marker.
_BEFORE_MARKER = {".lock"}


def check_out_dir(folder: str, overwrite: bool = False, what: str = "--out") -> None:
    """Refuse to write into someone else's files: InputFileError unless ``folder`` is missing,
    empty (but for a lock), a run folder of ours (:data:`RUN_MARKER`, or a ``checkpoint.pt``, which
    loading checks further), or ``overwrite`` (``--overwrite``) lets the run replace files there.
    Nothing is written; :func:`mark_out_dir` marks the folder once its lock is held."""
    try:
        entries = sorted(os.listdir(folder))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise os_error(exc, folder, "read") from None
    foreign = [e for e in entries if e not in _BEFORE_MARKER]
    if foreign and RUN_MARKER not in entries and "checkpoint.pt" not in entries and not overwrite:
        raise InputFileError(f"{what} {folder} is not empty ({len(foreign)} entries, e.g. {foreign[0]!r}) "
                             f"and holds no trilevelnas run; choose a new or empty folder, or pass "
                             f"--overwrite to let this run replace files there")


def mark_out_dir(folder: str, program: str) -> None:
    """Write :data:`RUN_MARKER` into ``folder`` unless it is there (after :func:`check_out_dir`)."""
    if not os.path.lexists(os.path.join(folder, RUN_MARKER)):
        write_json({"program": program}, os.path.join(folder, RUN_MARKER))


def remove_stale_temps(folder: str) -> list[str]:
    """Remove the temporary files that writes interrupted by a kill left in ``folder`` (regular
    files named ``.tmp-*``, see :func:`replacing`); call it only while holding the folder's lock.
    Returns the names removed."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(folder, name)
        if name.startswith(".tmp-") and stat.S_ISREG(os.lstat(path).st_mode):
            try:
                os.unlink(path)
                removed.append(name)
            except OSError:
                pass
    return sorted(removed)
