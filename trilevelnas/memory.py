"""Memory of one training step, estimated from the configuration before anything is built.

A 20,000-channel architecture would otherwise start allocating tens of gigabytes before any
check; :func:`check_training_memory` refuses it with a one-line :class:`~trilevelnas.errors.UserError`
that gives the estimate and what the device has.

The estimate (float32, bytes)::

    total = 4 × (parameters × 4  +  batch × activations per sample)

``parameters × 4``: the weights, their gradients and Adam's two moments. ``activations per
sample``: the tensors autograd keeps for the backward pass, counted as elements per LR pixel of
the training patch (``patch_size // scale`` squared), each layer at its own resolution (backbone A
quadruples the pixels after every up step):

========================  =====================================================================
input, ``conv_first``     3 + C
``conv1x1``, ``conv3x3``  2·c_out (the conv output and its ReLU)
``resblock``              6·c_out (two convs, their ReLUs, the shortcut, the sum)
``dwsblock``              16·c_in + 4·c_out (the 4·c_in expansion: 1×1, ReLU, depthwise, ReLU;
                          the projection, the shortcut, the sum, its ReLU)
RiR cell                  its five ops + C (the residual)
supernet op slot          all four candidates at full width C, plus 2·C each for the
                          coefficient product and the running sum: 38·C, so 190·C + C per cell
up step (A) / conv (B)    3·C (interpolation, conv, LeakyReLU) / 2·C (conv, LeakyReLU)
trellis merge             3·C (two weighted inputs and their sum)
head                      B: 6·s² (conv_last and PixelShuffle); A: 2·C per HR pixel for each
                          ``conv_hr`` input (every fully upsampled tree node) + C + 3
loss                      9 per HR pixel (output, target, difference)
========================  =====================================================================

The supernet is counted dense: every tree node, trellis edge and candidate op is computed (at
radius 0 with near-uniform weights that is what sparse execution runs too), and widths are at
their maximum. The teacher and the VGG network of the perceptual loss are not counted (fixed
sizes, no gradients). On the paper-size step (backbone B, C = 64, tree, batch 16, 32×32 LR) this
gives about 41 GiB; the process measured without recomputation exceeded the 24 GiB machine
(docs/supernet.md), and a C = 32 step measured 0.84 GiB against an estimate of 0.95 GiB: the
estimate is an upper bound of the right size, not a loose one.

Available memory: on CUDA the device's free memory (``torch.cuda.mem_get_info``); on CPU
``MemAvailable`` of ``/proc/meminfo``, lowered to a cgroup memory limit if one is set, and shared
between the ``LOCAL_WORLD_SIZE`` processes of a multi-process run. Elsewhere (or where these
cannot be read) nothing is checked. ``TRILEVELNAS_SKIP_MEMORY_CHECK=1`` turns the check off.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from math import prod

from .arch import Architecture, width_set
from .errors import UserError
from .supernet.config import SupernetConfig
from .supernet.network import TOPOLOGY_CLASSES

__all__ = ["Estimate", "supernet_params", "supernet_step", "model_step", "available_memory",
           "check_fits", "check_training_memory"]

BYTES = 4  # float32
PARAM_COPIES = 4  # weights, gradients, Adam's exp_avg and exp_avg_sq
SLOTS = 5
EXPANSION = 4
SKIP_ENV = "TRILEVELNAS_SKIP_MEMORY_CHECK"


@dataclass(frozen=True)
class Estimate:
    """An estimate of one training step: ``what`` it is, its parameter count and bytes."""

    what: str
    params: int
    activation_bytes: int

    @property
    def param_bytes(self) -> int:
        """Weights, gradients and the two Adam moments."""
        return self.params * PARAM_COPIES * BYTES

    @property
    def total(self) -> int:
        """Parameter plus activation bytes."""
        return self.param_bytes + self.activation_bytes


def size_text(n: float) -> str:
    """``n`` bytes in binary units, e.g. ``"1.5 GiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _count_text(n: int) -> str:
    return f"{n / 1e9:.2f} G" if n >= 1e9 else f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n}"


# --------------------------------------------------------------------------- per-pixel counts
def op_activations(name: str, c_in: int, c_out: int) -> int:
    """Elements per pixel autograd keeps for one candidate op (see the module's table)."""
    if name in ("conv1x1", "conv3x3"):
        return 2 * c_out
    if name == "resblock":
        return 6 * c_out
    if name == "dwsblock":
        return 4 * EXPANSION * c_in + 4 * c_out
    raise ValueError(f"unknown operation {name!r}")


def _supernet_cell(c: int) -> int:
    slot = sum(op_activations(n, c, c) + 2 * c for n in ("conv1x1", "conv3x3", "resblock", "dwsblock"))
    return SLOTS * slot + c


def _up(backbone: str, c: int) -> int:
    return 3 * c if backbone == "A" else 2 * c


