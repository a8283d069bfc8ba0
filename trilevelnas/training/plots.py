"""PNG plots of a run (matplotlib, Agg backend): losses, radius, expected FLOPs, the architecture
parameters over the search, and a drawing of the derived architecture."""
from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

from ..fileio import replacing  # noqa: E402
from .logging import read_log  # noqa: E402

_MAX_LINES = 12  # per panel: more elements than this are summarised by their largest values


def _series(rows: list[dict], key: str, phase: str | None = None) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in rows:
        if phase is not None and r["phase"] != phase:
            continue
        v = r.get(key, "")
        if v not in ("", None):
            xs.append(int(r["global_step"]))
            ys.append(float(v))
    return xs, ys


def plot_curves(log_path: str, out_path: str) -> bool:
    """Losses per phase, the radius, the expected GFLOPs and the validation PSNR-Y (when the run
    validated during training) over steps; False if there is no log."""
    if not os.path.isfile(log_path):
        return False
    rows = read_log(log_path)
    if not rows:
        return False
    val_x, val_y = _series(rows, "psnr_y")
    fig, axes = plt.subplots(1, 4 if val_x else 3, figsize=(20 if val_x else 15, 4))
    for phase in ("pretrain", "search", "train", "finetune"):
        xs, ys = _series(rows, "loss", phase)
        if xs:
            axes[0].plot(xs, ys, label=f"{phase} weight loss")
    xs, ys = _series(rows, "arch_loss")
    if xs:
        axes[0].plot(xs, ys, label="search arch loss")
    axes[0].set_yscale("log")
    axes[0].set_title("losses")
    axes[0].set_xlabel("step")
    axes[0].legend(fontsize=8)
    xs, ys = _series(rows, "radius")
    axes[1].plot(xs, ys, color="tab:purple")
    axes[1].set_title("radius ρ (fraction of circumradius)")
    axes[1].set_xlabel("step")
    xs, ys = _series(rows, "gflops")
    axes[2].plot(xs, ys, color="tab:red")
    axes[2].set_title("expected GFLOPs (256x256 LR)")
    axes[2].set_xlabel("step")
    if val_x:
        axes[3].plot(val_x, val_y, marker="o", color="tab:green")
        axes[3].set_title("validation PSNR-Y (dB, held-out images)")
        axes[3].set_xlabel("step")
    fig.tight_layout()
    with replacing(out_path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return True


def plot_arch_history(history: list[dict], out_path: str) -> bool:
    """One panel per architecture parameter (α, β, γ groups): its relaxed weights, or raw values
    when the supernet does not expose relaxed ones, over the search steps."""
    if not history:
        return False
    key = "weights" if all("weights" in h for h in history) else "params"
    names = list(history[-1][key])
    if not names:
        return False
    cols = min(4, len(names))
    nrows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 2.6 * nrows), squeeze=False)
    steps = [h["step"] for h in history]
    for ax, name in zip(axes.flat, names):
        series = [h[key][name].reshape(-1).float() for h in history]
        n = series[-1].numel()
        order = series[-1].argsort(descending=True).tolist()[:_MAX_LINES]
        for j in order:
            ax.plot(steps, [float(s[j]) for s in series], linewidth=1)
        ax.set_title(f"{name} ({n})" + ("" if n <= _MAX_LINES else f", top {_MAX_LINES}"), fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle("architecture " + ("weights" if key == "weights" else "parameters") + " over the search")
    fig.tight_layout()
    with replacing(out_path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return True


def draw_architecture(arch, out_path: str) -> bool:
    """A left-to-right block drawing of the derived network: path steps, and each cell's ops
    (nothing for a textbook baseline, which has no cells)."""
    if arch is None or not hasattr(arch, "cells"):
        return False
    steps = ["conv_first"]
    cells = iter(arch.cells)
    details = [None]
    for s in arch.full_path:
        if s == 0:
            cell = next(cells)
            steps.append("RiR")
            details.append([f"{op} {w}" for op, w in cell])
        else:
            steps.append("up x2 + conv" if arch.backbone == "A" else "conv")
            details.append(None)
    if arch.backbone == "A":
        steps += ["conv_hr", "conv_last"]
    else:
        steps += ["conv_last", f"PixelShuffle x{arch.scale}"]
    details += [None, None]
    fig_w = max(6.0, 1.6 * len(steps))
    fig, ax = plt.subplots(figsize=(fig_w, 3.2))
    for i, (name, det) in enumerate(zip(steps, details)):
        color = "#9ecae1" if name == "RiR" else "#fdd0a2"
        ax.add_patch(FancyBboxPatch((i * 1.6, 0.8), 1.3, 0.8, boxstyle="round,pad=0.05", fc=color, ec="k"))
        ax.text(i * 1.6 + 0.65, 1.2, name, ha="center", va="center", fontsize=8)
        if det:
            ax.text(i * 1.6 + 0.65, 0.65, "\n".join(det), ha="center", va="top", fontsize=6)
        if i:
            ax.annotate("", xy=(i * 1.6 - 0.05, 1.2), xytext=(i * 1.6 - 0.25, 1.2),
                        arrowprops={"arrowstyle": "->"})
    ax.set_xlim(-0.2, len(steps) * 1.6)
    ax.set_ylim(-0.6, 1.9)
    ax.axis("off")
    ax.set_title(f"backbone {arch.backbone}, path {list(arch.path)}, {arch.channels} channels, x{arch.scale}",
                 fontsize=9)
    fig.tight_layout()
    with replacing(out_path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return True


def write_all(out_dir: str, history: list[dict], arch) -> list[str]:
    """Write ``curves.png``, ``arch_params.png`` and ``architecture.png`` (those with data)."""
    written = []
    for name, ok in (("curves.png", lambda p: plot_curves(os.path.join(out_dir, "log.csv"), p)),
                     ("arch_params.png", lambda p: plot_arch_history(history, p)),
                     ("architecture.png", lambda p: draw_architecture(arch, p))):
        path = os.path.join(out_dir, name)
        if ok(path):
            written.append(path)
    return written
