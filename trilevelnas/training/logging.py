"""Run logs: a CSV file (always) and TensorBoard scalars (when ``tensorboard`` is installed)."""
from __future__ import annotations

import csv
import io
import os
from typing import Mapping

from ..fileio import append_text, write_text


class RunLog:
    """Append rows of scalars to ``<out>/log.csv`` keyed by the global step.

    Columns are the union of every key ever logged; when a new key appears the file is rewritten
    with the wider header. On resume, rows beyond the checkpoint's step (written after the last
    checkpoint by a run that was killed) are dropped, so the log matches an uninterrupted run.
    """

    def __init__(self, out_dir: str, resume_step: int | None = None, tensorboard: bool = True):
        os.makedirs(out_dir, exist_ok=True)
        self.path = os.path.join(out_dir, "log.csv")
        self.rows: list[dict] = []
        if resume_step is not None and os.path.isfile(self.path):
            with open(self.path, newline="", encoding="utf-8") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["global_step"]) <= resume_step]
        self.columns: list[str] = ["global_step", "phase", "step"]
        for r in self.rows:
            for k in r:
                if k not in self.columns:
                    self.columns.append(k)
        self._rewrite()
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self.tb = SummaryWriter(os.path.join(out_dir, "tensorboard"))

    def _rewrite(self) -> None:
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=self.columns)
        w.writeheader()
        for r in self.rows:
            w.writerow({k: r.get(k, "") for k in self.columns})
        write_text(buf.getvalue(), self.path)

    def log(self, global_step: int, phase: str, step: int, values: Mapping[str, float]) -> None:
        """Record one row; floats are written with 7 significant digits."""
        row = {"global_step": global_step, "phase": phase, "step": step}
        row.update({k: (f"{v:.7g}" if isinstance(v, float) else v) for k, v in values.items()})
        self.rows.append(row)
        if any(k not in self.columns for k in row):
            self.columns += [k for k in row if k not in self.columns]
            self._rewrite()
        else:
            buf = io.StringIO(newline="")
            csv.DictWriter(buf, fieldnames=self.columns).writerow({k: row.get(k, "") for k in self.columns})
            append_text(self.path, buf.getvalue())
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{phase}/{k}", v, global_step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_log(path: str) -> list[dict]:
    """The rows of a log.csv as dicts of strings."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