def _head(backbone: str, c: int, scale: int, hr_inputs: int) -> int:
    """Head and loss elements per LR pixel (an LR pixel becomes ``scale²`` HR pixels);
    ``hr_inputs``: how many maps backbone A's ``conv_hr`` runs on."""
    hr = scale ** 2
    if backbone == "B":
        return 6 * hr + 9 * hr
    return (2 * c * hr_inputs + c + 3 + 9) * hr


# ------------------------------------------------------------------------------- supernet
def _topology(backbone: str, topology: str, channels: int, n_rir: int, n_up: int, share: str,
              scale: int, fixed_path):
    """The topology object of ``Supernet(SupernetConfig(...))`` with these settings (no network)."""
    cfg = SupernetConfig(backbone=backbone, topology=topology, channels=channels, n_rir=n_rir,
                         n_up=n_up, share=share, scale=scale, fixed_path=fixed_path)
    return TOPOLOGY_CLASSES[topology](cfg)


def _of(counts, kind: str) -> dict[int, int]:
    """``{level: calls}`` of one kind in a topology's :meth:`dense_counts`."""
    return {b: n for (k, b), n in counts.items() if k == kind}


def supernet_params(backbone: str, topology: str, channels: int, n_rir: int, n_up: int,
                    share: str, scale: int, fixed_path=None) -> int:
    """The parameter count of ``Supernet(SupernetConfig(...))`` with these settings (exact)."""
    c = channels
    t = _topology(backbone, topology, channels, n_rir, n_up, share, scale, fixed_path)
    per_slot = 38 * c * c + 9 * EXPANSION * c  # 1x1, 3x3, resblock (2 convs + shortcut), dwsblock
    out = 3 if backbone == "A" else 3 * scale ** 2
    n = 27 * c + c + t.n_cells * SLOTS * per_slot + t.n_ups * (9 * c * c + c)
    if backbone == "A":
        n += 9 * c * c + c
    n += 9 * c * out + out
    n += t.n_cells * (SLOTS * 4 + (SLOTS - 1) * len(width_set(c))) + prod(t.beta_shape or (0,))
    return int(n)


