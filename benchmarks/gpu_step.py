"""The GPU check's measurements (``benchmarks/gpu_check.sh``, issue #15) and its summary.

    python benchmarks/gpu_step.py [--out DIR] [--dry-run] [--repeats N] [--parts P ...]
    python benchmarks/gpu_step.py --summary --out DIR --stages FILE [--logs DIR] [--since T]

Measure (default): writes ``DIR/gpu_step.json`` (default DIR ``benchmarks/results``), rewritten
after every part so that a run stopped half-way keeps what it measured. Parts, in this order:

- ``machine``: device, versions, ``ops.backend()``, the measured HBM bandwidth: ``Tensor.copy_``
  of 1 GiB into a preallocated tensor, bytes read + written / median time.
- ``launches``: CUDA kernels launched (``torch.profiler``) per direction by the search-space
  relaxation call (25 cells × 4 candidates + the 83-node tree of paths, packed in one call):
  ``sparsestmax_packed`` (target ≤ 2 per direction), ``sorted_sparsestmax_packed`` (q, penalty)
  and ``order_penalty_packed``; CUDA and Triton backends.
- ``relax``: fused (CUDA kernels) / Triton / ``ops.reference`` at the search-space groups and on
  a 1M × 16 batch of rows (``ops.sparsestmax``, r = 0.5 × circumradius), fwd and fwd+bwd. The
  bandwidth target: the fused 1M × 16 forward moves 8 B/element + 4 B/row (x read, q written,
  the per-row gain written) at ≥ 60 % of the measured HBM bandwidth (both medians).
- ``superconv``: ``ops.superconv2d`` fused (ReLU, tensor scale, accumulate), fused-plain (no
  epilogue), the PyTorch composite ``ops.reference.superconv2d`` (same epilogue), cuDNN
  (``F.conv2d`` at full width, no epilogue) and the Triton kernels, at the shapes of
  ``test_bench_superconv`` (batch 16, 32×32, C = 64: conv3x3, conv1x1, dw3x3, expand1x1; widths
  24/64 (… 40/64) … 64/64), fwd and fwd+bwd. Targets: fused ≥ 1.3× faster than the composite
  (every kernel, width, direction); fused-plain at full width ≤ 1.2× the ``F.conv2d`` time.
- ``supernet``: one search step of the paper-b supernet (``trilevelnas/configs/paper-b.json``:
  backbone B, tree, C = 64, 5 RiR + 2 conv, ordinal sharing, λ = 0.01; batch 16 of 32×32 LR
  patches = its 128² HR patches at ×4), sparse execution at ρ ∈ {0, 0.9, 1} from the seeded
  initial logits, ρ ∈ {0.9, 1} with the deep support (β of the deepest node + 1, as
  ``test_bench_supernet``'s ``-deep`` providers), and dense execution at ρ = 0.9 for reference.
  A step = the search's weight step (L1, backward, Adam on the weights) + its architecture step
  (L1 + the ordering term ``order_loss(task_loss)`` + 1e-4 · expected GFLOPs, backward, Adam on
  α, β, γ with betas (0.5, 0.999)); no teacher, no VGG term, no gradient clipping. The
  architecture logits are restored and the generator reseeded before every step.

Timing: CUDA events around ``inner`` back-to-back calls (``inner`` chosen so that one sample
lasts ≥ ~1 ms; 1 for the supernet step), after warm-up calls; the median (and min) of
``--repeats`` samples. Peak memory: ``torch.cuda.max_memory_allocated()`` over one call minus what
was allocated before it. ``--dry-run`` runs every part on the CPU at tiny sizes (wall clock, CPU
resident-set peak, dispatcher ops instead of kernels for the launch counts): it checks the code
paths, its numbers mean nothing and no target is evaluated.

Summary (``--summary``): writes ``DIR/gpu_check.md`` from the stage table the shell script kept
(``FILE``: name, status, seconds, note; tab-separated), ``DIR/gpu_step.json``, the sweep's
``DIR/<device>.json`` (the newest written after ``--since``), and the logs (``pytest.xml``,
``kernels-ctest.log``, ``backend.json``) in ``--logs``. Standard library only, so that it works when
nothing else does.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import re
import statistics
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
PARTS = ("machine", "launches", "relax", "superconv", "supernet")

# targets (issue #15)
LAUNCH_MAX = 2
BANDWIDTH_FRACTION = 0.6
COMPOSITE_SPEEDUP = 1.3
CUDNN_RATIO = 1.2

STEP_SEED = 1234
ARCH_SEED = 7
RHO_REL = 0.5                      # relax suite: radius = 0.5 × circumradius
LAMBDA = 0.01


# ============================================================================ timing and memory
class Clock:
    """Median of repeated timed samples: CUDA events on a GPU, ``perf_counter`` on the CPU."""

    def __init__(self, cuda: bool, repeats: int, warmup: int, min_sample_s: float):
        import torch

        self.torch = torch
        self.cuda = cuda
        self.repeats = repeats
        self.warmup = warmup
        self.min_sample_s = min_sample_s

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def _sample(self, fn, inner: int) -> float:
        if self.cuda:
            start = self.torch.cuda.Event(enable_timing=True)
            end = self.torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3 / inner
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        return (time.perf_counter() - t) / inner

    def time(self, fn, inner: int | None = None, repeats: int | None = None) -> dict:
        """``fn`` warmed up, then ``repeats`` samples of ``inner`` calls (``inner`` None: enough
        calls for a sample of ``min_sample_s``, at most 200)."""
        for _ in range(self.warmup):
            fn()
        self.sync()
        if inner is None:
            probe = self._sample(fn, 1)
            inner = max(1, min(200, math.ceil(self.min_sample_s / max(probe, 1e-9))))
        samples = [self._sample(fn, inner) for _ in range(repeats or self.repeats)]
        return {"median_s": statistics.median(samples), "min_s": min(samples), "inner": inner,
                "samples_s": samples}

    def peak_memory(self, fn) -> int | None:
        """Bytes one ``fn()`` allocates beyond what was allocated before (CUDA allocator's
        high-water mark; on the CPU the resident-set high-water mark of ``sweep.cpu_peak_memory``)."""
        torch = self.torch
        if not self.cuda:
            from sweep import cpu_peak_memory  # benchmarks/ is on sys.path (measure())

            return cpu_peak_memory(fn)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)


class Backend:
    """``with Backend(ops, "triton", cuda):`` selects the GPU backend of the ops for a block (on
    CPU tensors, i.e. in a dry run, the ops run the C++ kernels whatever the choice)."""

    def __init__(self, ops, name: str, cuda: bool):
        self.ops, self.name, self.cuda = ops, name, cuda

    def __enter__(self):
        self.previous = self.ops.gpu_backend()
        self.ops.set_gpu_backend(self.name)
        return self

    def __exit__(self, *exc):
        self.ops.set_gpu_backend(self.previous)
        return False


def _gpu_backends(ops) -> list[str]:
    """The GPU backends to measure: CUDA, and Triton where it imports. In a dry run (CPU tensors)
    selecting Triton changes nothing (the ops run the C++ kernels), but the code path is run."""
    return ["cuda", "triton"] if ops.backend()["triton"] else ["cuda"]


# ============================================================================ parts
def part_machine(env: dict) -> dict:
    import torch

    import trilevelnas.ops as ops

    cuda, clock = env["cuda"], env["clock"]
    info = {"python": sys.version.split()[0], "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "backend": ops.backend(), "dry_run": env["dry_run"]}
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception as exc:  # noqa: BLE001 - triton absent or broken: say so
        info["triton"] = f"not importable ({exc.__class__.__name__})"
    if cuda:
        props = torch.cuda.get_device_properties(0)
        info.update(device=torch.cuda.get_device_name(0), capability=list(torch.cuda.get_device_capability(0)),
                    sm_count=props.multi_processor_count, memory_bytes=props.total_memory,
                    cudnn=torch.backends.cudnn.version(),
                    cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                    matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    else:
        from sweep import device_name

        info["device"] = device_name()
    n_bytes = env["sizes"]["copy_bytes"]
    src = torch.empty(n_bytes // 4, device=env["device"]).fill_(1.0)
    dst = torch.empty_like(src).fill_(0.0)
    t = clock.time(lambda: dst.copy_(src), inner=1, repeats=max(clock.repeats, 10))
    del src, dst
    info["hbm_copy_bytes"] = n_bytes
    info["hbm_bandwidth_Bps"] = 2 * n_bytes / t["median_s"]
    info["hbm_bandwidth_best_Bps"] = 2 * n_bytes / t["min_s"]
    return info


def _search_groups(device):
    """The search step's relaxation groups: 25 cells × 4 candidates and the 83-node tree, packed."""
    import itertools

    import torch

    from test_bench_relax import tree_parents

    parents = [-1] * 100 + tree_parents(5, 2)
    sizes = [4] * 25 + [len(parents) - 100]
    offsets = torch.tensor([0] + list(itertools.accumulate(sizes)), device=device)
    parent = torch.tensor(parents, device=device)
    radius = torch.tensor([RHO_REL * math.sqrt(1 - 1 / s) for s in sizes], device=device)
    lam = torch.tensor([0.0] * 25 + [LAMBDA], device=device)
    x = torch.randn(len(parents), generator=torch.Generator().manual_seed(0)).to(device)
    return x, offsets, parent, radius, lam


