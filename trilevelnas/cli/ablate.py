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
"topology", "path", "params", "gflops", "psnr_y", ..., "out"}]}``) and ``DIR/results.md`` (a markdown
table).

Each variant runs in ``DIR/<variant>-<key>``, where ``key`` is a digest of the variant's full
configuration (:func:`variant_key`: the ``config.json`` its run writes, less the settings that do
not change results, and for ``from-scratch`` the architecture it trains too). Rerunning the command
with the same settings reuses a finished variant (its ``summary.json``, if its ``config.json``
has that key) and resumes an interrupted one; another seed, preset, ``--config`` or ``--set``
gives other keys, so those variants run afresh beside the old ones, which are kept. A finished
variant whose ``summary.json`` or ``config.json`` is corrupt is an error naming the file (delete
that variant's folder to rerun it): its results are not guessed, and nothing is deleted.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

from ..errors import InputFileError, UserError
from ..fileio import check_out_dir, check_writable_dir, mark_out_dir, write_json, write_text
from ..supernet.config import default_order_lambda

__all__ = ["STUDIES", "main", "study_variants", "variant_key"]

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
    p.add_argument("--teacher", help="teacher weights to distil from (any format --model takes, e.g. "
                                     "Real-ESRGAN's .pth or ncnn .param: docs/teachers.md)")
    p.add_argument("--seed", type=int, help="random seed of every variant")
    p.add_argument("--out", required=True, help="output folder (one subfolder per variant)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an --out that holds other files and no trilevelnas study (those "
                        "files may be replaced); without it such a folder is refused")
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


def _variant_config(args, sets: list[str]):
    """The configuration the variant's program builds from ``_common(args)`` plus ``sets``
    (the same layers, in the same order: :func:`trilevelnas.cli.program.run_program`)."""
    from ..training import build_config

    flags = {"data": {"root": args.data}, "loss": {"teacher": args.teacher}, "run": {"seed": args.seed}}
    return build_config(args.preset, args.config, list(args.sets) + list(sets), flags)


def _key_dict(config: dict) -> dict:
    """``config`` (a config.json dict) less the settings that do not change what a run computes
    (:data:`trilevelnas.cli.program.RESUME_MAY_CHANGE`: device, threads, log and checkpoint
    cadence), which a resumed run may change too."""
    from .program import RESUME_MAY_CHANGE

    return {sec: ({k: v for k, v in vals.items() if (sec, k) not in RESUME_MAY_CHANGE}
                  if isinstance(vals, dict) else vals) for sec, vals in config.items()}


def variant_key(config: dict, extra: dict | None = None) -> str:
    """A 12-hex-digit digest of a variant's full configuration ``config`` (its config.json as a dict)
    and ``extra`` (what else decides its results: the architecture a train variant trains).

    Equal for equal settings, whatever their order; any other value of a setting that changes the
    results (not device, threads, log or checkpoint cadence) gives another key.
    """
    text = json.dumps({"config": _key_dict(config), "extra": extra}, sort_keys=True, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _read(path: str, what: str) -> dict:
    """The JSON object in a finished variant's ``path``; InputFileError naming it when it is not one."""
    from ..training.config import load_json

    try:
        return load_json(path, what)
    except InputFileError as exc:
        raise InputFileError(f"{exc}; delete the folder {os.path.dirname(path)} to rerun that variant") from None


def _run(program: str, argv: list[str], out: str) -> dict:
    """Run (or resume, or reuse) one program into ``out``; its summary.json (InputFileError naming
    it when it is corrupt)."""
    summary_path = os.path.join(out, "summary.json")
    if not os.path.lexists(summary_path):
        if program == "search":
            from .search import main as prog_main
        else:
            from .train import main as prog_main
        resume = ["--resume"] if os.path.lexists(os.path.join(out, "checkpoint.pt")) else []
        print(f"ablate: {program} -> {out}", file=sys.stderr, flush=True)
        prog_main(argv + ["--out", out] + resume)
    return _read(summary_path, "variant summary")


def _check_key(out: str, key: str, extra: dict | None = None) -> dict:
    """The variant's config.json, checked to have ``key`` (InputFileError naming it otherwise)."""
    config_path = os.path.join(out, "config.json")
    config = _read(config_path, "variant config")
    found = variant_key(config, extra)
    if found != key:
        raise InputFileError(f"variant config {config_path!r} has the key {found}, not {key} as its folder "
                             f"says (changed by hand?); delete the folder {out} to rerun that variant")
    return config


def _row(variant: str, out: str, summary: dict, config: dict) -> dict:
    """The results row of one variant; a summary or config lacking a field is an InputFileError."""
    try:
        s = config["supernet"]
        arch = summary["architecture"]
        dec = summary.get("decisions") or {}
        lam = s.get("order_lambda")
        if lam is None:
            lam = default_order_lambda(s["topology"])
        return {"variant": variant, "order_lambda": lam, "relaxation": s["relaxation"],
                "node_relaxation": s["node_relaxation"], "topology": s["topology"], "path": arch["path"],
                "n_rir": sum(1 for v in arch["path"] if v == 0), "params": summary["params"],
                "gflops": summary["gflops"], "psnr_y": summary["psnr_y"],
                "bicubic_psnr_y": summary["bicubic_psnr_y"], "undecided": dec.get("undecided"),
                "decisions": dec.get("used"), "train_init": summary.get("train_init"), "out": out}
    except (KeyError, TypeError, AttributeError) as exc:
        raise InputFileError(f"the summary.json or config.json in {out} is not a finished run's ({exc!r} "
                             f"missing or of the wrong type); delete that folder to rerun the variant") from None


def _variant(program: str, root: str, name: str, argv: list[str], sets: list[str], args,
             arch_file: str | None = None) -> tuple[str, dict, dict]:
    """Run or reuse variant ``name``: ``(its folder, summary, config.json)``. ``arch_file``: the
    train program's ``--arch``, whose content is part of the key."""
    extra = None
    if arch_file is not None:
        extra = {"arch": _read(arch_file, "architecture file")}
    key = variant_key(_variant_config(args, sets).to_dict(), extra)
    out = os.path.join(root, f"{name}-{key}")
    run_argv = argv + [x for s in sets for x in ("--set", s)]
    if arch_file is not None:
        run_argv += ["--arch", arch_file]
    summary = _run(program, run_argv, out)
    return out, summary, _check_key(out, key, extra)


def _val_curve(out: str) -> tuple[list[int], list[float]]:
    from ..training.logging import read_log

    xs, ys = [], []
    for r in read_log(os.path.join(out, "log.csv")):
        if r["phase"] == "train" and r.get("psnr_y") not in ("", None):
            xs.append(int(r["step"]))
            ys.append(float(r["psnr_y"]))
    return xs, ys


def _train_init(args, root: str) -> list[dict]:
    cfg = _variant_config(args, [])
    val_every = max(1, cfg.train.steps // 10)
    common = [f"run.val_every={val_every}", "run.train_after_search=true"]
    search_out, summary, config = _variant("search", root, "from-search", _common(args),
                                           common + ["train.init=search"], args)
    rows = [_row("from-search", search_out, summary, config)]
    scratch_out, scratch, config = _variant("train", root, "from-scratch", _common(args), common, args,
                                            arch_file=os.path.join(search_out, "arch.json"))
    rows.append(_row("from-scratch", scratch_out, {**scratch, "decisions": None}, config))
    rows[-1].update({k: rows[0][k] for k in ("order_lambda", "relaxation", "node_relaxation", "topology")})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import replacing

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
    check_out_dir(args.out, overwrite=args.overwrite)
    os.makedirs(args.out, exist_ok=True)
    mark_out_dir(args.out, "ablate")
    if args.study == "train-init":
        rows = _train_init(args, args.out)
    else:
        rows = []
        for name, sets in study_variants(args.study):
            out, summary, config = _variant("search", args.out, name, _common(args), sets, args)
            rows.append(_row(name, out, summary, config))
    result = {"study": args.study, "preset": args.preset, "rows": rows}
    write_json(result, os.path.join(args.out, "results.json"))
    table = markdown(args.study, args.preset, rows)
    write_text(table, os.path.join(args.out, "results.md"))
    print(table, end="")
    return 0
