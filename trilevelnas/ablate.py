"""``python -m trilevelnas.ablate``: the paper's ablations as one command.

    python -m trilevelnas.ablate --study order-lambda|relaxation|bilevel|train-init
                                 [--preset P] [--set K=V ...] [--data D] [--teacher T] --out DIR

Each study runs the variants of one table of the paper at the preset's scale, each a full
``search`` (search, derive, train from search) into ``DIR/<variant>``:

- ``order-lambda`` (Table 4): the ordering term's λ = 0, 0.01, 0.1 on the tree;
- ``relaxation`` (Table 5): softmax vs sparsestmax for α and the node weights, the same ordering λ;
- ``bilevel`` (Table 6): the fixed full path (BilevelNAS: only α, γ) vs the tree (TrilevelNAS);
- ``train-init`` (Fig. 4): the derived network trained from search vs from scratch, same budget,
  with validation every tenth of training; the two PSNR curves are overlaid in ``train_init.png``.

Writes ``DIR/results.json`` (``{"study", "preset", "rows": [{"variant", "order_lambda", "relaxation",
"topology", "path", "params", "gflops", "psnr_y", ...}]}``) and ``DIR/results.md`` (a markdown
table). A variant whose run already finished (its ``summary.json`` exists) is not rerun, and an
interrupted one is resumed, so rerunning the command continues the study.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .cli import run_main
from .errors import UserError
from .fileio import check_writable_dir, write_json, write_text
from .supernet.config import DEFAULT_ORDER_LAMBDA

__all__ = ["STUDIES", "main", "study_variants"]

STUDIES = ("order-lambda", "relaxation", "bilevel", "train-init")


def study_variants(study: str) -> list[tuple[str, list[str]]]:
    """``(variant name, --set overrides)`` of ``study`` (the train-init study has its own driver)."""
    if study == "order-lambda":
        return [(f"lambda-{lam:g}", [f"supernet.order_lambda={lam}"]) for lam in (0.0, 0.01, 0.1)]
    if study == "relaxation":
        return [("softmax", ["supernet.relaxation=softmax", "supernet.node_relaxation=softmax"]),
                ("sparsestmax", ["supernet.relaxation=sparsestmax",
                                 "supernet.node_relaxation=sorted_sparsestmax"])]
    if study == "bilevel":
        return [("bilevel", ["supernet.topology=fixed", "supernet.order_lambda=0"]),
                ("trilevel", ["supernet.topology=tree"])]
    raise UserError(f"--study {study!r}: expected one of {', '.join(STUDIES)}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trilevelnas.ablate", description=__doc__.split("\n\n")[0])
    p.add_argument("--study", required=True, choices=STUDIES, help="which table of the paper to rerun")
    p.add_argument("--preset", default="smoke", help="the scale of every variant (default smoke)")
    p.add_argument("--config", help="a JSON config file layered over the preset")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value in every variant (repeatable)")
    p.add_argument("--data", help="training images (default: the embedded photographs)")
    p.add_argument("--teacher", help="ESRGAN RRDBNet weights to distil from")
    p.add_argument("--seed", type=int, help="random seed of every variant")
    p.add_argument("--out", required=True, help="output folder (one subfolder per variant)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _common(args) -> list[str]:
    argv = ["--preset", args.preset]
    for flag, value in (("--config", args.config), ("--data", args.data), ("--teacher", args.teacher),
                        ("--seed", args.seed)):
        if value is not None:
            argv += [flag, str(value)]
    for s in args.sets:
        argv += ["--set", s]
    if args.no_progress:
        argv.append("--no-progress")
    return argv


def _run(program: str, argv: list[str], out: str) -> dict:
    """Run (or resume, or reuse) one program into ``out``; its summary.json."""
    summary_path = os.path.join(out, "summary.json")
    if os.path.isfile(summary_path):
        with open(summary_path, encoding="utf-8") as f:
            return json.load(f)
    if program == "search":
        from .search import main as prog_main
    else:
        from .train import main as prog_main
    resume = ["--resume"] if os.path.exists(os.path.join(out, "checkpoint.pt")) else []
    print(f"ablate: {program} -> {out}", file=sys.stderr, flush=True)
    prog_main(argv + ["--out", out] + resume)
    with open(summary_path, encoding="utf-8") as f:
        return json.load(f)


def _row(variant: str, out: str, summary: dict) -> dict:
    with open(os.path.join(out, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    s = cfg["supernet"]
    arch = summary["architecture"]
    dec = summary.get("decisions") or {}
    lam = s.get("order_lambda")
    if lam is None:  # the topology's default (SupernetConfig)
        lam = DEFAULT_ORDER_LAMBDA if s["topology"] == "tree" else 0.0
    return {"variant": variant, "order_lambda": lam, "relaxation": s["relaxation"],
            "node_relaxation": s["node_relaxation"], "topology": s["topology"], "path": arch["path"],
            "n_rir": sum(1 for v in arch["path"] if v == 0), "params": summary["params"],
            "gflops": summary["gflops"], "psnr_y": summary["psnr_y"],
            "bicubic_psnr_y": summary["bicubic_psnr_y"], "undecided": dec.get("undecided"),
            "decisions": dec.get("used"), "train_init": summary.get("train_init"), "out": out}


def _val_curve(out: str) -> tuple[list[int], list[float]]:
    from .training.logging import read_log

    xs, ys = [], []
    for r in read_log(os.path.join(out, "log.csv")):
        if r["phase"] == "train" and r.get("psnr_y") not in ("", None):
            xs.append(int(r["step"]))
            ys.append(float(r["psnr_y"]))
    return xs, ys


def _train_init(args, root: str) -> list[dict]:
    from .training import build_config

    cfg = build_config(args.preset, args.config, args.sets)
    val_every = max(1, cfg.train.steps // 10)
    common = _common(args) + ["--set", f"run.val_every={val_every}", "--set", "run.train_after_search=true"]
    search_out = os.path.join(root, "from-search")
    rows = [_row("from-search", search_out, _run("search", common + ["--set", "train.init=search"], search_out))]
    scratch_out = os.path.join(root, "from-scratch")
    scratch = _run("train", common + ["--arch", os.path.join(search_out, "arch.json")], scratch_out)
    rows.append(_row("from-scratch", scratch_out, {**scratch, "decisions": None}))
    rows[-1].update({k: rows[0][k] for k in ("order_lambda", "relaxation", "node_relaxation", "topology")})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fileio import replacing

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, out in (("train from search", search_out), ("train from scratch", scratch_out)):
        xs, ys = _val_curve(out)
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_xlabel("training step")
    ax.set_ylabel("validation PSNR-Y (dB)")
    ax.set_title("Train from search vs from scratch (paper Fig. 4)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with replacing(os.path.join(root, "train_init.png")) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    for row, out in zip(rows, (search_out, scratch_out)):
        row["val_curve"] = dict(zip(("step", "psnr_y"), _val_curve(out)))
    return rows


def markdown(study: str, preset: str, rows: list[dict]) -> str:
    """The rows as a markdown table."""
    head = ["variant", "λ", "relaxation (α / node)", "topology", "path", "params", "GFLOPs", "PSNR-Y",
            "undecided"]
    lines = [f"# Ablation `{study}` (preset `{preset}`)", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for r in rows:
        psnr = "n/a" if r["psnr_y"] is None else f"{r['psnr_y']:.2f}"
        und = "" if r.get("undecided") is None else f"{r['undecided']}/{r['decisions']}"
        lines.append(f"| {r['variant']} | {r['order_lambda']} | {r['relaxation']} / {r['node_relaxation']} | "
                     f"{r['topology']} | {r['path']} | {r['params']:,} | {r['gflops']:.3f} | {psnr} | {und} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    check_writable_dir(args.out, "--out")
    os.makedirs(args.out, exist_ok=True)
    if args.study == "train-init":
        rows = _train_init(args, args.out)
    else:
        rows = []
        for name, sets in study_variants(args.study):
            out = os.path.join(args.out, name)
            argv_v = _common(args) + [x for s in sets for x in ("--set", s)]
            rows.append(_row(name, out, _run("search", argv_v, out)))
    result = {"study": args.study, "preset": args.preset, "rows": rows}
    write_json(result, os.path.join(args.out, "results.json"))
    table = markdown(args.study, args.preset, rows)
    write_text(table, os.path.join(args.out, "results.md"))
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(run_main("trilevelnas.ablate", main))
