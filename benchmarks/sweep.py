"""Run the benchmark suites and write ``benchmarks/results/<device>.{json,md,png}``.

    python benchmarks/sweep.py [--quick] [--threads N] [-k EXPR] [--suites relax superconv ...]
                              [--update] [--from-json FILE] [--out DIR]

1. Measures the machine (best of several runs): copy bandwidth (a large ``Tensor.copy_`` into a
   preallocated tensor — a clone without the page faults of a fresh allocation —, bytes read +
   written; the ``torch.clone`` figure, faults included, is recorded beside it) and the fp32
   peak: the better of a large square ``torch.mm`` and a large 3×3 ``F.conv2d`` (oneDNN's conv
   outruns its matmul on AVX-512 CPUs).
2. Runs ``pytest benchmarks/<suites> --benchmark-json`` in a subprocess (``--quick``:
   ``TNAS_BENCH_QUICK=1``, small shapes, few rounds; ``--threads``: ``--bench-threads`` and
   ``OMP_NUM_THREADS``).
3. Writes the JSON (machine, every benchmark's stats and ``extra_info``), a markdown report (per
   benchmark group: each provider's median, its ratio to the best of its peers (same group, same
   widths), the
   hardware floor and the ratio to it; then the op-layer and superkernel targets, met or not) and a
   PNG plot of the ratios.

Hardware floor of one benchmark: ``extra_info["bytes"] / bandwidth`` or ``extra_info["flops"] /
peak`` when the suite records them; for the relax suite, whose ops are memory-bound, the
bytes are derived from ``elements`` (fp32; fwd reads x and writes q: 8 B/element; bwd reads q and
the incoming gradient and writes the gradient: 12 B; fwd+bwd: 20 B); for the superconv suite,
which records the multiply-accumulates of the active block, FLOPs = 2·MACs forward and 6·MACs
forward + backward (input and weight gradients).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trilevelnas.cli import run_main
from trilevelnas.errors import UserError

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SUITES = ("relax", "superconv", "supernet", "overhead", "models", "inference", "training")
RELAX_BYTES_PER_ELEMENT = {"fwd": 8, "bwd": 12, "fwdbwd": 20}
CONV_FLOPS_PER_MAC = {"fwd": 2, "fwdbwd": 6}
#: Peak RSS growth of the paper-size dense step (ρ = 0, checkpoint) before the narrow-tensor
#: supernet, on this project's 2-core AMD EPYC CI machine (results/paper-step-cpu.md, 2026-11-24).
DENSE_PAPER_PEAK_BEFORE_MIB = 12302


# ------------------------------------------------------------------------------ peak memory (CPU)
def _status_bytes(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise OSError(f"{key} not in /proc/self/status")


def cpu_peak_memory(fn) -> int | None:
    """Peak memory (bytes) of one ``fn()`` on CPU: the process's resident-set high-water mark
    during the call minus its resident set before it. Freed heap memory is first returned to the
    system (``malloc_trim``) and the high-water mark reset (``/proc/self/clear_refs`` ← 5), so
    what the call allocates must be faulted in and is counted. Linux only: None elsewhere."""
    import ctypes
    import gc

    try:
        libc = ctypes.CDLL("libc.so.6")
        gc.collect()
        libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        before = _status_bytes("VmRSS:")
    except OSError:
        return None
    fn()
    return max(_status_bytes("VmHWM:") - before, 0)



def peak_memory_bytes(fn) -> int | None:
    """Peak memory (bytes) that one ``fn()`` adds: the CUDA allocator's high-water mark on a GPU,
    :func:`cpu_peak_memory` on CPU (skipped, None, when ``TNAS_BENCH_PEAK=0``)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        return torch.cuda.max_memory_allocated() - base
    if os.environ.get("TNAS_BENCH_PEAK", "1") != "1":
        return None
    return cpu_peak_memory(fn)


