"""The training loop shared by the search and the train programs.

:class:`Loop` runs named phases step by step. A phase is a step function (one optimisation step,
returning scalars for the log) plus its step count; the loop adds what every phase needs:

- per-step seeding: before step t of phase p the Python/NumPy/torch generators are seeded from
  (run seed, p, t, rank) to draw the batch, then from (run seed, p, t) for the step's own noise
  (Gumbel widths), so a resumed run replays exactly what an uninterrupted one draws;
- a non-finite loss stops the run with :class:`NonFiniteLoss` and the last good checkpoint kept
  (a checkpoint is only written when every weight is finite);
- periodic atomic checkpoints (the loop says when one is due; its owner supplies the state),
  the CSV log, a progress bar, periodic validation.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..errors import Interrupted, UserError
from . import checkpoint as ckpt
from .distributed import DistContext, all_reduce_mean, any_flag, barrier

PHASE_IDS = {"pretrain": 1, "search": 2, "train": 3, "finetune": 4}
_DATA_STREAM, _NOISE_STREAM = 11, 12


class NonFiniteLoss(UserError):
    """A loss became NaN or infinite; the run stops and the last good checkpoint is kept."""


def collate(items: Sequence[dict], device: torch.device, keys: Sequence[str] = ("lq", "gt")) -> dict:
    """Stack the images ``keys`` of dataset items into a batch on ``device``, with their ``"name"``s."""
    batch = {key: torch.stack([it[key] for it in items]).to(device, non_blocking=True) for key in keys}
    batch["name"] = [it["name"] for it in items]
    return batch


def sample_batch(dataset, batch_size: int, device: torch.device, keys: Sequence[str] = ("lq", "gt")) -> dict:
    """``batch_size`` items drawn uniformly with replacement, using the (seeded) global generators,
    collated (:func:`collate`)."""
    idx = torch.randint(len(dataset), (batch_size,)).tolist()
    return collate([dataset[i] for i in idx], device, keys)


def params_finite(modules: Sequence[torch.nn.Module]) -> bool:
    """Whether every parameter and buffer of ``modules`` is finite."""
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return False
    return True


@dataclass
class LoopState:
    """Where the run stands: the current phase, steps done in it, and the finished phases."""

    phase: str = ""
    step: int = 0
    global_step: int = 0
    done: list[str] = field(default_factory=list)
    timing: dict = field(default_factory=dict)  # seconds spent per phase


class Loop:
    """Drives the phases of a run writing into ``out_dir``: ``run.seed``, ``run.checkpoint_every``
    and ``run.log_every`` of its configuration; ``log`` the run's :class:`~.logging.RunLog` (None
    on ranks other than 0). It calls no one back for checkpoints: :meth:`run_phase` yields when
    one is due and the owner hands its state to :meth:`save`."""

    def __init__(self, run, ctx: DistContext, device: torch.device, out_dir: str, log,
                 progress: bool | None = None):
        self.seed, self.checkpoint_every, self.log_every = run.seed, run.checkpoint_every, run.log_every
        self.ctx = ctx
        self.device = device
        self.out_dir = out_dir
        self.log = log
        self.progress = progress
        self.state = LoopState()
        #: The step values gathered since the last log row (checkpointed: a resumed run's next
        #: row averages exactly what an uninterrupted run's does).
        self.running: dict[str, list[float]] = {}
        self.last_checkpoint_step: tuple[str, int] | None = None
        self.interrupted = False
        #: What to tell the user on Ctrl-C (the command that resumes the run).
        self.resume_hint = "rerun with --resume"
        self._clock = (0.0, 0.0)  # (seconds spent in the phase before this process, its start time)

    @property
    def checkpoint_path(self) -> str:
        return os.path.join(self.out_dir, "checkpoint.pt")

    def seed_data(self, phase: str, step: int, stream: int = 0) -> None:
        """Seed the generators for drawing the batch of ``step`` (rank-dependent)."""
        ckpt.seed_all(ckpt.step_seed(self.seed, PHASE_IDS[phase], step, _DATA_STREAM + stream, self.ctx.rank))

    def seed_noise(self, phase: str, step: int, stream: int = 0) -> None:
        """Seed the generators for the step's noise (the same on every rank)."""
        ckpt.seed_all(ckpt.step_seed(self.seed, PHASE_IDS[phase], step, _NOISE_STREAM + stream))

    def schedule(self) -> ckpt.Schedule:
        """The loop's position, timing, running values and log rows, as a checkpoint stores them."""
        st = self.state
        return ckpt.Schedule(st.phase, st.step, st.global_step, list(st.done), dict(st.timing),
                             {k: list(v) for k, v in self.running.items()},
                             self.log.state() if self.log is not None else None)

    def save(self, checkpoint: ckpt.Checkpoint | None, modules: Sequence[torch.nn.Module]) -> None:
        """Write ``checkpoint`` (the owner's state; None on ranks other than 0) with the loop's
        :meth:`schedule` and the generator state, atomically — unless a weight of ``modules`` is
        no longer finite: then :class:`NonFiniteLoss`, and the last good checkpoint is kept."""
        if not params_finite(modules):
            self._stop_non_finite("network weight", "nan or inf")
        if self.ctx.is_main:
            replace(checkpoint, schedule=self.schedule(), rng=ckpt.rng_state()).save(self.checkpoint_path)
        self.last_checkpoint_step = (self.state.phase, self.state.step)
        barrier(self.ctx)

    def restore(self, schedule: ckpt.Schedule) -> None:
        """Continue from a checkpoint's schedule."""
        self.state = LoopState(schedule.phase, schedule.step, schedule.global_step, list(schedule.done),
                               dict(schedule.timing))
        self.running = {k: list(v) for k, v in schedule.running.items()}
        self.last_checkpoint_step = (self.state.phase, self.state.step)

    def _stop_non_finite(self, what: str, value: str) -> None:
        where = f"{self.state.phase} step {self.state.step + 1}"
        if self.last_checkpoint_step is not None and os.path.isfile(self.checkpoint_path):
            kept = (f"the last good checkpoint {self.checkpoint_path} "
                    f"({self.last_checkpoint_step[0]} step {self.last_checkpoint_step[1]}) is kept")
        else:
            kept = "no checkpoint had been written yet"
        raise NonFiniteLoss(f"non-finite {what} ({value}) at {where}; the run stopped and {kept}; "
                            "lower the learning rate (--set <phase>.lr=...) or enable grad_clip")

    @contextmanager
    def _sigint_deferred(self):
        """Turn the first SIGINT or SIGTERM (what schedulers such as SLURM send before a kill) into
        ``self.interrupted = True`` (acted on between steps: the state is saved); a second one
        interrupts at once. Only in the main thread (signal handlers cannot be set elsewhere)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.interrupted:
                raise KeyboardInterrupt
            self.interrupted = True

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def check_finite(self, losses: dict[str, torch.Tensor]) -> None:
        """Stop (on every rank) when any of the step's losses is NaN or infinite."""
        bad = [k for k, v in losses.items() if not bool(torch.isfinite(v.detach()).all())]
        if any_flag(bool(bad), self.ctx, self.device):
            value = str(float(losses[bad[0]].detach())) if bad else "on another rank"
            self._stop_non_finite(f"loss {bad[0]!r}" if bad else "loss", value)

    def run_phase(self, name: str, total: int, step_fn: Callable[[int], dict],
                  extra_fn: Callable[[], dict] | None = None, extra_every: int = 0) -> Iterator[None]:
        """Run steps ``state.step .. total-1`` of phase ``name`` (all of them unless resuming in it;
        none once it is done), yielding whenever a checkpoint is due: every ``checkpoint_every``
        steps before the last. The owner writes it (:meth:`save`) before going on, and once the
        generator is exhausted ends the phase with :meth:`end_phase` and saves again.

        ``step_fn(t)`` performs step t and returns the scalars to log; every ``extra_every`` steps
        (0: never) ``extra_fn()`` adds scalars (validation) to that step's log row. Ctrl-C (SIGINT
        or SIGTERM) lets the current step finish and yields, and once that checkpoint is written
        raises :class:`~trilevelnas.errors.Interrupted`. Close the generator when leaving early
        (``contextlib.closing``): that restores the signal handlers.
        """
        if name in self.state.done:
            return
        if self.state.phase != name:
            self.state.phase, self.state.step = name, 0
            self.running = {}
        start_time = time.time()
        spent_before = self.state.timing.get(name, 0.0)
        self._clock = (spent_before, start_time)
        bar = tqdm(total=total, initial=self.state.step, desc=name, unit="step", dynamic_ncols=True,
                   disable=(self.progress is False or not self.ctx.is_main
                            or (self.progress is None and not sys.stderr.isatty())),
                   file=sys.stderr)
        lines = ProgressLines(name, total, self.state.step, spent_before,
                              enabled=self.ctx.is_main and self.progress is not False and not sys.stdout.isatty())
        running = self.running
        with self._sigint_deferred():
            try:
                while self.state.step < total:
                    t = self.state.step
                    values = step_fn(t)
                    self.state.step += 1
                    self.state.global_step += 1
                    for k, v in values.items():
                        running.setdefault(k, []).append(float(v))
                    extra = None
                    if extra_fn is not None and extra_every and self.state.step % extra_every == 0:
                        extra = extra_fn()
                    if self.state.step % self.log_every == 0 or self.state.step == total or extra is not None:
                        row = {k: all_reduce_mean(float(np.mean(v)), self.ctx, self.device)
                               for k, v in running.items()}
                        row.update(extra or {})
                        row["time"] = spent_before + time.time() - start_time
                        if self.ctx.is_main:
                            self.log.log(self.state.global_step, name, self.state.step, row)
                        bar.set_postfix({k: f"{v:.4g}" for k, v in row.items()
                                         if k in ("loss", "l1", "arch_loss", "gflops", "radius")})
                        lines.values.update(row)
                        running.clear()
                    bar.update(1)
                    lines.step(self.state.step)
                    self.state.timing[name] = spent_before + time.time() - start_time
                    if any_flag(self.interrupted, self.ctx, self.device):
                        yield
                        raise Interrupted(f"stopped after {name} step {self.state.step}; the state is saved in "
                                          f"{self.checkpoint_path}; {self.resume_hint}")
                    if self.state.step % self.checkpoint_every == 0 and self.state.step < total:
                        yield
            finally:
                bar.close()
        lines.done(self.state.step)

    def end_phase(self, name: str) -> None:
        """Mark phase ``name``, whose steps :meth:`run_phase` ran, as done (with its time)."""
        spent_before, start_time = self._clock
        self.state.timing[name] = spent_before + time.time() - start_time
        self.state.done.append(name)