def supernet_step(backbone: str, topology: str, channels: int, n_rir: int, n_up: int, share: str,
                  scale: int, patch_size: int, batch: int, fixed_path=None) -> Estimate:
    """The memory of one dense training step of the supernet on ``batch`` HR patches of
    ``patch_size`` (see the module docstring)."""
    c = channels
    t = _topology(backbone, topology, channels, n_rir, n_up, share, scale, fixed_path)
    counts = t.dense_counts()
    grow = 4 if backbone == "A" else 1  # pixels x4 per up step on backbone A
    per_px = 3 + c
    per_px += sum(n * _supernet_cell(c) * grow ** b for b, n in _of(counts, "cell").items())
    per_px += sum(n * _up(backbone, c) * grow ** b for b, n in _of(counts, "up").items())
    per_px += sum(n * 3 * c * grow ** b for b, n in _of(counts, "merge").items())
    per_px += c  # the weighted sum of the node outputs
    per_px += _head(backbone, c, scale, sum(_of(counts, "hr").values()))
    lr = max(1, patch_size // scale)
    params = supernet_params(backbone, topology, channels, n_rir, n_up, share, scale, fixed_path)
    runs = getattr(t, "path", None) if fixed_path is not None else None  # a fixed topology's one path
    path = f"{n_rir} RiR + {n_up} up" if runs is None else f"path {runs}"
    what = (f"the supernet (backbone {backbone}, {topology}, {channels} channels, {path}, "
            f"batch {batch} of {lr}x{lr} LR patches)")
    return Estimate(what, params, int(per_px * lr * lr * batch * BYTES))


# --------------------------------------------------------------------------- derived network
def model_step(arch: Architecture, patch_size: int, batch: int) -> Estimate:
    """The memory of one training step of the derived network of ``arch`` on ``batch`` HR
    patches of ``patch_size`` (see the module docstring; the parameter count is exact)."""
    from .complexity import arch_cost

    c = arch.channels
    grow = 4 if arch.backbone == "A" else 1
    per_px, level = 3 + c, 0
    cells = iter(arch.cells)
    for step in arch.full_path:
        if step == 0:
            cell = next(cells)
            widths = [c] + [w for _, w in cell]
            stored = sum(op_activations(name, widths[j], widths[j + 1]) for j, (name, _) in enumerate(cell))
            per_px += (stored + c) * grow ** level
        else:
            if arch.backbone == "A":
                level += 1
            per_px += _up(arch.backbone, c) * grow ** level
    per_px += _head(arch.backbone, c, arch.scale, 1)
    lr = max(1, patch_size // arch.scale)
    params = arch_cost(arch, (1, 1))["params"]
    what = (f"the network (backbone {arch.backbone}, {c} channels, {arch.n_rir} RiR "
            f"cell{'' if arch.n_rir == 1 else 's'}, batch {batch} of {lr}x{lr} LR patches)")
    return Estimate(what, int(params), int(per_px * lr * lr * batch * BYTES))


def module_step(model_config, make, scale: int, patch_size: int, batch: int) -> Estimate:
    """The memory of one training step of the network ``make()`` builds (any module, e.g. a
    textbook baseline described by ``model_config``) on ``batch`` HR patches of ``patch_size``:
    its exact parameter count, and every tensor a forward pass on one LR patch creates counted as
    kept for the backward pass (measured on the ``meta`` device: no memory, no arithmetic), plus
    the loss's 9 per HR pixel."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    created = 0

    class _Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            nonlocal created
            out = func(*args, **(kwargs or {}))
            created += sum(t.numel() for t in (out if isinstance(out, (tuple, list)) else (out,))
                           if isinstance(t, torch.Tensor))
            return out

    with torch.device("meta"):
        model = make()
    lr = max(1, patch_size // scale)
    with torch.no_grad(), _Count():
        model(torch.empty(1, 3, lr, lr, device="meta"))
    per_sample = 3 * lr * lr + created + 9 * (lr * scale) ** 2
    params = sum(p.numel() for p in model.parameters())
    return Estimate(f"the network ({model_config}, batch {batch} of {lr}x{lr} LR patches)", int(params),
                    int(per_sample * batch * BYTES))


# ------------------------------------------------------------------------------ availability
def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _cpu_available() -> tuple[int, str] | None:
    """Bytes the process may still allocate on Linux: MemAvailable, capped by a cgroup limit."""
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        return None
    if avail is None:
        return None
    source = "MemAvailable"
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 2 ** 60 and limit - usage < avail:
            avail, source = max(0, limit - usage), "the cgroup memory limit"
            break
    return avail, source


def available_memory(device) -> tuple[int, str] | None:
    """``(bytes, where from, e.g. "on the CPU (MemAvailable)")`` free for a run on ``device`` (a
    torch.device), or None where that cannot be told. CPU memory is shared by the
    ``LOCAL_WORLD_SIZE`` processes of a multi-process run."""
    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        import torch

        try:
            free, _ = torch.cuda.mem_get_info(device)
        except (RuntimeError, AssertionError):
            return None
        return int(free), f"on {device} (free device memory)"
    if kind != "cpu":
        return None
    found = _cpu_available()
    if found is None:
        return None
    avail, source = found
    try:
        procs = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    except ValueError:
        procs = 1
    share = f", shared by {procs} processes" if procs > 1 else ""
    return avail // procs, f"on the CPU ({source}{share})"


def check_fits(estimate: Estimate, device, hint: str) -> None:
    """UserError when ``estimate`` exceeds the memory :func:`available_memory` reports for ``device``
    (nothing is checked where that is unknown, or with ``TRILEVELNAS_SKIP_MEMORY_CHECK=1``).

    The message gives the estimate, its parts, what is available, and ``hint`` (what to reduce).
    """
    if os.environ.get(SKIP_ENV, "") not in ("", "0"):
        return
    found = available_memory(device)
    if found is None:
        return
    avail, where = found
    if estimate.total <= avail:
        return
    raise UserError(f"one training step of {estimate.what} needs about {size_text(estimate.total)} "
                    f"({_count_text(estimate.params)} parameters x {PARAM_COPIES * BYTES} B = "
                    f"{size_text(estimate.param_bytes)} for weights, gradients and Adam moments, plus "
                    f"{size_text(estimate.activation_bytes)} of activations) but only {size_text(avail)} "
                    f"is available {where}; {hint} (or set {SKIP_ENV}=1 to try anyway)")


def _batch(section, cfg) -> int:
    return int(section.batch_size or cfg.data.batch_size)


def check_training_memory(program: str, cfg, device, arch: Architecture | None = None) -> Estimate:
    """Estimate the largest training step of a run and :func:`check_fits` it on ``device``.

    ``cfg`` is a training configuration (``trilevelnas.training.config.Config``). The search
    program's largest step is the supernet's (its pretrain and search batches; the derived network
    trained afterwards is smaller); the train program's is that of ``arch`` at the train batch.
    Returns the estimate.
    """
    d = cfg.data
    if program == "search":
        s = cfg.supernet
        batch = max(_batch(cfg.pretrain, cfg), _batch(cfg.search, cfg))
        est = supernet_step(s.backbone, s.topology, s.channels, s.n_rir, s.n_up, s.share, d.scale,
                            d.patch_size, batch, s.fixed_path)
        hint = "reduce supernet.channels, supernet.n_rir / n_up, the batch size or data.patch_size"
    else:
        if arch is None:
            raise ValueError("the train program's estimate needs the architecture")
        if isinstance(arch, Architecture):
            est = model_step(arch, d.patch_size, _batch(cfg.train, cfg))
        else:  # a textbook baseline (models/baselines.py BaselineSpec)
            est = module_step(arch.to_dict(), arch.build, d.scale, d.patch_size, _batch(cfg.train, cfg))
        hint = "use an architecture with fewer channels, or reduce the batch size or data.patch_size"
    check_fits(est, device, hint)
    return est