def _kernel_names(fn, cuda: bool) -> list[str]:
    """Names of the CUDA kernels (memcpy/memset included) one ``fn()`` launches; without a GPU
    (dry run) the ``trilevelnas::`` dispatcher ops it calls instead."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    if cuda:
        torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize()
    if cuda:
        return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return [e.name for e in prof.events() if e.name.startswith("trilevelnas::")]


def part_launches(env: dict) -> dict:
    import torch

    import trilevelnas.ops as ops

    cuda = env["cuda"]
    x, offsets, parent, radius, lam = _search_groups(env["device"])
    calls = {
        "sparsestmax_packed": lambda v: (ops.sparsestmax_packed(v, offsets, radius),),
        "sorted_sparsestmax_packed": lambda v: ops.sorted_sparsestmax_packed(v, offsets, parent, radius, lam),
        "order_penalty_packed": lambda v: (ops.order_penalty_packed(v, offsets, parent),),
    }
    out = {"counted": "CUDA kernels (torch.profiler)" if cuda else
           "trilevelnas:: dispatcher ops (dry run, no GPU)", "rows": []}
    for backend in _gpu_backends(ops):
        with Backend(ops, backend, cuda):
            for name, fn in calls.items():
                v = x.clone().requires_grad_(True)
                outs = fn(v)
                grads = [torch.randn_like(o) for o in outs]
                # warm up both directions (Triton compiles, and may autotune, on its first call)
                torch.autograd.grad(fn(v), v, grads)
                fwd = _kernel_names(lambda: fn(v), cuda)
                bwd = _kernel_names(lambda: torch.autograd.grad(outs, v, grads, retain_graph=True), cuda)
                out["rows"].append({"backend": backend, "call": name, "fwd": len(fwd), "bwd": len(bwd),
                                    "fwd_kernels": fwd, "bwd_kernels": bwd})
    return out


def _grad_fn(fn, x):
    """fwd+bwd callable: the gradient of every output of ``fn(x)`` (random upstream) w.r.t. x."""
    import torch

    with torch.no_grad():
        outs = fn(x)
        outs = outs if isinstance(outs, tuple) else (outs,)
        grads = tuple(torch.randn_like(o) for o in outs)

    def run():
        o = fn(x)
        torch.autograd.grad(o if isinstance(o, tuple) else (o,), x, grads)

    return run


def part_relax(env: dict) -> dict:
    import torch

    import trilevelnas.ops as ops
    from trilevelnas.ops import reference as ref

    cuda, clock, dev = env["cuda"], env["clock"], env["device"]
    rows_n, k = env["sizes"]["rows"]
    xs, offsets, parent, radius, lam = _search_groups(dev)
    xr = torch.randn(rows_n, k, generator=torch.Generator().manual_seed(1)).to(dev)
    r_rows = RHO_REL * math.sqrt(1 - 1 / k)
    shapes = {
        "search-sparsestmax": (xs, lambda impl: lambda v: impl.sparsestmax_packed(v, offsets, radius)),
        "search-sorted": (xs, lambda impl: lambda v: impl.sorted_sparsestmax_packed(v, offsets, parent, radius, lam)),
        f"rows-{_rows_label(rows_n)}x{k}": (xr, lambda impl: lambda v: impl.sparsestmax(v, r_rows)),
    }
    providers = [("fused", ops, "cuda")] + ([("triton", ops, "triton")] if "triton" in _gpu_backends(ops) else []) \
        + [("reference", ref, "cuda")]
    rows = []
    for shape, (x, make) in shapes.items():
        for provider, impl, backend in providers:
            with Backend(ops, backend, cuda):
                fn = make(impl)
                for direction in ("fwd", "fwdbwd"):
                    if direction == "fwd":
                        def run(fn=fn, x=x):
                            with torch.no_grad():
                                fn(x)
                    else:
                        run = _grad_fn(fn, x.clone().requires_grad_(True))
                    t = clock.time(run)
                    row = {"shape": shape, "provider": provider, "direction": direction,
                           "elements": x.numel(), **t, "peak_memory_bytes": clock.peak_memory(run)}
                    if shape.startswith("rows"):
                        moved = 8 * x.numel() + 4 * x.shape[0] if direction == "fwd" else None
                        if moved:
                            row["bytes"] = moved
                            row["bandwidth_Bps"] = moved / t["median_s"]
                    rows.append(row)
    # the baseline of tests/test_ops_relax.py's bandwidth test: a clone of the same tensor
    with torch.no_grad():
        t_clone = clock.time(lambda: xr.clone())
    return {"rows": rows, "clone_rows": {**t_clone, "bytes": 8 * xr.numel(),
                                         "bandwidth_Bps": 8 * xr.numel() / t_clone["median_s"]},
            "rows_shape": [rows_n, k], "radius_rows": r_rows}


def _rows_label(n: int) -> str:
    if n % (1 << 20) == 0:
        return f"{n >> 20}M"
    if n % 1024 == 0:
        return f"{n >> 10}K"
    return str(n)


# superconv widths measured per kernel (the kernels are test_bench_superconv.KERNELS)
SC_WIDTHS = {"conv3x3": [24, 40, 64]}


def part_superconv(env: dict) -> dict:
    import torch
    import torch.nn.functional as F

    import trilevelnas.ops as ops
    from trilevelnas.ops import reference as ref

    cuda, clock, dev = env["cuda"], env["clock"], env["device"]
    batch, hw = env["sizes"]["superconv"]
    triton = "triton" in _gpu_backends(ops)
    rows = []
    from test_bench_superconv import C, KERNELS as SC_KERNELS

    for kernel, (c_in, c_out, k, depthwise, mult) in SC_KERNELS.items():
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(batch, c_in, hw, hw, generator=gen).to(dev)
        w = (torch.randn(c_out, 1 if depthwise else c_in, k, k, generator=gen) * 0.05).to(dev)
        scale = torch.tensor(0.7, device=dev)
        acc = torch.randn(batch, c_out, hw, hw, generator=gen).to(dev)
        groups, pad = (c_in if depthwise else 1), k // 2
        for width in SC_WIDTHS.get(kernel, [24, 64]):
            iw, ow = (width * mult, width * mult) if depthwise else (width, width * mult)
            macs = batch * hw * hw * ow * (1 if depthwise else iw) * k * k

            def fused(x, w, s, a, iw=iw, ow=ow):
                return ops.superconv2d(x, w, None, iw, ow, padding=pad, groups=groups,
                                       activation="relu", scale=s, accumulate=a)

            def plain(x, w, s, a, iw=iw, ow=ow):
                return ops.superconv2d(x, w, None, iw, ow, padding=pad, groups=groups)

            def composite(x, w, s, a, iw=iw, ow=ow):
                return ref.superconv2d(x, w, None, iw, ow, padding=pad, groups=groups,
                                       activation="relu", scale=s, accumulate=a)

            def cudnn(x, w, s, a):
                return F.conv2d(x, w, padding=pad, groups=groups)

            providers = [("fused", fused, "cuda"), ("fused-plain", plain, "cuda"),
                         ("composite", composite, "cuda")]
            if width == 64:
                providers.append(("conv2d", cudnn, "cuda"))
            if triton:
                providers += [("triton", fused, "triton"), ("triton-plain", plain, "triton")]
            for provider, fn, backend in providers:
                with Backend(ops, backend, cuda):
                    for direction in ("fwd", "fwdbwd"):
                        if direction == "fwd":
                            def run(fn=fn):
                                with torch.no_grad():
                                    fn(x, w, scale, acc)
                        else:
                            leaves = [t.clone().requires_grad_(True) for t in (x, w, scale, acc)]
                            grad = torch.randn_like(acc)

                            def run(fn=fn, leaves=leaves, grad=grad):
                                out = fn(*leaves)
                                torch.autograd.grad(out, leaves, grad, allow_unused=True)
                        t = clock.time(run)
                        flops = macs * (2 if direction == "fwd" else 6)
                        rows.append({"kernel": kernel, "widths": f"{width}/64", "provider": provider,
                                     "direction": direction, "macs": macs, **t,
                                     "tflops": flops / t["median_s"] / 1e12,
                                     "peak_memory_bytes": clock.peak_memory(run)})
    return {"rows": rows, "batch": batch, "hw": hw, "channels": C}


def _paper_b_config(dry_run: bool):
    """The supernet section of trilevelnas/configs/paper-b.json as a SupernetConfig, and the
    search batch (batch size, LR side = HR patch / scale). Dry run: 2 RiR + 1 conv, C = 16, one
    8×8 patch."""
    from trilevelnas.supernet import SupernetConfig

    preset = json.loads((ROOT / "trilevelnas" / "configs" / "paper-b.json").read_text())
    section = dict(preset["supernet"])
    if dry_run:
        section.update(n_rir=2, n_up=1, channels=16)
    cfg = SupernetConfig.from_dict(section)
    batch = 1 if dry_run else int(preset["data"]["batch_size"])
    lr = 8 if dry_run else int(preset["data"]["patch_size"]) // cfg.scale
    flops_weight = float(preset.get("loss", {}).get("flops_weight", 1e-4))
    return cfg, batch, lr, flops_weight, section


def _supernet_case(env, base_cfg, x, y, flops_weight, execution, rho, deep) -> dict:
    """One paper-b step case: its row (times, peak memory, work); everything it allocated is
    released on return."""
    import dataclasses

    import torch
    import torch.nn.functional as F

    from trilevelnas.supernet import Supernet, enumerate_tree

    cuda, clock, dev = env["cuda"], env["clock"], env["device"]
    row = {}
    torch.manual_seed(ARCH_SEED)
    cfg = dataclasses.replace(base_cfg, sparse_execution=execution == "sparse",
                              relaxations=dict(base_cfg.relaxations))
    net = Supernet(cfg)
    if deep:
        leaf = (0,) * cfg.n_rir + (1,) * cfg.n_up
        with torch.no_grad():
            net.arch_parameters()["beta"][enumerate_tree(cfg.n_rir, cfg.n_up).index(leaf)] += 1.0
    net.set_radius(rho)
    net = net.to(dev).train()
    wopt = torch.optim.Adam(net.weight_parameters(), lr=1e-4)
    arch = list(net.arch_parameters().values())
    aopt = torch.optim.Adam(arch, lr=3e-4, betas=(0.5, 0.999))
    start = [p.detach().clone() for p in arch]

    def step(mid=None):
        torch.manual_seed(STEP_SEED)
        with torch.no_grad():
            for p, p0 in zip(arch, start):
                p.copy_(p0)
        # the search's weight step ...
        wopt.zero_grad(set_to_none=True)
        F.l1_loss(net(x), y).backward()
        wopt.step()
        if mid is not None:
            mid()
        # ... and its architecture step (its weight gradients are dropped)
        aopt.zero_grad(set_to_none=True)
        d = F.l1_loss(net(x), y)
        arch_loss = d + net.order_loss(task_loss=d).to(d.dtype)
        arch_loss = arch_loss + flops_weight * net.expected_flops().to(d.dtype)
        arch_loss.backward()
        aopt.step()
        wopt.zero_grad(set_to_none=True)

    for _ in range(clock.warmup):
        step()
    clock.sync()
    weight_s, arch_s, total_s = [], [], []
    for _ in range(clock.repeats):
        if cuda:
            ev = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
            ev[0].record()
            step(mid=ev[1].record)
            ev[2].record()
            ev[2].synchronize()
            a, b = ev[0].elapsed_time(ev[1]) / 1e3, ev[1].elapsed_time(ev[2]) / 1e3
        else:
            marks = [time.perf_counter()]
            step(mid=lambda: marks.append(time.perf_counter()))
            marks.append(time.perf_counter())
            a, b = marks[1] - marks[0], marks[2] - marks[1]
        weight_s.append(a)
        arch_s.append(b)
        total_s.append(a + b)
    row.update(median_s=statistics.median(total_s), min_s=min(total_s), samples_s=total_s,
               weight_step_median_s=statistics.median(weight_s),
               arch_step_median_s=statistics.median(arch_s),
               peak_memory_bytes=clock.peak_memory(step))
    torch.manual_seed(STEP_SEED)
    with torch.no_grad():
        ctx = net.step_context()
        row["expected_gflops_256"] = float(net.expected_flops())
    row["n_nodes"] = n_nodes = net.topology.n_nodes
    if ctx.net_host is not None and cfg.sparse_execution:
        row["computed_nodes"] = int(net.topology.computed_nodes(ctx.net_host).sum())
    else:
        row["computed_nodes"] = n_nodes
    n_live = sum(len(slot) for cell in ctx.live_ops for slot in cell)
    row["live_candidates"] = n_live / max(4 * sum(len(cell) for cell in ctx.live_ops), 1)
    return row


def part_supernet(env: dict) -> dict:
    import torch

    cuda, dev = env["cuda"], env["device"]
    base_cfg, batch, lr, flops_weight, section = _paper_b_config(env["dry_run"])
    cases = [("sparse", 0.0, False), ("sparse", 0.9, False), ("sparse", 1.0, False),
             ("sparse", 0.9, True), ("sparse", 1.0, True), ("dense", 0.9, False)]
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 3, lr, lr, generator=g).to(dev)
    y = torch.rand(batch, 3, lr * base_cfg.scale, lr * base_cfg.scale, generator=g).to(dev)
    rows = []
    for execution, rho, deep in cases:
        label = f"{execution}-rho{rho}{'-deep' if deep else ''}"
        row = {"case": label, "execution": execution, "rho": rho, "deep": deep, "batch": batch, "lr": lr}
        t0 = time.perf_counter()
        try:
            row.update(_supernet_case(env, base_cfg, x, y, flops_weight, execution, rho, deep))
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory: record it, go on
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            row["error"] = f"{exc.__class__.__name__}: {first}"[:300]
            env["errors"].append({"part": "supernet", "case": label, "error": traceback.format_exc()})
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        row["wall_s"] = time.perf_counter() - t0
        print(f"gpu_step:   supernet {label}: "
              + (f"{_fmt_s(row['median_s'])}/step" if "median_s" in row else row.get("error", "")), flush=True)
        rows.append(row)
    return {"rows": rows, "config": section, "batch": batch, "lr": lr, "flops_weight": flops_weight}


# ============================================================================ targets
def _fmt_s(s) -> str:
    if s is None:
        return "–"
    for unit, f in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= f:
            return f"{s / f:.3g} {unit}"
    return f"{s * 1e9:.3g} ns"


def _fmt_mib(b) -> str:
    return "–" if b is None else f"{b / 2 ** 20:.1f} MiB"


def evaluate(result: dict) -> list[dict]:
    """The GPU targets of issue #15 on a gpu_step result: met / not met / not measured."""
    dry = result.get("dry_run", False)
    out = []

    def add(target, ok, detail, measured=True):
        if dry:
            status = "not measured (dry run on CPU)"
        elif not measured:
            status = "not measured"
        else:
            status = "met" if ok else "not met"
        out.append({"target": target, "status": status, "detail": detail})

    launches = result.get("launches")
    t = f"≤ {LAUNCH_MAX} launches per direction for the search-space sparsestmax call (`sparsestmax_packed`, 25×4 + 83-node tree, CUDA backend)"
    row = next((r for r in (launches or {}).get("rows", [])
                if r["backend"] == "cuda" and r["call"] == "sparsestmax_packed"), None)
    if row:
        add(t, row["fwd"] <= LAUNCH_MAX and row["bwd"] <= LAUNCH_MAX,
            f"fwd {row['fwd']}, bwd {row['bwd']} ({launches['counted']})")
    else:
        add(t, False, "part did not run", measured=False)
    t = (f"same, sorted sparsestmax `(q, penalty)` (sparsestmax + ordering penalty + λ scaling; "
         f"tests/test_ops_relax.py allows ≤ 3 fwd, ≤ 4 bwd)")
    row = next((r for r in (launches or {}).get("rows", [])
                if r["backend"] == "cuda" and r["call"] == "sorted_sparsestmax_packed"), None)
    if row:
        add(t, row["fwd"] <= LAUNCH_MAX and row["bwd"] <= LAUNCH_MAX,
            f"fwd {row['fwd']}, bwd {row['bwd']}")
    else:
        add(t, False, "part did not run", measured=False)

    relax, machine = result.get("relax"), result.get("machine") or {}
    t = (f"≥ {BANDWIDTH_FRACTION:.0%} of measured HBM bandwidth, fused `ops.sparsestmax` forward on a "
         f"1M × 16 batch")
    fused = next((r for r in (relax or {}).get("rows", []) if r["shape"].startswith("rows")
                  and r["provider"] == "fused" and r["direction"] == "fwd"), None)
    hbm = machine.get("hbm_bandwidth_Bps")
    if fused and hbm:
        frac = fused["bandwidth_Bps"] / hbm
        clone = relax["clone_rows"]["bandwidth_Bps"]
        add(t, frac >= BANDWIDTH_FRACTION,
            f"{fused['bandwidth_Bps'] / 1e9:.0f} GB/s = {frac:.0%} of {hbm / 1e9:.0f} GB/s "
            f"(copy_ of {machine['hbm_copy_bytes'] >> 20} MiB); {fused['bandwidth_Bps'] / clone:.0%} "
            f"of a clone of the same tensor ({clone / 1e9:.0f} GB/s); shape {relax['rows_shape']}")
    else:
        add(t, False, "part did not run", measured=False)

    sc = (result.get("superconv") or {}).get("rows", [])
    by = {(r["kernel"], r["widths"], r["provider"], r["direction"]): r for r in sc}
    speed = []
    for (kern, wid, prov, d), r in by.items():
        if prov == "fused" and (kern, wid, "composite", d) in by:
            speed.append((by[(kern, wid, "composite", d)]["median_s"] / r["median_s"], kern, wid, d))
    t = f"fused superconv ≥ {COMPOSITE_SPEEDUP}× faster than the PyTorch composite (`ops.reference`), every search shape, width and direction"
    if speed:
        worst = min(speed)
        add(t, worst[0] >= COMPOSITE_SPEEDUP,
            f"min {worst[0]:.2f}× ({worst[1]} {worst[2]} {worst[3]}); "
            f"{sum(s[0] >= COMPOSITE_SPEEDUP for s in speed)}/{len(speed)} rows ≥ {COMPOSITE_SPEEDUP}×; "
            f"median {statistics.median(s[0] for s in speed):.2f}×")
    else:
        add(t, False, "part did not run", measured=False)
    ratios = []
    for (kern, wid, prov, d), r in by.items():
        if prov == "fused-plain" and wid == "64/64" and (kern, wid, "conv2d", d) in by:
            ratios.append((r["median_s"] / by[(kern, wid, "conv2d", d)]["median_s"], kern, d))
    t = f"fused superconv at full width ≤ {CUDNN_RATIO}× the cuDNN time (`F.conv2d`, no epilogue)"
    if ratios:
        worst = max(ratios)
        add(t, worst[0] <= CUDNN_RATIO,
            f"max {worst[0]:.2f}× ({worst[1]} {worst[2]}); "
            + ", ".join(f"{k} {d} {v:.2f}×" for v, k, d in sorted(ratios, key=lambda r: (r[1], r[2]))))
    else:
        add(t, False, "part did not run", measured=False)

    sn = (result.get("supernet") or {}).get("rows", [])
    ok_rows = [r for r in sn if "median_s" in r]
    t = "paper-b supernet search step (sparse execution, ρ ∈ {0, 0.9, 1}): times reported"
    if ok_rows:
        add(t, all(any(r["case"] == f"sparse-rho{rho}" for r in ok_rows) for rho in (0.0, 0.9, 1.0)),
            "; ".join(f"{r['case']}: {_fmt_s(r['median_s'])}, {_fmt_mib(r['peak_memory_bytes'])}"
                      for r in ok_rows)
            + "".join(f"; {r['case']}: {r['error']}" for r in sn if "error" in r))
    else:
        add(t, False, "part did not run" if not sn else "; ".join(f"{r['case']}: {r.get('error')}" for r in sn),
            measured=bool(sn))
    dense = next((r for r in ok_rows if r["case"] == "dense-rho0.9"), None)
    for case in ("sparse-rho0.9-deep", "sparse-rho1.0-deep"):
        sparse = next((r for r in ok_rows if r["case"] == case), None)
        t = f"paper-b step: sparse execution ({case.split('-', 1)[1]}) faster than dense (ρ = 0.9)"
        if sparse and dense:
            ratio = dense["median_s"] / sparse["median_s"]
            add(t, ratio > 1, f"{ratio:.2f}× ({_fmt_s(sparse['median_s'])} vs {_fmt_s(dense['median_s'])}; "
                f"{sparse.get('computed_nodes')} of {sparse.get('n_nodes')} nodes computed)")
        else:
            add(t, False, "not measured", measured=False)
    return out


