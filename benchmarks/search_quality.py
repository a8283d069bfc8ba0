"""Search quality, measured: does the searched network beat chance and the textbook at equal cost?

    python benchmarks/search_quality.py --gflops 3 [--preset demo] [--seeds 0,1,2] [--random 8]
        [--teacher FILE] [--train-steps N] [--jobs 2] [--out runs/search_quality] [--set k=v ...] [--tag NAME]

One cell of the comparison (one FLOPs target, one supervision), every network trained with the
same budget (the preset's ``train.steps`` unless ``--train-steps``) and scored on the held-out
validation images:

- **searched**: ``python -m trilevelnas.search --gflops T --seed S`` for each seed — search, derive
  within ±10% of T, train from search: what a user of the method gets;
- **random**: ``--random`` architectures drawn uniformly from the same space (a tree node, then an
  op per slot and a width per inner slot) whose GFLOPs lie within ±10% of T, trained from scratch;
- **baselines**: the textbook networks of ``models.baselines`` costing at most T·1.1, trained from
  scratch (``train --baseline``);
- with ``--also-scratch``, **searched-scratch**: each searched architecture trained from scratch,
  which tells the architecture's worth from that of the weights it inherits.

The score is PSNR-Y against HR, or with ``--teacher`` against the teacher's output (the summary's
``teacher.student_vs_teacher``). Runs go ``--jobs`` at a time, one thread each; finished runs are
reused (a folder with its ``summary.json``), so an interrupted comparison continues, and a report
rebuilt from finished runs keeps the cell's wall time from the earlier report. Each searched row
counts its undecided decisions and those the FLOPs target's derivation chose instead of the
supernet's argmax (``by budget``).

The search's ranking is checked too: for each random architecture the seed-0 supernet's estimate
(the network extracted from the supernet at ρ = 1 with its inherited weights, untrained, scored on
the validation images) against its stand-alone result: Kendall's τ.

Writes ``<out>/results.json``, ``benchmarks/results/search_quality_<tag>.{json,md,png}`` (mean ±
std per group, ranks, a Pareto plot of every point).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
TOLERANCE = 0.10


def sample_architecture(rng: random.Random, cfg, widths: list[int]):
    """One architecture drawn uniformly from the search space of ``cfg.supernet``."""
    from trilevelnas.arch import OP_NAMES, Architecture
    from trilevelnas.supernet.tree import enumerate_tree

    s = cfg.supernet
    path = list(rng.choice(enumerate_tree(s.n_rir, s.n_up)))
    n_cells = sum(1 for v in path if v == 0)
    cells = []
    for _ in range(n_cells):
        cell = [[rng.choice(OP_NAMES), rng.choice(widths)] for _ in range(4)]
        cell.append([rng.choice(OP_NAMES), s.channels])
        cells.append(cell)
    return Architecture(backbone=s.backbone, path=path, cells=cells, channels=s.channels, scale=cfg.data.scale)


def gflops_of(model) -> float:
    from trilevelnas import profile

    return float(profile(model)["gflops"])


def random_within(cfg, target: float, count: int, seed: int) -> list:
    """``count`` distinct uniform samples whose GFLOPs lie within ±10% of ``target``; a target
    whose band misses the space's range is a one-line error, exit status 2 (before any sampling)."""
    from trilevelnas.models import build
    from trilevelnas.space import width_set
    from trilevelnas.supernet.budget import gflops_range
    from trilevelnas.training.components import supernet_config

    low, high = gflops_range(supernet_config(cfg))
    if target * (1 + TOLERANCE) < low or target * (1 - TOLERANCE) > high:
        print(f"--gflops {target:g}: the space of preset {cfg.preset!r} spans {low:.3g}-{high:.3g} GFLOPs; "
              "no architecture lies within ±10% of the target", file=sys.stderr)
        raise SystemExit(2)

    rng = random.Random(seed)
    widths = width_set(cfg.supernet.channels)
    found, seen = [], set()
    for _ in range(200000):
        if len(found) == count:
            break
        arch = sample_architecture(rng, cfg, widths)
        key = json.dumps(arch.to_dict(), sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        if abs(gflops_of(build(arch)) / target - 1) <= TOLERANCE:
            found.append(arch)
    return found


def run(cmd: list[str], out: str) -> dict:
    """Run one program into ``out`` (one thread) unless it finished before; its summary."""
    summary = os.path.join(out, "summary.json")
    if not os.path.isfile(summary):
        resume = ["--resume"] if os.path.exists(os.path.join(out, "checkpoint.pt")) else []
        env = dict(os.environ, OMP_NUM_THREADS="1")
        with open(out + ".log", "w") as log:
            subprocess.run([sys.executable, "-m", *cmd, "--out", out, "--quiet", "--set", "run.threads=1", *resume],
                           check=True, stdout=log, stderr=subprocess.STDOUT, env=env)
    with open(summary, encoding="utf-8") as f:
        return json.load(f)


def _earlier_wall_time(path: str) -> dict:
    """``wall_seconds`` (and its note) of the report at ``path``, when one exists."""
    try:
        with open(path, encoding="utf-8") as f:
            earlier = json.load(f)
    except (OSError, ValueError):
        return {"wall_seconds": None, "wall_seconds_note": "every run was reused; the cell's time is not known"}
    note = earlier.get("wall_seconds_note") or "the cell's own run; this report was rebuilt from its runs by the current script"
    return {"wall_seconds": earlier.get("wall_seconds"), "wall_seconds_note": note}


def by_budget(summary: dict, out: str) -> int | None:
    """How many of a searched network's decisions the FLOPs target's derivation made instead of
    the supernet's argmax: the summary's, or (runs from before it reported them) recomputed from
    the run's checkpoint."""
    known = (summary.get("decisions") or {}).get("by_budget")
    if known is not None:
        return known
    import torch

    from trilevelnas.arch import Architecture
    from trilevelnas.supernet.decisions import decision_report
    from trilevelnas.training.components import stored_supernet

    path = os.path.join(out, "checkpoint.pt")
    if not os.path.isfile(path):
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "supernet" not in state:
        return None
    net = stored_supernet(state["supernet"], state["supernet_config"])
    return decision_report(net, Architecture.from_dict(summary["architecture"]))["by_budget"]


def score(summary: dict, teacher: bool) -> float:
    return summary["teacher"]["student_vs_teacher"]["psnr_y"] if teacher else summary["psnr_y"]


def last_iterate_score(summary: dict, teacher: bool) -> float | None:
    """The score of the last iterate when the run scored its weight average (``train.ema``), else None."""
    avg = summary.get("weight_average")
    if avg is None:
        return None
    return avg.get("last_iterate_vs_teacher_psnr_y") if teacher else avg.get("last_iterate_psnr_y")


def supernet_estimates(search_out: str, archs: list, cfg) -> list[float]:
    """The seed-0 supernet's PSNR-Y estimate of each architecture: extracted at ρ = 1 with its
    inherited weights, untrained, on the validation images."""
    import torch

    from trilevelnas.training import components as comp

    state = torch.load(os.path.join(search_out, "checkpoint.pt"), weights_only=True)
    val = comp.validation_set(cfg)
    net = comp.stored_supernet(state["supernet"], state["supernet_config"])  # one supernet for all
    return [comp.validate(net.extract(a), val, cfg.data.scale, torch.device("cpu"))["psnr_y"] for a in archs]


def cost_adjusted(rows: list[dict]) -> dict | None:
    """The score each group would have at equal cost: the random group's least-squares line of
    score on GFLOPs (``slope`` dB per GFLOP), each row's ``residual`` from it (set on the rows),
    the random residuals' std, and the mean residual of every other group. None with fewer than
    three random rows."""
    import numpy as np

    rand = [r for r in rows if r["group"] == "random"]
    if len(rand) < 3:
        return None
    x = np.array([r["gflops"] for r in rand])
    y = np.array([r["score"] for r in rand])
    slope, intercept = np.polyfit(x, y, 1)
    for r in rows:
        r["residual"] = float(r["score"] - (slope * r["gflops"] + intercept))
    groups = sorted({r["group"] for r in rows} - {"random"})
    return {"slope_db_per_gflop": float(slope),
            "random_residual_std": float(np.std([r["residual"] for r in rand], ddof=1)),
            "mean_residual": {g: float(np.mean([r["residual"] for r in rows if r["group"] == g])) for g in groups}}


def group_stats(vals: list[float]) -> dict:
    """``n``, ``mean``, ``std`` (0 for one value), ``median`` and ``best`` of a group's scores."""
    return {"n": len(vals), "mean": statistics.mean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "median": statistics.median(vals), "best": max(vals)}


def stats_table(groups: dict) -> list[str]:
    """The markdown table of :func:`group_stats` per group."""
    return ["| group | n | mean ± std | median | best |", "|---|---|---|---|---|"] + [
        f"| {g} | {v['n']} | {v['mean']:.3f} ± {v['std']:.3f} | {v['median']:.3f} | {v['best']:.3f} |"
        for g, v in groups.items()]


def kendall_tau(a: list[float], b: list[float]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gflops", type=float, required=True, help="the FLOPs target T (GFLOPs at 256x256 LR)")
    p.add_argument("--preset", default="demo")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--random", type=int, default=8)
    p.add_argument("--teacher", help="distil from this teacher (score against its output)")
    p.add_argument("--train-steps", type=int, help="training steps of every network (default: the preset's)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--also-scratch", action="store_true",
                   help="also train each searched architecture from scratch (group searched-scratch): "
                        "separates the architecture from the inherited weights")
    p.add_argument("--out", default=os.path.join("runs", "search_quality"))
    p.add_argument("--set", dest="sets", action="append", default=[])
    p.add_argument("--tag", default="", help="a suffix naming a variant (e.g. one with --set search.steps=1600): "
                                             "its runs' folder and result files")
    args = p.parse_args(argv)

    from trilevelnas.fileio import write_json, write_text
    from trilevelnas.models.baselines import BASELINES, build_baseline
    from trilevelnas.training import build_config

    cfg = build_config(args.preset, sets=args.sets)
    steps = args.train_steps or cfg.train.steps
    tag = f"{args.preset}_{args.gflops:g}g_{'teacher' if args.teacher else 'hr'}" + (f"_{args.tag}" if args.tag else "")
    root = os.path.join(args.out, tag)
    os.makedirs(root, exist_ok=True)
    common = ["--preset", args.preset, "--set", f"train.steps={steps}",
              "--set", f"train.milestones=[{int(steps * 0.7)},{int(steps * 0.9)}]"]
    common += [x for s in args.sets for x in ("--set", s)]
    if args.teacher:
        common += ["--teacher", args.teacher]
    t0 = time.time()

    jobs = []  # (group, name, cmd, out, arch)
    for seed in [int(s) for s in args.seeds.split(",")]:
        jobs.append(("searched", f"searched-s{seed}", ["trilevelnas.search", *common, "--gflops", repr(args.gflops),
                                                       "--seed", str(seed)], os.path.join(root, f"searched-s{seed}"), None))
    randoms = random_within(cfg, args.gflops, args.random, seed=1234)
    for i, arch in enumerate(randoms):
        folder = os.path.join(root, f"random-{i}")
        os.makedirs(folder, exist_ok=True)
        arch_file = os.path.join(root, f"random-{i}.json")
        write_json(arch.to_dict(), arch_file)
        jobs.append(("random", f"random-{i}", ["trilevelnas.train", *common, "--arch", arch_file], folder + "/run", arch))
    for name in BASELINES:
        if gflops_of(build_baseline(name, cfg.data.scale)) <= args.gflops * (1 + TOLERANCE):
            jobs.append(("baseline", name, ["trilevelnas.train", *common, "--baseline", name],
                         os.path.join(root, name), None))

    def finished(job) -> bool:
        return os.path.isfile(os.path.join(job[3], "summary.json"))

    rebuilt = all(finished(j) for j in jobs)  # nothing to run: a report rebuilt from finished runs
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        summaries = list(pool.map(lambda j: run(j[2], j[3]), jobs))
    if args.also_scratch:  # needs the searched architectures: a second round
        extra = [("searched-scratch", f"searched-s{s}-scratch",
                  ["trilevelnas.train", *common, "--arch", os.path.join(out, "arch.json")], out + "-scratch", None)
                 for (group, name, _, out, _a) in jobs if group == "searched" for s in [name.split("-s")[1]]]
        rebuilt = rebuilt and all(finished(j) for j in extra)
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            summaries += list(pool.map(lambda j: run(j[2], j[3]), extra))
        jobs += extra

    rows = []
    for (group, name, _, out, arch), s in zip(jobs, summaries):
        rows.append({"group": group, "name": name, "path": s["architecture"].get("path") if s.get("architecture") else None,
                     "params": s["params"], "gflops": s["gflops"], "score": score(s, bool(args.teacher)),
                     "psnr_y_vs_hr": s["psnr_y"], "bicubic": (s["teacher"]["bicubic_vs_teacher"]["psnr_y"]
                                                             if args.teacher else s["bicubic_psnr_y"]),
                     "undecided": (s.get("decisions") or {}).get("undecided"),
                     "by_budget": by_budget(s, out) if group == "searched" else None,
                     "last_iterate": last_iterate_score(s, bool(args.teacher)),
                     "architecture": s.get("architecture")})
    ranked = sorted(rows, key=lambda r: -r["score"])
    for i, r in enumerate(ranked):
        r["rank"] = i + 1
    groups = {}
    for g in ("searched", "searched-scratch", "random", "baseline"):
        vals = [r["score"] for r in rows if r["group"] == g]
        if vals:
            groups[g] = group_stats(vals)
    last_groups = {}  # the same statistics for the last iterates, when the weight average was scored
    for g in groups:
        vals = [r["last_iterate"] for r in rows if r["group"] == g and r["last_iterate"] is not None]
        if len(vals) == groups[g]["n"]:
            last_groups[g] = group_stats(vals)
    search_out = jobs[0][3]
    estimates = supernet_estimates(search_out, randoms, cfg) if randoms else []
    alone = [r["score"] for r in rows if r["group"] == "random"]
    tau = kendall_tau(estimates, alone) if len(estimates) > 1 else None
    searched_mean = groups["searched"]["mean"]
    adjusted = cost_adjusted(rows)
    verdict = {
        "beats_random_median": searched_mean > groups.get("random", {}).get("median", float("-inf")),
        "beats_every_baseline": all(searched_mean > r["score"] for r in rows if r["group"] == "baseline"),
    }
    result = {"preset": args.preset, "target_gflops": args.gflops, "supervision": "teacher" if args.teacher else "hr",
              "teacher": args.teacher, "train_steps": steps, "seeds": args.seeds, "groups": groups,
              "kendall_tau": tau, "supernet_estimates": estimates, **verdict,
              "ema": cfg.train.ema, "last_iterate_groups": last_groups, "cost_adjusted": adjusted,
              "wall_seconds": time.time() - t0, "rows": ranked}
    results = os.path.join(HERE, "results")
    if rebuilt:  # the cell's time is the earlier report's
        result.update(_earlier_wall_time(os.path.join(results, f"search_quality_{tag}.json")))
    write_json(result, os.path.join(results, f"search_quality_{tag}.json"))
    metric = "PSNR-Y vs the teacher's output" if args.teacher else "PSNR-Y vs HR"
    lines = [f"# Search quality: preset `{args.preset}`, target {args.gflops:g} GFLOPs, "
             f"{'distilled from ' + os.path.basename(args.teacher) if args.teacher else 'HR supervision'}",
             "", f"`python benchmarks/search_quality.py --gflops {args.gflops:g} --preset {args.preset} "
             f"--seeds {args.seeds} --random {args.random}{' --teacher T' if args.teacher else ''}"
             f"{' --also-scratch' if args.also_scratch else ''}"
             f"{''.join(' --set ' + x for x in args.sets)}{' --tag ' + args.tag if args.tag else ''}` — every "
             f"network trained {steps} steps, one thread each; score: {metric} on the held-out validation "
             f"images{f', of the weight average (train.ema = {cfg.train.ema:g})' if cfg.train.ema else ''}.", ""]
    lines += stats_table(groups)
    if last_groups:
        lines += ["", "The last iterates of the same runs (no weight average):", ""] + stats_table(last_groups)
    lines += ["", f"Searched mean beats the random median: **{verdict['beats_random_median']}**; beats every "
              f"baseline of ≤ its cost: **{verdict['beats_every_baseline']}**. Kendall τ between the seed-0 "
              f"supernet's estimate and the stand-alone score of the random architectures: "
              f"{'n/a' if tau is None else f'{tau:.3f}'}.", ""]
    if adjusted is not None:
        lines += [f"At equal cost (the random group's line, {adjusted['slope_db_per_gflop']:+.3f} dB per GFLOP; "
                  f"random residual std {adjusted['random_residual_std']:.3f} dB), mean residual: "
                  + ", ".join(f"{g} {v:+.3f} dB" for g, v in adjusted["mean_residual"].items()) + ".", ""]
    lines += ["`undecided`: the used decisions whose logit margin is within 3x the initial noise; `by budget`: "
              "those the FLOPs target's derivation chose instead of the supernet's argmax.", "",
              "| rank | name | path | params | GFLOPs | score | at equal cost | last iterate | vs HR | undecided | by budget |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in ranked:
        last = f"{r['last_iterate']:.3f}" if r["last_iterate"] is not None else ""
        resid = f"{r['residual']:+.3f}" if "residual" in r else ""
        lines.append(f"| {r['rank']} | {r['name']} | {r['path']} | {r['params']:,} | {r['gflops']:.3f} | "
                     f"{r['score']:.3f} | {resid} | {last} | {r['psnr_y_vs_hr']:.3f} | "
                     f"{'' if r['undecided'] is None else r['undecided']} | "
                     f"{'' if r.get('by_budget') is None else r['by_budget']} |")
    write_text("\n".join(lines) + "\n", os.path.join(results, f"search_quality_{tag}.md"))
    _plot(rows, os.path.join(results, f"search_quality_{tag}.png"), metric, args.gflops)
    print("\n".join(lines))
    return 0


def _plot(rows: list[dict], path: str, metric: str, target: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for group, marker in (("searched", "*"), ("searched-scratch", "P"), ("random", "o"), ("baseline", "s")):
        pts = [r for r in rows if r["group"] == group]
        ax.scatter([r["gflops"] for r in pts], [r["score"] for r in pts], marker=marker, s=80 if marker == "*" else 30,
                   label=group)
        if group == "baseline":
            for r in pts:
                ax.annotate(r["name"], (r["gflops"], r["score"]), fontsize=7)
    ax.axvspan(target * (1 - TOLERANCE), target * (1 + TOLERANCE), alpha=0.1)
    ax.set_xlabel("GFLOPs at 256x256 LR")
    ax.set_ylabel(metric + " (dB)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
