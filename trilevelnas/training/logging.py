"""Run logs: a CSV file (always) and TensorBoard scalars (when ``tensorboard`` is installed)."""
from __future__ import annotations

import csv
import io
import os
from typing import Mapping

from ..errors import InputFileError
from ..fileio import append_text, write_text


class RunLog:
    """Append rows of scalars to ``<out>/log.csv`` keyed by the global step.

    Columns are the union of every key ever logged; when a new key appears the file is rewritten
    with the wider header. The rows are part of the run's checkpoint (:meth:`state`): on resume
    ``log.csv`` is rewritten from the checkpoint's rows (``resume``), so rows written after the
    last checkpoint by a run that was killed are dropped, a damaged ``log.csv`` is repaired, and
    the log matches an uninterrupted run's. A checkpoint from before (``resume`` None with
    ``resume_step``) reads the rows up to ``resume_step`` back from ``log.csv``; a file that
    cannot be read then is a one-line InputFileError naming it.
    """

    def __init__(self, out_dir: str, resume_step: int | None = None, tensorboard: bool = True,
                 resume: dict | None = None):
        os.makedirs(out_dir, exist_ok=True)
        self.path = os.path.join(out_dir, "log.csv")
        self.rows: list[dict] = []
        self.columns: list[str] = ["global_step", "phase", "step"]
        if resume is not None:
            self.rows = [dict(r) for r in resume["rows"]]
            self.columns = list(resume["columns"]) or self.columns
        elif resume_step is not None and os.path.isfile(self.path):
            self.rows = _read_rows(self.path, resume_step)
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

    def state(self) -> dict:
        """The columns and rows so far, for the run's checkpoint (see ``resume``)."""
        return {"columns": list(self.columns), "rows": [dict(r) for r in self.rows]}

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _read_rows(path: str, last_step: int) -> list[dict]:
    """The rows of ``path`` up to global step ``last_step`` (a one-line InputFileError if it is not
    a readable log of ours)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [r for r in csv.DictReader(f) if int(r["global_step"]) <= last_step]
    except (UnicodeDecodeError, KeyError, ValueError, TypeError, csv.Error) as exc:
        raise InputFileError(f"{path} is not a readable run log ({type(exc).__name__}); its checkpoint "
                             "predates logs kept in checkpoints, so restore or delete log.csv to resume") from None
    except OSError as exc:
        from ..fileio import os_error

        raise os_error(exc, path, "read") from None


def read_log(path: str) -> list[dict]:
    """The rows of a log.csv as dicts of strings."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