# ============================================================================ measure (main)
def sizes_for(dry_run: bool) -> dict:
    if dry_run:
        return {"copy_bytes": 16 << 20, "rows": (4096, 16), "superconv": (2, 16)}
    return {"copy_bytes": 1 << 30, "rows": (1 << 20, 16), "superconv": (16, 32)}


def measure(args) -> int:
    import torch

    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))  # sweep.py's helpers
    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        print("gpu_step.py: no CUDA device (use --dry-run to check the code paths on a CPU)",
              file=sys.stderr)
        return 2
    if args.dry_run:
        cuda = False  # a dry run never measures the GPU
        torch.set_num_threads(1)
    repeats = args.repeats or (2 if args.dry_run else 10)
    env = {"cuda": cuda, "device": "cuda" if cuda else "cpu", "dry_run": args.dry_run,
           "sizes": sizes_for(args.dry_run), "errors": [],
           "clock": Clock(cuda, repeats, warmup=1 if args.dry_run else 3,
                          min_sample_s=1e-4 if args.dry_run else 1e-3)}
    supernet_env = dict(env, clock=Clock(cuda, args.step_repeats or (1 if args.dry_run else 5),
                                         warmup=1 if args.dry_run else 2, min_sample_s=0))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gpu_step.json"
    result = {"dry_run": args.dry_run, "started": _dt.datetime.now().isoformat(timespec="seconds"),
              "repeats": repeats, "sizes": env["sizes"], "timings_s": {}, "errors": env["errors"]}
    funcs = {"machine": part_machine, "launches": part_launches, "relax": part_relax,
             "superconv": part_superconv, "supernet": part_supernet}
    for part in PARTS:
        if part not in args.parts:
            continue
        t0 = time.perf_counter()
        print(f"gpu_step: {part} ...", flush=True)
        try:
            result[part] = funcs[part](supernet_env if part == "supernet" else env)
        except Exception:  # noqa: BLE001 - keep going: one part's failure must not hide the others
            tb = traceback.format_exc()
            print(tb, file=sys.stderr, flush=True)
            env["errors"].append({"part": part, "error": tb})
        result["timings_s"][part] = time.perf_counter() - t0
        print(f"gpu_step: {part} done in {result['timings_s'][part]:.1f} s", flush=True)
        result["targets"] = evaluate(result)
        path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    for t in result["targets"]:
        print(f"  [{t['status']}] {t['target']}: {t['detail']}")
    print(f"wrote {path}")
    if env["errors"]:
        print(f"gpu_step.py: {len(env['errors'])} error(s): "
              + ", ".join(e["part"] + (f" ({e['case']})" if "case" in e else "") for e in env["errors"]),
              file=sys.stderr)
        return 1
    return 0