def time_with_peak(benchmark, fn, default_rounds: int, warmup_rounds: int = 1) -> None:
    """What every suite does with its timed call: under ``--benchmark-disable`` one plain call;
    otherwise record ``fn``'s :func:`peak_memory_bytes` in ``extra_info`` and time
    ``TNAS_BENCH_ROUNDS`` (default ``default_rounds``) rounds of one call each."""
    if benchmark.disabled:
        benchmark(fn)
        return
    peak = peak_memory_bytes(fn)
    if peak is not None:
        benchmark.extra_info["peak_memory_bytes"] = peak
    rounds = int(os.environ.get("TNAS_BENCH_ROUNDS", str(default_rounds)))
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=warmup_rounds)


# ------------------------------------------------------------------------------ machine
def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _best_time(fn, repeats: int, sync) -> float:
    """Fastest of ``repeats`` timed calls after one warm-up: a capability, so the best run (on a
    shared machine the median measures the neighbours)."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return min(times)


def measure_machine(quick: bool) -> dict:
    """Copy bandwidth (B/s) and fp32 peak throughput (FLOP/s) on the benchmark device."""
    import torch

    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    n_bytes = (1 << 30 if cuda else 1 << 28) // (4 if quick else 1)
    x = torch.empty(n_bytes // 4, device=dev).fill_(1.0)
    y = torch.empty_like(x).fill_(0.0)
    t_copy = _best_time(lambda: y.copy_(x), 5 if quick else 15, sync)
    t_clone = _best_time(lambda: x.clone(), 5 if quick else 15, sync)
    del x, y
    n = (8192 if cuda else 2048) // (2 if quick else 1)
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    t_mm = _best_time(lambda: torch.mm(a, b), 3 if quick else 10, sync)
    del a, b
    cb, cc, hw = (64, 128, 64) if cuda else (16, 64, 64)
    xc = torch.randn(cb, cc, hw, hw, device=dev)
    wc = torch.randn(cc, cc, 3, 3, device=dev)
    t_conv = _best_time(lambda: torch.nn.functional.conv2d(xc, wc, padding=1), 3 if quick else 10, sync)
    conv_flops = 2 * cb * hw * hw * cc * cc * 9 / t_conv
    return {"device": device_name(), "kind": dev, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "copy_bandwidth_Bps": 2 * n_bytes / t_copy,
            "clone_bandwidth_Bps": 2 * n_bytes / t_clone,
            "matmul_flops": 2 * n ** 3 / t_mm, "conv3x3_flops": conv_flops,
            "peak_flops": max(2 * n ** 3 / t_mm, conv_flops), "copy_bytes": n_bytes, "matmul_n": n,
            "conv3x3_shape": [cb, cc, hw, hw]}


# ------------------------------------------------------------------------------ running
def run_suites(suites, quick: bool, threads: int | None, select: str | None, json_path: Path) -> int:
    files = [str(HERE / f"test_bench_{s}.py") for s in suites if (HERE / f"test_bench_{s}.py").exists()]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files,
           f"--benchmark-json={json_path}", "--benchmark-columns=median,min,rounds",
           "--benchmark-sort=name"]
    env = dict(os.environ)
    if quick:
        env["TNAS_BENCH_QUICK"] = "1"
        env.setdefault("TNAS_BENCH_ROUNDS", "2")
        cmd += ["--benchmark-max-time=0.2", "--benchmark-min-rounds=3"]
    if threads:
        cmd.append(f"--bench-threads={threads}")
        env["OMP_NUM_THREADS"] = str(threads)
    if select:
        cmd += ["-k", select]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, env=env, cwd=str(HERE.parent)).returncode


def _provider(bench: dict) -> str:
    info = bench.get("extra_info", {})
    if "provider" in info:
        return str(info["provider"])
    return bench.get("param") or bench["name"]


def floor_work(info: dict):
    """``(amount, "bytes" | "flops")`` of the hardware floor from a benchmark's ``extra_info``, or
    ``(None, None)`` when it records neither."""
    if "bytes" in info:
        return info["bytes"], "bytes"
    if "flops" in info:
        return info["flops"], "flops"
    if "macs" in info and info.get("direction") in CONV_FLOPS_PER_MAC:
        return info["macs"] * CONV_FLOPS_PER_MAC[info["direction"]], "flops"
    if "elements" in info and info.get("direction") in RELAX_BYTES_PER_ELEMENT:
        return info["elements"] * RELAX_BYTES_PER_ELEMENT[info["direction"]], "bytes"
    return None, None


def collect(raw: dict) -> list[dict]:
    """One row per benchmark: group, provider, median/min seconds, floor and peak memory (see
    :func:`rank` for the ratios)."""
    rows = []
    for b in raw.get("benchmarks", []):
        info = b.get("extra_info", {})
        st = b["stats"]
        work, kind = floor_work(info)
        rows.append({"group": b.get("group") or "-", "name": b["name"], "provider": _provider(b),
                     "median_s": st["median"], "min_s": st["min"], "rounds": st["rounds"],
                     "floor_work": work, "floor_kind": kind,
                     "peak_memory_bytes": info.get("peak_memory_bytes"), "extra_info": info})
    return rows


def rank(rows: list[dict], machine: dict) -> list[dict]:
    """Add each row's floor (its bytes / the copy bandwidth or its FLOPs / the peak of ``machine``),
    its ratio to the best of its peers and to its floor (and images/s for models).
    Peers: the same group and, where a suite sweeps widths inside a group (superconv), the same
    widths — so the ratio compares providers doing the same work."""
    peers: dict[tuple, list[dict]] = {}
    for r in rows:
        peers.setdefault((r["group"], r["extra_info"].get("widths")), []).append(r)
    for peer_rows in peers.values():
        best = min(r["median_s"] for r in peer_rows)
        for r in peer_rows:
            r["floor_work"], r["floor_kind"] = floor_work(r["extra_info"])
            rate = {"bytes": machine["copy_bandwidth_Bps"], "flops": machine["peak_flops"],
                    None: None}[r["floor_kind"]]
            r["floor_s"] = r["floor_work"] / rate if rate else None
            r["ratio_to_best"] = r["median_s"] / best
            r["ratio_to_floor"] = r["median_s"] / r["floor_s"] if r["floor_s"] else None
            if "model" in r["extra_info"]:
                r["images_per_s"] = r["extra_info"].get("batch", 1) / r["median_s"]
            if "output_mp" in r["extra_info"]:
                r["mp_per_s"] = r["extra_info"]["output_mp"] / r["median_s"]
    return rows


# ------------------------------------------------------------------------------ targets
def _find(rows, group_re: str, provider_re: str):
    g, p = re.compile(group_re), re.compile(provider_re)
    hits = [r for r in rows if g.fullmatch(r["group"]) and p.fullmatch(r["provider"])]
    return hits[0] if len(hits) == 1 else None


def _speedup_target(rows, label, group_re, fast_re, slow_re, need, aim=None):
    fast, slow = _find(rows, group_re, fast_re), _find(rows, group_re, slow_re)
    if fast is None or slow is None:
        return {"target": label, "status": "not measured", "detail": "benchmark not in this run"}
    ratio = slow["median_s"] / fast["median_s"]
    status = "met" if ratio >= need else f"gap: {ratio:.2f}× < {need}×"
    if aim and ratio < aim and ratio >= need:
        status += f" (aim {aim}× not reached)"
    return {"target": label, "status": status, "detail": f"{ratio:.2f}× ({fast['name']} vs {slow['name']})"}


def evaluate_targets(rows, machine) -> list[dict]:
    """The op-layer and superkernel issues' targets, evaluated on this run's rows."""
    out = []
    if machine["kind"] == "cpu":
        out.append(_speedup_target(rows, "relax: fused packed fwd+bwd at the search-space groups "
                                   "≥ 5× faster than the reference on CPU (aim 20×)",
                                   r"relax-sparsestmax-search-fwdbwd", "fused", "reference", 5, 20))
        out.append(_speedup_target(rows, "relax: fused packed sparsemax fwd+bwd (search groups) "
                                   "faster than the reference on CPU",
                                   r"relax-sparsemax-search-fwdbwd", "fused", "reference", 1))
        for shape in ("search", "1Kx4", "4Kx16", "16Kx32", "64Kx64"):
            for d in ("fwd", "fwdbwd"):
                out.append(_speedup_target(rows, f"relax: fused faster than entmax sparsemax "
                                           f"(r = 0), {shape} {d}",
                                           rf"relax-sparsemax-{shape}-{d}", "fused", "entmax", 1))
        for d in ("fwd", "fwdbwd"):
            for prov in ("fused-plain", "fused"):
                out.append(_speedup_target(
                    rows, f"superconv: CPU width 24/64 at least 2× cheaper than 64/64 "
                    f"(16×64×32×32, 3×3), {prov}, {d}", rf"superconv-conv3x3-{d}",
                    rf"{prov} 24/64", rf"{prov} 64/64", 2))
            full, conv = (_find(rows, rf"superconv-conv3x3-{d}", r"fused-plain 64/64"),
                          _find(rows, rf"superconv-conv3x3-{d}", r"conv2d 64/64"))
            label = f"superconv: full width within 1.15× of plain F.conv2d (CPU, 3×3), {d}"
            if full and conv:
                ratio = full["median_s"] / conv["median_s"]
                out.append({"target": label,
                            "status": "met" if ratio <= 1.15 else f"gap: {ratio:.2f}× > 1.15×",
                            "detail": f"{ratio:.2f}× ({full['name']} vs {conv['name']})"})
            else:
                out.append({"target": label, "status": "not measured",
                            "detail": "benchmark not in this run"})
        out.append({"target": "GPU targets of the op-layer and superkernel issues (CUDA / Triton "
                              "kernels vs the bandwidth / FLOP floor, CUDA-graph step)",
                    "status": "not measured", "detail": "no GPU in this session"})
    # tree: the "-deep" support (see test_bench_supernet); from the initial logits the ρ = 1 tree
    # collapses onto the root, which would flatter sparse execution
    for topo, rhos, variant in (("tree", ("0.9", "1.0"), "-deep"), ("trellis", ("0.9", "1.0"), ""),
                                ("fixed", ("1.0",), "")):
        for rho in rhos:
            out.append(_speedup_target(rows, f"supernet step ({topo}): sparse execution faster than "
                                       f"dense at ρ = {rho}{' (deep support)' if variant else ''}",
                                       rf"supernet-step-{topo}",
                                       rf"ours-sparse-rho{rho}{re.escape(variant)}",
                                       rf"ours-dense-rho{rho}", 1))
    for group in ("tree", "fixed", "fixed-lr32"):
        out.append(_speedup_target(rows, f"supernet step ({group}): ours (dense, ρ = 0) faster "
                                   "than the AGD-style baseline", rf"supernet-step-{group}",
                                   r"ours-dense-rho0\.0", "agd-baseline", 1))
    out += overhead_targets(rows, machine)
    return out


def _at_most(label: str, ratio: float, detail: str, most: float, aim: float | None = None) -> dict:
    """Target ``ratio <= most`` (an overhead ratio), with ``aim`` the hoped-for bound."""
    status = "met" if ratio <= most else f"gap: {ratio:.2f}× > {most}×"
    if aim and most >= ratio > aim:
        status += f" (aim {aim}× not reached)"
    return {"target": label, "status": status, "detail": f"{ratio:.2f}× ({detail})"}


def overhead_targets(rows, machine) -> list[dict]:
    """The supernet-overhead issue's targets: the one-hot step within 1.2× of the derived network's
    (aim 1.05×), and on CPU the dense paper-size step's peak memory at most half of its recorded
    value before the narrow-tensor supernet (:data:`DENSE_PAPER_PEAK_BEFORE_MIB`)."""
    label = ("supernet overhead: one-hot step (ρ = 1, argmax widths, paper size) ≤ 1.2× the "
             "derived network's step (aim 1.05×), interleaved rounds")
    paired = _find(rows, r"supernet-overhead-onehot-paired", r"paired")
    ratio = paired and paired["extra_info"].get("ratio")
    if not ratio:
        out = [{"target": label, "status": "not measured", "detail": "benchmark not in this run"}]
    else:
        out = [_at_most(label, ratio, f"median of {paired['rounds']} interleaved rounds each, "
                                      f"{paired['name']}", 1.2, 1.05)]
    if machine["kind"] == "cpu":
        label = (f"supernet overhead: dense paper-size step (ρ = 0, checkpoint) peak memory ≤ half "
                 f"of the {DENSE_PAPER_PEAK_BEFORE_MIB} MiB recorded before")
        row = _find(rows, r"supernet-overhead-memory", r"checkpoint-rho0\.0")
        peak = row and row.get("peak_memory_bytes")
        if not peak or row["extra_info"].get("channels") != 64:
            out.append({"target": label, "status": "not measured",
                        "detail": "paper-size benchmark not in this run"})
        else:
            mib = peak / 2 ** 20
            ratio = DENSE_PAPER_PEAK_BEFORE_MIB / mib
            out.append({"target": label, "status": "met" if ratio >= 2 else f"gap: {ratio:.2f}× < 2×",
                        "detail": f"{mib:.0f} MiB, {ratio:.2f}× less ({row['name']})"})
    return out


# ------------------------------------------------------------------------------ reporting
def _fmt_time(s):
    if s is None:
        return "–"
    for unit, f in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= f:
            return f"{s / f:.3g} {unit}"
    return f"{s * 1e9:.3g} ns"


def _fmt_bytes(b):
    if b is None:
        return "–"
    return f"{b / 2 ** 20:.1f} MiB"


def write_markdown(path: Path, machine: dict, rows: list[dict], targets: list[dict], quick: bool,
                   plot_name: str | None, updates: list[dict] = ()) -> None:
    lines = [f"# Benchmarks on {machine['device']}", "",
             f"torch {machine['torch']}, {machine['kind']}, {machine['threads']} thread(s)"
             f"{', quick run (small shapes)' if quick else ''}. Generated by `benchmarks/sweep.py`; "
             "see `docs/benchmarks.md` for what each suite measures.", "",
             f"Measured floors: copy bandwidth {machine['copy_bandwidth_Bps'] / 1e9:.2f} GB/s "
             f"(`copy_` of {machine['copy_bytes'] >> 20} MiB into a preallocated tensor, read + write; "
             f"`torch.clone` with its fresh allocation: {machine['clone_bandwidth_Bps'] / 1e9:.2f} GB/s), "
             f"fp32 peak {machine['peak_flops'] / 1e9:.1f} GFLOP/s = the better of `torch.mm` "
             f"{machine['matmul_n']}² ({machine['matmul_flops'] / 1e9:.1f}) and a 3×3 `F.conv2d` "
             f"{machine['conv3x3_shape']} ({machine['conv3x3_flops'] / 1e9:.1f}).", ""]
    for u in updates:
        m = u["machine"]
        lines += [f"Re-measured later with `--update` (floors of that run: copy "
                  f"{m['copy_bandwidth_Bps'] / 1e9:.2f} GB/s, fp32 peak {m['peak_flops'] / 1e9:.1f} "
                  f"GFLOP/s): {', '.join(u['groups'])}.", ""]
    if plot_name:
        lines += [f"![ratio to the best provider]({plot_name})", ""]
    lines += ["## Targets", "", "| target | status | measured |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['status']} | {t['detail']} |" for t in targets]
    by_group: dict[str, list[dict]] = {}
    for r in rows:
        by_group.setdefault(r["group"], []).append(r)
    lines += ["", "## Results", "",
              "Median of the rounds; ratio = median / best median of the peers: same group and, for "
              "superconv, same widths (1.00 = best); "
              "floor = the time the hardware needs at least (bytes / bandwidth or FLOPs / "
              "peak), × floor = median / floor. Peak memory: CUDA `max_memory_allocated`, CPU the "
              "resident-set high-water mark over one call (after `malloc_trim`); both beyond "
              "weights and inputs.", ""]
    models = sorted((r for r in rows if "model" in r["extra_info"]), key=lambda r: r["median_s"])
    if models:
        lines += ["### Derived models (summary)", "",
                  "| model | provider | LR | median | images/s | GFLOP (2·MACs) at this LR | peak mem |",
                  "|---|---|---|---|---|---|---|"]
        for r in models:
            info = r["extra_info"]
            lines.append(f"| {info['model']} | {r['provider']} | {info['lr']}² | "
                         f"{_fmt_time(r['median_s'])} | {r['images_per_s']:.3g} | "
                         f"{info['flops'] / 1e9:.3g} | {_fmt_bytes(r['peak_memory_bytes'])} |")
        lines.append("")
    for group in sorted(by_group):
        grp = sorted(by_group[group], key=lambda r: r["median_s"])
        lines += [f"### {group}", "",
                  "| provider | median | min | rounds | ratio to best | floor | × floor | peak mem | notes |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in grp:
            info = r["extra_info"]
            notes = []
            if "images_per_s" in r:
                notes.append(f"{r['images_per_s']:.3g} img/s at {info.get('lr')}² LR")
            if "mp_per_s" in r:
                notes.append(f"{r['mp_per_s']:.3g} MP/s, {info['flops'] / r['median_s'] / 1e9:.3g} GFLOP/s, "
                             f"max |path - eager| {info['max_diff']:.1e}")
            if "live_candidates" in info:
                notes.append(f"live candidates {info['live_candidates']:.2f}")
            if "nonzero_net_weights" in info:
                notes.append(f"non-zero net weights {info['nonzero_net_weights']:.2f}")
            if "flops" in info and "topology" in info:
                notes.append(f"{info['flops'] / 1e9:.3g} GFLOP")
            if info.get("live_nodes") is not None:
                notes.append(f"live tree nodes {info['live_nodes']}")
            if "batch" in info and "topology" in info:
                notes.append(f"batch {info['batch']}, LR {info['lr']}², {info['n_rir']}+{info['n_up']}")
            xf = f"{r['ratio_to_floor']:.3g}" if r["ratio_to_floor"] else "–"
            lines.append(f"| {r['provider']} | {_fmt_time(r['median_s'])} | {_fmt_time(r['min_s'])} | "
                         f"{r['rounds']} | {r['ratio_to_best']:.2f} | {_fmt_time(r['floor_s'])} | {xf} | "
                         f"{_fmt_bytes(r['peak_memory_bytes'])} | {'; '.join(notes)} |")
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_plot(path: Path, rows: list[dict], title: str) -> bool:
    """One panel per suite, log scale: every provider's time / best time of its peers; a suite
    whose groups each hold one provider (e.g. the models) shows time / hardware floor instead."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suites: dict[str, list[dict]] = {}
    for r in rows:
        suites.setdefault(r["group"].split("-")[0], []).append(r)
    if not suites:
        return False
    names = sorted(suites)
    heights = [max(2.0, 0.2 * len(suites[n]) + 1.0) for n in names]
    fig, axes = plt.subplots(len(names), 1, figsize=(10, sum(heights)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, suite in zip(axes[:, 0], names):
        rs = suites[suite]
        groups = {r["group"] for r in rs}
        by_floor = len(groups) == len(rs) and all(r["ratio_to_floor"] for r in rs)
        key = "ratio_to_floor" if by_floor else "ratio_to_best"
        rs = sorted(rs, key=lambda r: (r["group"], r[key]))
        ax.barh(range(len(rs)), [r[key] for r in rs],
                color=["tab:green" if r["ratio_to_best"] == 1.0 and not by_floor else "tab:gray"
                       for r in rs])
        ax.set_yticks(range(len(rs)), [f"{r['group']} · {r['provider']}" for r in rs], fontsize=6)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.axvline(1.0, color="k", lw=0.5)
        what = "time / hardware floor" if by_floor else "time / best time of its peers"
        ax.set_title(f"{suite}: {what}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"--from-json {str(path)!r}: cannot read a JSON file ({exc})") from None
    if not isinstance(data, dict) or not ("results" in data or "benchmarks" in data):
        raise UserError(f"--from-json {str(path)!r}: neither a pytest-benchmark JSON nor a "
                        "results JSON of this script")
    return data


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized shapes and few rounds")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for the suites")
    ap.add_argument("--suites", nargs="+", default=list(SUITES), choices=SUITES)
    ap.add_argument("-k", dest="select", default=None, help="pytest -k expression")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="report from an existing pytest --benchmark-json file (no run), or "
                         "rebuild the report of a results JSON this script wrote")
    ap.add_argument("--update", action="store_true",
                    help="merge into the existing results of this device: replace the groups this "
                         "run measured, keep the others")
    args = ap.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads {args.threads}: expected a positive integer")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    stored = _read_json(args.from_json) if args.from_json else None
    if stored is not None and "results" in stored:
        # a JSON this script wrote: rebuild the report (and plot) without measuring again
        machine, rows, rc = stored["machine"], stored["results"], stored.get("pytest_exit_status", 0)
        args.quick = bool(stored.get("quick", False))
    else:
        machine = measure_machine(args.quick)
        print(f"machine: {json.dumps(machine)}", flush=True)
        if stored is not None:
            raw, rc = stored, 0
        else:
            with tempfile.TemporaryDirectory() as tmp:
                jpath = Path(tmp) / "bench.json"
                rc = run_suites(args.suites, args.quick, args.threads, args.select, jpath)
                text = jpath.read_text() if jpath.exists() else ""
                if not text.strip():
                    print(f"sweep.py: pytest (exit status {rc}) wrote no benchmark results",
                          file=sys.stderr)
                    return rc or 1
                raw = json.loads(text)
        rows = collect(raw)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = slug(machine["device"]) + ("-quick" if args.quick else "")
    previous = args.out / f"{stem}.json"
    rebuilt = stored is not None and "results" in stored
    updates = stored.get("updates", []) if rebuilt else []
    if not rebuilt:
        rows = rank(rows, machine)
    if args.update and previous.exists():
        # keep the earlier run's groups that this run did not measure, ranked against the earlier
        # run's machine measurement (the report's floors line); this run's floors go to "updates"
        before = json.loads(previous.read_text())
        fresh = sorted({r["group"] for r in rows})
        kept = [r for r in before["results"] if r["group"] not in fresh]
        rows = kept + rows
        updates = before.get("updates", []) + [{"groups": fresh, "machine": machine}]
        machine = before["machine"]
    targets = evaluate_targets(rows, machine)
    plot = args.out / f"{stem}.png"
    has_plot = write_plot(plot, rows, f"{machine['device']} ({machine['threads']} threads)")
    (args.out / f"{stem}.json").write_text(json.dumps(
        {"machine": machine, "updates": updates, "quick": args.quick, "pytest_exit_status": rc,
         "results": rows, "targets": targets}, indent=1, default=str) + "\n")
    write_markdown(args.out / f"{stem}.md", machine, rows, targets, args.quick,
                   plot.name if has_plot else None, updates)
    print(f"wrote {args.out / stem}.json, .md" + (", .png" if has_plot else ""))
    return rc


if __name__ == "__main__":
    sys.exit(run_main("sweep.py", main))
