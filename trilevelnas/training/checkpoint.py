"""Checkpoints: the program checkpoint's layout (:class:`Checkpoint`), atomic writes and the
random-number-generator state they carry.

This module is the only one that knows a program checkpoint's keys: :meth:`Checkpoint.to_dict`
and :meth:`Checkpoint.from_dict` map its sections to the flat dict on disk, :func:`load` checks a
file against :data:`SCHEMA` and its digest, and :func:`read` gives the :class:`Checkpoint` of a
file.

A checkpoint is written to a temporary file in the same folder, flushed and fsync'ed, then renamed
over the old one with ``os.replace`` (atomic on POSIX), and the folder is fsync'ed: a run killed at
any moment leaves either the previous checkpoint or the new one, never a torn file. Checkpoints
hold only tensors and plain values and are read with ``weights_only=True``, so loading a crafted
file never runs code.
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import InputFileError
from ..fileio import check_seal, load_torch, save_torch

#: The checkpoint format written and resumed by this trilevelnas; 2 added the content digest, the
#: log rows and running means, the data digests and the train program's init record
#: (docs/pipeline.md). A file of another version is a one-line error naming its version.
VERSION = 2
#: The phases a checkpoint's loop position may name ("" before the first phase).
PHASES = ("", "pretrain", "search", "train", "finetune")


def save_atomic(obj: Any, path: str) -> None:
    """Write the checkpoint ``obj`` to ``path`` atomically (:func:`trilevelnas.fileio.save_torch`),
    sealed with the digest of its content when it is a versioned (program) checkpoint.

    ``obj`` must be plain (tensors and plain values) so that it loads with ``weights_only=True``; a
    failed write (no space, permission) is a InputFileError and leaves the previous checkpoint intact.
    """
    save_torch(obj, path, "checkpoint", seal="version" in obj)


#: What every loop checkpoint holds; a file without one of these is not a (complete) checkpoint.
REQUIRED_KEYS = ("loop", "rng")
#: What a checkpoint of the search and train programs holds besides.
PROGRAM_KEYS = ("version", "program", "config") + REQUIRED_KEYS


def load(path: str, what: str = "checkpoint", required: tuple[str, ...] = REQUIRED_KEYS) -> dict:
    """A checkpoint dict from ``path``, loaded with ``weights_only=True`` (never runs pickled code).

    A missing, unreadable, unsafe or foreign file, or one that lacks any of ``required``, raises a
    InputFileError naming the file (and the missing keys). A program checkpoint (``required`` =
    :data:`PROGRAM_KEYS`, or a file that holds them) is also checked against its version, its
    schema and its digest (:func:`check_schema`): a changed, truncated or mistyped field is a
    one-line error.
    """
    obj = load_torch(path, what)
    if not isinstance(obj, dict):
        raise InputFileError(f"{what} {path!r} is not a trilevelnas checkpoint (not a dict)")
    missing = [k for k in required if k not in obj]
    if missing:
        raise InputFileError(f"{what} {path!r} is not a complete trilevelnas checkpoint: it lacks "
                        + ", ".join(repr(k) for k in missing))
    if required == PROGRAM_KEYS or all(k in obj for k in PROGRAM_KEYS):  # a program checkpoint
        check_schema(obj, path, what)
    return obj


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _tensor_dict(v) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in v.items())


def _optional(check):
    return lambda v: v is None or check(v)


def _dict(v) -> bool:
    return isinstance(v, dict)


#: The program checkpoint's fields: ``key: (what it must be, check)``; a key absent from a file
#: of an older version is allowed where the check accepts None.
SCHEMA = {
    "program": ("'search' or 'train'", lambda v: v in ("search", "train")),
    "config": ("a dict", _dict),
    "supernet_config": ("a dict or null", _optional(_dict)),
    "supernet": ("a dict of tensors or null", _optional(_tensor_dict)),
    "arch": ("a dict of tensors", lambda v: v is None or _tensor_dict(v)),
    "architecture": ("a dict or null", _optional(_dict)),
    "model": ("a dict of tensors or null", _optional(_tensor_dict)),
    "model_ema": ("a dict of tensors or null", _optional(_tensor_dict)),
    "optimizers": ("a dict", lambda v: v is None or _dict(v)),
    "history": ("a list of dicts", lambda v: v is None or (isinstance(v, list) and all(map(_dict, v)))),
    "val": ("a dict", lambda v: v is None or _dict(v)),
    "best_val": ("a dict or null", _optional(_dict)),
    "decisions": ("a dict or null", _optional(_dict)),
    "data": ("a dict or null", _optional(_dict)),
    "init": ("a dict or null", _optional(_dict)),
    "rng": ("the generator states", lambda v: _dict(v) and _dict(v.get("python")) and _dict(v.get("numpy"))
            and isinstance(v.get("torch"), torch.Tensor) and isinstance(v["python"].get("state"), torch.Tensor)
            and isinstance(v["numpy"].get("keys"), torch.Tensor) and _is_int(v["python"].get("version"))
            and _is_int(v["numpy"].get("pos")) and isinstance(v["numpy"].get("name"), str)),
}
_LOOP = {
    "phase": ("one of " + ", ".join(repr(p) for p in PHASES), lambda v: v in PHASES),
    "step": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
    "global_step": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
    "done": ("a list of phases", lambda v: isinstance(v, list) and all(p in PHASES[1:] for p in v)),
    "timing": ("a dict of seconds", lambda v: _dict(v) and all(isinstance(k, str) and _is_num(t) for k, t in v.items())),
    "running": ("a dict of value lists", lambda v: v is None or (_dict(v) and all(
        isinstance(x, list) and all(map(_is_num, x)) for x in v.values()))),
    "log": ("the log's columns and rows", lambda v: v is None or (
        _dict(v) and isinstance(v.get("columns"), list) and all(isinstance(c, str) for c in v["columns"])
        and isinstance(v.get("rows"), list) and all(map(_dict, v["rows"])))),
}


def check_schema(obj: dict, path: str, what: str = "checkpoint") -> None:
    """InputFileError naming the version of the program checkpoint ``obj`` when it is not
    :data:`VERSION`, else unless its content matches its digest, else naming its first field that
    is not what :data:`SCHEMA` says."""
    version = obj.get("version")
    if not _is_int(version) or version != VERSION:
        raise InputFileError(f"{what} {path!r} has checkpoint version {version!r}; this trilevelnas resumes "
                             f"version {VERSION} only")
    check_seal(obj, path, what)
    for key, (expected, ok) in SCHEMA.items():
        if not ok(obj.get(key)) and (key in obj or not ok(None)):
            raise InputFileError(f"{what} {path!r}: its {key!r} is not {expected} "
                                 f"(found {type(obj.get(key)).__name__})")
    loop = obj.get("loop")
    if not _dict(loop):
        raise InputFileError(f"{what} {path!r}: its 'loop' is not a dict")
    for key, (expected, ok) in _LOOP.items():
        if not ok(loop.get(key)):
            raise InputFileError(f"{what} {path!r}: its loop {key!r} is not {expected} "
                                 f"(found {loop.get(key)!r})"[:300])
    if loop["global_step"] < loop["step"]:
        raise InputFileError(f"{what} {path!r}: its loop global_step {loop['global_step']} is below its "
                             f"step {loop['step']}")


def is_program_checkpoint(obj) -> bool:
    """Whether ``obj`` (a loaded file) holds the keys of a program checkpoint."""
    return isinstance(obj, dict) and all(k in obj for k in PROGRAM_KEYS)


@dataclass
class Meta:
    """What the run is: its ``program`` (``"search"`` or ``"train"``), its ``config``
    (``Config.to_dict()``), the digests of the images it trains on (``data``), its last and best
    validation (``val``, ``best_val``) and the train program's ``--init`` record (``init``)."""

    program: str
    config: dict
    data: dict | None = None
    val: dict = field(default_factory=dict)
    best_val: dict | None = None
    init: dict | None = None