# ============================================================================ summary
def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _stages(path: Path) -> list[dict]:
    rows = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        parts = line.split("\t")
        if len(parts) >= 3:
            rows.append({"name": parts[0], "status": parts[1], "seconds": parts[2],
                         "note": parts[3] if len(parts) > 3 else ""})
    return rows


def _junit(path: Path) -> dict | None:
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    out = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "failed": [], "skipped_names": [],
           "passed": []}
    for s in suites:
        for k in ("tests", "failures", "errors", "skipped"):
            out[k] += int(s.get(k, 0))
        for case in s.iter("testcase"):
            name = f"{case.get('classname', '')}::{case.get('name')}"
            if case.find("failure") is not None or case.find("error") is not None:
                out["failed"].append(name)
            elif case.find("skipped") is not None:
                out["skipped_names"].append(name)
            else:
                out["passed"].append(name)
    return out


def _sweep_json(outdir: Path, since: float):
    best = None
    for p in outdir.glob("*.json"):
        if p.name == "gpu_step.json" or p.stat().st_mtime < since:
            continue
        data = _read_json(p)
        if isinstance(data, dict) and "machine" in data and "results" in data:
            if best is None or p.stat().st_mtime > best[0].stat().st_mtime:
                best = (p, data)
    return best


def summary(args) -> int:
    outdir, logs = args.out, args.logs or args.out
    stages = _stages(args.stages) if args.stages else []
    step = _read_json(outdir / "gpu_step.json") or {}
    machine = step.get("machine") or {}
    backend = _read_json(logs / "backend.json") or {}
    sweep = _sweep_json(outdir, args.since)
    junit = _junit(logs / "pytest.xml")
    dry = bool(step.get("dry_run")) or args.dry_run
    device = machine.get("device") or backend.get("device") or (sweep[1]["machine"]["device"] if sweep else "unknown device")
    failed = [s for s in stages if s["status"] not in ("ok", "skipped")]
    lines = [f"# GPU check{' (DRY RUN on CPU: no GPU measured)' if dry else ''} on {device}", "",
             f"Written by `benchmarks/gpu_check.sh` on {_dt.datetime.now().isoformat(timespec='seconds')}"
             + (f"; commit {args.commit}" if args.commit else "") + ". "
             + "See `docs/benchmarks.md` (section *GPU check*).", ""]
    vers = []
    for key, label in (("torch", "torch"), ("torch_cuda", "CUDA"), ("cudnn", "cuDNN"), ("triton", "triton"),
                       ("python", "Python")):
        if machine.get(key) is not None:
            vers.append(f"{label} {machine[key]}")
    if machine.get("capability"):
        vers.append(f"compute capability {'.'.join(map(str, machine['capability']))}, "
                    f"{machine.get('sm_count')} SMs, {machine.get('memory_bytes', 0) / 2 ** 30:.0f} GiB")
    if machine.get("hbm_bandwidth_Bps"):
        vers.append(f"measured HBM bandwidth {machine['hbm_bandwidth_Bps'] / 1e9:.0f} GB/s (median; "
                    f"best {machine['hbm_bandwidth_best_Bps'] / 1e9:.0f})")
    if vers:
        lines += [", ".join(vers) + ".", ""]
    if machine.get("backend"):
        lines += [f"`ops.backend()` (gpu_step.py): `{json.dumps(machine['backend'])}`", ""]
    if backend:
        lines += [f"Backend stage (imported from outside the checkout: `{backend.get('module')}`): "
                  f"cuda_kernels {backend.get('cuda_kernels')}, cuda_device {backend.get('cuda_device')}, "
                  f"triton {backend.get('triton')}.", ""]
    lines += [("**All stages passed.**" if not failed else
               f"**{len(failed)} stage(s) failed:** " + ", ".join(f"{s['name']} ({s['status']})" for s in failed)), ""]
    if stages:
        total = sum(float(s["seconds"]) for s in stages if re.fullmatch(r"[0-9.]+", s["seconds"]))
        lines += ["## Stages", "", "| stage | status | time | note |", "|---|---|---|---|"]
        lines += [f"| {s['name']} | {s['status']} | {s['seconds']} s | {s['note']} |" for s in stages]
        lines += [f"| sum of the stage times | | {total:.0f} s | |", ""]

    lines += ["## GPU targets", "", "| target | status | measured |", "|---|---|---|"]
    targets = evaluate(step) if step else []
    lines += [f"| {t['target']} | {t['status']} | {t['detail']} |" for t in targets]
    if junit is not None:
        for test, label in (("test_cuda_search_call_launch_counts", "pytest: launch counts (sparsestmax ≤ 1, "
                             "penalty ≤ 1, sorted ≤ 3/4 per direction)"),
                            ("test_cuda_rows_forward_reaches_60_percent_of_copy_bandwidth",
                             "pytest: 1M × 16 forward ≥ 60 % of a clone's bandwidth")):
            st = ("met (passed)" if any(n.endswith(test) for n in junit["passed"]) else
                  "not met (failed)" if any(n.endswith(test) for n in junit["failed"]) else
                  "skipped" if any(n.endswith(test) for n in junit["skipped_names"]) else "not run")
            lines.append(f"| {label} | {st} | `{test}` |")
    if sweep:
        unmeasured = []
        for t in sweep[1].get("targets", []):
            if t["status"] == "not measured":
                unmeasured.append(t["target"])
            else:
                lines.append(f"| sweep: {t['target']} | {t['status']} | {t['detail']} |")
        if unmeasured:
            lines.append(f"| sweep: {len(unmeasured)} more target(s) | not measured | "
                         + "; ".join(unmeasured)[:600] + " |")
    if not targets and not sweep:
        lines.append("| (no measurement ran) | not measured | |")
    lines.append("")

    if junit is not None:
        lines += ["## Tests", "",
                  f"pytest (CUDA and compiled-Triton selection): {junit['tests']} tests, "
                  f"{len(junit['passed'])} passed, {junit['failures'] + junit['errors']} failed/errors, "
                  f"{junit['skipped']} skipped."]
        lines += [f"- FAILED `{n}`" for n in junit["failed"]]
        lines += [f"- skipped `{n}`" for n in junit["skipped_names"][:20]]
        lines.append("")
    ctest = logs / "kernels-ctest.log"
    if ctest.exists():
        m = re.findall(r"^.*tests passed.*$", ctest.read_text(errors="replace"), re.M)
        lines += [f"kernels/ ctest: {m[-1].strip() if m else 'no summary line (see kernels-ctest.log)'}", ""]

    launches = step.get("launches")
    if launches:
        lines += ["## Launches per direction (search-space call)", "",
                  f"Counted: {launches['counted']}.", "",
                  "| backend | call | fwd | bwd | fwd kernels | bwd kernels |", "|---|---|---|---|---|---|"]
        for r in launches["rows"]:
            lines.append(f"| {r['backend']} | {r['call']} | {r['fwd']} | {r['bwd']} | "
                         f"{', '.join(r['fwd_kernels'])[:200]} | {', '.join(r['bwd_kernels'])[:200]} |")
        lines.append("")
    relax = step.get("relax")
    if relax:
        clock = "wall clock, dry run" if dry else "CUDA events"
        lines += ["## Relaxation ops", "", f"Median ({clock}) of the samples; bandwidth = bytes moved "
                  "/ median (fwd rows: 8 B/element + 4 B/row).", "",
                  "| shape | provider | direction | median | min | bandwidth | peak mem |", "|---|---|---|---|---|---|---|"]
        for r in relax["rows"]:
            bw = f"{r['bandwidth_Bps'] / 1e9:.0f} GB/s" if r.get("bandwidth_Bps") else "–"
            lines.append(f"| {r['shape']} | {r['provider']} | {r['direction']} | {_fmt_s(r['median_s'])} | "
                         f"{_fmt_s(r['min_s'])} | {bw} | {_fmt_mib(r['peak_memory_bytes'])} |")
        c = relax["clone_rows"]
        lines += [f"| rows (clone of x) | torch | copy | {_fmt_s(c['median_s'])} | {_fmt_s(c['min_s'])} | "
                  f"{c['bandwidth_Bps'] / 1e9:.0f} GB/s | – |", ""]
    sc = step.get("superconv")
    if sc:
        lines += ["## Superkernel convolution", "",
                  f"Batch {sc['batch']}, {sc['hw']}×{sc['hw']}, C = {sc['channels']}; fused = ReLU + tensor "
                  "scale + accumulate epilogue, composite = `ops.reference.superconv2d` with the same "
                  "epilogue, conv2d = `F.conv2d` at full width (cuDNN, no epilogue).", "",
                  "| kernel | widths | direction | provider | median | TFLOP/s | composite ÷ this | this ÷ conv2d | peak mem |",
                  "|---|---|---|---|---|---|---|---|---|"]
        by = {(r["kernel"], r["widths"], r["provider"], r["direction"]): r for r in sc["rows"]}
        for r in sc["rows"]:
            comp = by.get((r["kernel"], r["widths"], "composite", r["direction"]))
            conv = by.get((r["kernel"], "64/64", "conv2d", r["direction"]))
            vs_comp = f"{comp['median_s'] / r['median_s']:.2f}×" if comp and r["provider"] != "composite" else "–"
            vs_conv = (f"{r['median_s'] / conv['median_s']:.2f}×" if conv and r["widths"] == "64/64"
                       and r["provider"] != "conv2d" else "–")
            lines.append(f"| {r['kernel']} | {r['widths']} | {r['direction']} | {r['provider']} | "
                         f"{_fmt_s(r['median_s'])} | {r['tflops']:.3g} | {vs_comp} | {vs_conv} | "
                         f"{_fmt_mib(r['peak_memory_bytes'])} |")
        lines.append("")
    sn = step.get("supernet")
    if sn:
        lines += ["## Paper-b supernet search step", "",
                  f"Config (trilevelnas/configs/paper-b.json): `{json.dumps(sn['config'])}`; batch "
                  f"{sn['batch']} of {sn['lr']}×{sn['lr']} LR patches; step = weight step + architecture "
                  "step (see `benchmarks/gpu_step.py`).", "",
                  "| case | median step | weight step | arch step | min | computed nodes | live candidates | peak mem |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in sn["rows"]:
            if "error" in r:
                lines.append(f"| {r['case']} | error: {r['error']} | | | | | | |")
                continue
            lines.append(f"| {r['case']} | {_fmt_s(r['median_s'])} | {_fmt_s(r['weight_step_median_s'])} | "
                         f"{_fmt_s(r['arch_step_median_s'])} | {_fmt_s(r['min_s'])} | "
                         f"{r.get('computed_nodes')} / {r.get('n_nodes')} | {r.get('live_candidates', 0):.2f} | "
                         f"{_fmt_mib(r['peak_memory_bytes'])} |")
        lines.append("")
    if step.get("errors"):
        lines += ["## Errors in gpu_step.py", ""]
        for e in step["errors"]:
            last = e["error"].strip().splitlines()[-1] if e["error"].strip() else ""
            lines.append(f"- {e['part']}{' (' + e['case'] + ')' if 'case' in e else ''}: `{last}`")
        lines.append("")
    if sweep:
        lines += [f"Sweep report: `{sweep[0].with_suffix('.md').name}` (and `.json`, `.png`) beside this file.", ""]
    lines += ["Logs: `gpu_check-logs.tar.gz` beside this file (build, ctest, pytest, gpu_step, sweep).", ""]
    (outdir / "gpu_check.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {outdir / 'gpu_check.md'}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=RESULTS, help="output folder (default benchmarks/results)")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: check the code paths")
    ap.add_argument("--repeats", type=int, default=None, help="timed samples per op (default 10; dry run 2)")
    ap.add_argument("--step-repeats", type=int, default=None, help="timed supernet steps (default 5)")
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    ap.add_argument("--summary", action="store_true", help="write gpu_check.md instead of measuring")
    ap.add_argument("--stages", type=Path, default=None, help="--summary: the stage table (TSV)")
    ap.add_argument("--logs", type=Path, default=None, help="--summary: the logs folder")
    ap.add_argument("--since", type=float, default=0.0,
                    help="--summary: only a sweep JSON written after this epoch time counts")
    ap.add_argument("--commit", default="", help="--summary: the commit to name")
    args = ap.parse_args(argv)
    if args.summary:
        return summary(args)
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())
