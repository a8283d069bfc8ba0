"""Search quality, measured: does the derived architecture beat random ones of the same cost?

    python benchmarks/search_quality.py [--preset demo] [--samples 5] [--train-steps 2000] [--out DIR]

1. Runs the default search (``--preset``, not trained) or reuses ``DIR/search``.
2. Samples architectures uniformly from the same space — a tree node (path), then for each of its
   RiR cells an operation per slot and a width per inner slot, all uniform — keeping only those
   whose GFLOPs are at most the derived one's, until ``--samples`` are found.
3. Trains the derived architecture and every sample from scratch with the same budget
   (``python -m trilevelnas.train --arch A --set train.steps=N``; same seed, data and schedule)
   and ranks them by held-out PSNR-Y.

Writes ``benchmarks/results/search_quality.json`` (and ``.md``): every architecture with its
params, GFLOPs and PSNR-Y, the derived one's rank and the random median.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


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


def _cost(arch) -> tuple[int, float]:
    from trilevelnas import profile
    from trilevelnas.models import build

    p = profile(build(arch))
    return int(p["params"]), float(p["gflops"])


def _train(arch_path: str, out: str, preset: str, steps: int, extra: list[str]) -> dict:
    from trilevelnas import train

    summary = os.path.join(out, "summary.json")
    if not os.path.isfile(summary):
        resume = ["--resume"] if os.path.exists(os.path.join(out, "checkpoint.pt")) else []
        argv = ["--preset", preset, "--arch", arch_path, "--out", out, "--set", f"train.steps={steps}",
                "--set", "train.milestones=[]", "--set", "run.val_every=0", "--quiet", *extra, *resume]
        train.main(argv)
    with open(summary, encoding="utf-8") as f:
        return json.load(f)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="demo")
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--train-steps", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join("runs", "search_quality"))
    p.add_argument("--set", dest="sets", action="append", default=[])
    args = p.parse_args(argv)

    from trilevelnas import search
    from trilevelnas.arch import Architecture
    from trilevelnas.fileio import write_json, write_text
    from trilevelnas.space import width_set
    from trilevelnas.training import build_config

    cfg = build_config(args.preset, sets=args.sets)
    extra = [x for s in args.sets for x in ("--set", s)]
    search_out = os.path.join(args.out, "search")
    t0 = time.time()
    if not os.path.isfile(os.path.join(search_out, "arch.json")):
        resume = ["--resume"] if os.path.exists(os.path.join(search_out, "checkpoint.pt")) else []
        search.main(["--preset", args.preset, "--out", search_out, "--set", "run.train_after_search=false",
                     "--quiet", *extra, *resume])
    derived = Architecture.from_json(os.path.join(search_out, "arch.json"))
    d_params, d_gflops = _cost(derived)

    rng = random.Random(args.seed)
    widths = width_set(cfg.supernet.channels)
    candidates, tries = [], 0
    while len(candidates) < args.samples and tries < 100000:
        tries += 1
        a = sample_architecture(rng, cfg, widths)
        params, gflops = _cost(a)
        if gflops <= d_gflops + 1e-12 and a.to_dict() != derived.to_dict():
            candidates.append(a)
    if len(candidates) < args.samples:
        print(f"only {len(candidates)} random architectures within {d_gflops:.4f} GFLOPs in {tries} draws",
              file=sys.stderr)

    rows = []
    for name, arch in [("derived", derived)] + [(f"random-{i}", a) for i, a in enumerate(candidates)]:
        folder = os.path.join(args.out, name)
        os.makedirs(folder, exist_ok=True)
        arch_path = os.path.join(folder, "arch.json")
        write_json(arch.to_dict(), arch_path)
        summary = _train(arch_path, os.path.join(folder, "train"), args.preset, args.train_steps, extra)
        rows.append({"name": name, "path": arch.path, "params": summary["params"], "gflops": summary["gflops"],
                     "psnr_y": summary["psnr_y"], "bicubic_psnr_y": summary["bicubic_psnr_y"],
                     "architecture": arch.to_dict()})
        print(f"{name}: path {arch.path}, {summary['params']:,} params, {summary['gflops']:.3f} GFLOPs, "
              f"PSNR-Y {summary['psnr_y']:.3f} dB", flush=True)

    ranked = sorted(rows, key=lambda r: -r["psnr_y"])
    rank = 1 + [r["name"] for r in ranked].index("derived")
    randoms = sorted(r["psnr_y"] for r in rows if r["name"] != "derived")
    median = (randoms[len(randoms) // 2] if len(randoms) % 2 else
              0.5 * (randoms[len(randoms) // 2 - 1] + randoms[len(randoms) // 2])) if randoms else None
    derived_psnr = rows[0]["psnr_y"]
    result = {
        "preset": args.preset, "train_steps": args.train_steps, "seed": args.seed,
        "derived_rank": rank, "of": len(rows), "derived_psnr_y": derived_psnr, "random_median_psnr_y": median,
        "beats_random_median": median is not None and derived_psnr > median,
        "sampling_draws": tries, "wall_seconds": time.time() - t0, "rows": rows,
        "decisions": json.load(open(os.path.join(search_out, "summary.json"), encoding="utf-8")).get("decisions",
                                                                                                  {}).get("undecided"),
    }
    results = os.path.join(HERE, "results")
    write_json(result, os.path.join(results, "search_quality.json"))
    lines = [f"# Search quality (preset `{args.preset}`, {args.train_steps} training steps each, seed {args.seed})",
             "", f"Derived architecture: rank {rank} of {len(rows)}; its PSNR-Y {derived_psnr:.3f} dB, "
             f"random median {median:.3f} dB." if median is not None else "", "",
             "| name | path | params | GFLOPs | PSNR-Y |", "|---|---|---|---|---|"]
    for r in ranked:
        lines.append(f"| {r['name']} | {r['path']} | {r['params']:,} | {r['gflops']:.3f} | {r['psnr_y']:.3f} |")
    write_text("\n".join(lines) + "\n", os.path.join(results, "search_quality.md"))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