@dataclass
class Weights:
    """The derived network: its ``architecture`` (a dict; None before the search derived it), its
    state dict ``model`` (None before it is built) and that of its weight average ``ema`` (None
    without ``train.ema`` or before the train phase)."""

    architecture: dict | None = None
    model: dict | None = None
    ema: dict | None = None


@dataclass
class Optimizers:
    """The optimiser and scheduler states of the phase in progress, by name (``weights``,
    ``weights_sched``, the search's ``arch``), and that phase."""

    states: dict = field(default_factory=dict)
    phase: str = ""


@dataclass
class Schedule:
    """Where the loop stands: the phase (one of :data:`PHASES`), the steps done in it and in all,
    the finished phases, the seconds spent per phase, the step values gathered since the last
    log row (``running``) and the log's columns and rows (``log``)."""

    phase: str = ""
    step: int = 0
    global_step: int = 0
    done: list = field(default_factory=list)
    timing: dict = field(default_factory=dict)
    running: dict = field(default_factory=dict)
    log: dict | None = None


def _fresh_one_hot() -> dict:
    from ..supernet.decisions import OneHotTracker

    return OneHotTracker().state()


@dataclass
class SearchState:
    """The search's state: the supernet's configuration (the run's ``supernet`` settings and
    ``scale``, as :meth:`SupernetConfig.from_dict` reads them) and weights, the architecture
    tensors (α, β, γ), their logged ``history``, the one-hot tracker's state and the decision
    report. A train run keeps the configuration and tensors of the search it inherited from."""

    supernet_config: dict | None = None
    supernet: dict | None = None
    arch: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    one_hot: dict = field(default_factory=_fresh_one_hot)
    decisions: dict | None = None


