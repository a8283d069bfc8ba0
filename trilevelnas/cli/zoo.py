"""``python -m trilevelnas.zoo``: list the shipped models, or add one with its generated card.

    python -m trilevelnas.zoo                                  # print every card
    python -m trilevelnas.zoo --write-card NAME [MODEL.pt] --description TEXT --recipe "COMMAND"
                              [--data TEXT] [--teacher realesrgan-x4plus|FILE [--teacher-licence TEXT]]
                              [--default] [--stand-in] [--readme README.md]
    python -m trilevelnas.zoo --readme README.md               # regenerate the README's zoo table

``--write-card`` copies MODEL.pt into the zoo as ``NAME.pt`` and writes ``NAME.json`` with the
numbers the ``evaluate`` program measures now (:func:`trilevelnas.zoo.cards.make_card`). Without
MODEL.pt it re-measures the shipped ``NAME.pt``, and every text option not given keeps the
existing card's value (so does its default flag).
"""
from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile

from ..errors import UserError
from . import ArgumentParser
from ..zoo import ZOO_DIR, list_models, print_cards


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m trilevelnas.zoo", description=__doc__.split("\n\n")[0])
    p.add_argument("--write-card", nargs="+", metavar=("NAME", "MODEL.pt"),
                   help="add (or re-measure) the shipped model NAME from MODEL.pt, and write its card")
    p.add_argument("--description", help="one line: what the model is")
    p.add_argument("--recipe", help="the command that trained the model")
    p.add_argument("--data", help="what it was trained on (default: from the config.json beside MODEL.pt)")
    p.add_argument("--teacher", help="the distillation teacher: realesrgan-x4plus or a weight file")
    p.add_argument("--teacher-licence", help="the licence notice of a teacher file the zoo does not know")
    p.add_argument("--default", action="store_true", help="make it the default model (upscale with no --model)")
    p.add_argument("--stand-in", action="store_true", help="mark the card as a stand-in, not a real model")
    p.add_argument("--readme", help="regenerate the zoo table in this README (between its markers)")
    p.add_argument("--zoo-dir", default=str(ZOO_DIR), help="the zoo folder (default: the package's)")
    return p


def _evaluate(model_file: str, teacher_path: str | None) -> dict:
    """The ``evaluate`` program's JSON for ``model_file`` on the embedded validation photographs
    (CPU; ``--reference teacher:FILE`` with a teacher)."""
    from .evaluate import main as evaluate_main

    with tempfile.TemporaryDirectory(prefix="trilevelnas-card-") as tmp:
        out = os.path.join(tmp, "result.json")
        argv = ["--model", model_file, "--device", "cpu", "--no-progress", "--json", out]
        if teacher_path is not None:
            argv += ["--reference", f"teacher:{teacher_path}"]
        evaluate_main(argv)
        with open(out, encoding="utf-8") as f:
            return json.load(f)


def _write(args) -> None:
    from ..zoo.cards import TEACHERS, make_card, write_card

    if len(args.write_card) > 2:
        raise UserError("--write-card takes NAME and optionally MODEL.pt")
    name = args.write_card[0]
    old = next((c for c in list_models(args.zoo_dir) if c["name"] == name), None)
    if len(args.write_card) == 2:
        model_file = args.write_card[1]
    elif old is not None:
        model_file = f"{args.zoo_dir}/{old['file']}"
    else:
        raise UserError(f"--write-card {name}: no shipped model of that name; give its MODEL.pt")
    old = old or {}
    old_teacher = old.get("teacher") or {}
    if old_teacher and not args.teacher and old_teacher["name"] not in TEACHERS:
        raise UserError(f"--write-card {name}: its teacher {old_teacher['name']!r} is a file the zoo does not "
                        "know: give it again with --teacher FILE")
    description = args.description or old.get("description")
    recipe = args.recipe or old.get("training", {}).get("recipe")
    if not description or not recipe:
        raise UserError("--write-card needs --description TEXT and --recipe \"COMMAND\" for a new model")
    card = make_card(name, model_file, evaluate=_evaluate, description=description, recipe=recipe,
                     data=args.data or (old.get("training", {}).get("data") if len(args.write_card) == 1 else None),
                     teacher=args.teacher or old_teacher.get("name"),
                     teacher_licence=args.teacher_licence or old_teacher.get("licence"),
                     default=args.default or bool(old.get("default")), stand_in=args.stand_in or bool(old.get("stand_in")),
                     command=f"python -m trilevelnas.zoo --write-card {shlex.quote(name)}"
                     + ("" if (args.teacher or old_teacher.get("name") or "realesrgan-x4plus") in TEACHERS
                        else " --teacher TEACHER_FILE"))
    path = write_card(card, model_file, args.zoo_dir)
    print(f"wrote {path}")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.write_card:
        _write(args)
    if args.readme:
        from ..zoo.cards import update_readme

        update_readme(args.readme, list_models(args.zoo_dir))
        print(f"updated the zoo table in {args.readme}")
    if not args.write_card and not args.readme:
        print_cards(zoo_dir=args.zoo_dir)
    return 0