class ProgressLines:
    """Plain progress lines on stdout (when it is not a terminal): at the phase's start, at least
    every ``every`` seconds, and at its end — phase, step/total, loss, ρ, expected GFLOPs, elapsed, ETA."""

    KEYS = (("loss", "loss"), ("arch_loss", "arch loss"), ("radius", "rho"), ("gflops", "GFLOPs"),
            ("psnr_y", "val PSNR-Y"))

    def __init__(self, phase: str, total: int, start_step: int, spent_before: float, enabled: bool,
                 every: float = 15.0):
        self.phase, self.total, self.enabled, self.every = phase, total, enabled, every
        self.start_step, self.spent_before = start_step, spent_before
        self.t0 = self.last = time.time()
        self.values: dict = {}
        if enabled and start_step < total:
            print(f"{phase}: start at step {start_step}/{total}", flush=True)

    @staticmethod
    def _clock(seconds: float) -> str:
        seconds = int(round(seconds))
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"

    def _line(self, step: int) -> str:
        now = time.time()
        done = step - self.start_step
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        parts = [f"{self.phase} {step}/{self.total}"]
        for key, label in self.KEYS:
            v = self.values.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                parts.append(f"{label} {v:.4g}")
        parts.append(f"elapsed {self._clock(self.spent_before + now - self.t0)}")
        parts.append(f"ETA {self._clock(eta) if math.isfinite(eta) else '?'}")
        return ", ".join(parts)

    def step(self, step: int) -> None:
        if self.enabled and time.time() - self.last >= self.every:
            self.last = time.time()
            print(self._line(step), flush=True)

    def done(self, step: int) -> None:
        if self.enabled and step > self.start_step:
            print(self._line(step) + " (done)", flush=True)


def linear_radius(step: int, total: int, start: float, end: float, warmup: float = 0.0) -> float:
    """ρ at search step ``step`` (0-based) of ``total``: held at ``start`` for the warm-up fraction,
    then raised linearly so that the last step uses exactly ``end``."""
    if total <= 1:
        return end
    first = int(math.floor(warmup * total))
    if step < first:
        return start
    span = max(total - 1 - first, 1)
    return start + (end - start) * min(1.0, (step - first) / span)