@dataclass
class Checkpoint:
    """A program checkpoint of format :data:`VERSION`: everything a run needs to continue exactly
    (docs/pipeline.md, "Checkpoints"), in sections. ``rng`` is the generator state at the save
    (:func:`rng_state`)."""

    meta: Meta
    weights: Weights = field(default_factory=Weights)
    optimizers: Optimizers = field(default_factory=Optimizers)
    schedule: Schedule = field(default_factory=Schedule)
    search: SearchState = field(default_factory=SearchState)
    rng: dict | None = None
    version: int = VERSION

    def to_dict(self) -> dict:
        """The flat dict written to disk (the ``init`` record in train checkpoints only)."""
        m, w, o, s, sc = self.meta, self.weights, self.optimizers, self.search, self.schedule
        d = {"version": self.version, "program": m.program, "config": m.config,
             "supernet_config": s.supernet_config, "supernet": s.supernet, "arch": s.arch,
             "architecture": w.architecture, "model": w.model, "model_ema": w.ema,
             "optimizers": o.states, "optimizer_phase": o.phase,
             "history": s.history, "val": m.val, "one_hot": s.one_hot, "best_val": m.best_val,
             "decisions": s.decisions, "data": m.data}
        if m.program == "train":
            d["init"] = m.init
        d["loop"] = {"phase": sc.phase, "step": sc.step, "global_step": sc.global_step, "done": list(sc.done),
                     "timing": dict(sc.timing), "running": {k: list(v) for k, v in sc.running.items()},
                     "log": sc.log}
        d["rng"] = self.rng
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Checkpoint":
        """The checkpoint of a dict :func:`load` checked (a program checkpoint)."""
        loop = d["loop"]
        return cls(
            meta=Meta(d["program"], d["config"], d.get("data"), dict(d.get("val") or {}), d.get("best_val"),
                      d.get("init")),
            weights=Weights(d.get("architecture"), d.get("model"), d.get("model_ema")),
            optimizers=Optimizers(d.get("optimizers") or {}, d.get("optimizer_phase", "")),
            schedule=Schedule(loop["phase"], loop["step"], loop["global_step"], list(loop["done"]),
                              dict(loop["timing"]), {str(k): [float(x) for x in v]
                                                     for k, v in (loop.get("running") or {}).items()},
                              loop.get("log")),
            search=SearchState(d.get("supernet_config"), d.get("supernet"), dict(d.get("arch") or {}),
                               list(d.get("history") or []), d.get("one_hot") or _fresh_one_hot(),
                               d.get("decisions")),
            rng=d["rng"], version=d["version"])

    def save(self, path: str) -> None:
        """Write it to ``path`` atomically, sealed with its digest (:func:`save_atomic`)."""
        save_atomic(self.to_dict(), path)


def read(path: str, what: str = "checkpoint") -> Checkpoint:
    """The program checkpoint in ``path``, checked (:func:`load` with :data:`PROGRAM_KEYS`)."""
    return Checkpoint.from_dict(load(path, what, required=PROGRAM_KEYS))


def rng_state() -> dict:
    """The Python, NumPy and torch (CPU and CUDA) generator states."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    py, nps = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    np.random.set_state((nps["name"], nps["keys"].numpy().astype(np.uint32), nps["pos"],
                         nps["has_gauss"], nps["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@functools.lru_cache(maxsize=None)
def _has_accelerator() -> bool:
    """Whether torch sees a CUDA, MPS or XPU device (checked once)."""
    checks = [torch.cuda.is_available]
    for name in ("mps", "xpu"):
        backend = getattr(torch, name, None)
        if backend is not None and hasattr(backend, "is_available"):
            checks.append(backend.is_available)
    return any(check() for check in checks)


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) with ``seed`` (reduced to 32 bits for NumPy).

    Without an accelerator only torch's CPU generator is seeded: ``torch.manual_seed`` would also
    queue a lazy CUDA seeding that formats the Python stack on every call (about 0.4 ms, twice per
    training step), for a device that will never start. The CPU draws are the same either way."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    if _has_accelerator():
        torch.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed)


def step_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed derived from the run seed and integer keys (phase, step, rank), order-sensitive.

    Seeding every step from (seed, phase, step) makes the random draws of step t independent of how
    the run got there, so a resumed run replays exactly the batches and Gumbel noise of an
    uninterrupted one.
    """
    ss = np.random.SeedSequence([seed % (2 ** 63), *[k % (2 ** 63) for k in keys]])
    return int(ss.generate_state(1, dtype=np.uint64)[0]) >> 1
