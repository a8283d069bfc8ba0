"""Shipped models: trained networks that come with the package, each with its card.

The zoo is this folder: ``<name>.pt`` (a :func:`trilevelnas.models.save_model` file, well under
1 MB) and ``<name>.json``, its card — what it is, its cost, its held-out scores and where it comes
from. Cards are generated from the model file (``python -m trilevelnas.zoo --write-card``,
:mod:`trilevelnas.zoo.cards`), never typed by hand, and ``tests/test_zoo.py`` checks that
``evaluate`` reproduces every number on them. One card carries ``"default": true``: the model
``upscale`` and ``evaluate`` use when given neither ``--model`` nor ``-n``.

    from trilevelnas.zoo import list_models, load_pretrained
    [card["name"] for card in list_models()]
    net = load_pretrained()                  # the default model, in eval mode
    net = load_pretrained("trilevelnas-demo-psnr")
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..errors import InputFileError, UserError

__all__ = ["ZOO_DIR", "list_models", "card", "model_names", "model_path", "default_name",
           "load_pretrained", "format_card", "add_model_arguments", "resolve_model", "print_cards"]

#: The folder holding the shipped model files and their cards.
ZOO_DIR = Path(__file__).resolve().parent


def _read_card(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputFileError(f"model card {str(path)!r} cannot be read: {exc}") from None
    if not isinstance(data, dict) or data.get("name") != path.stem:
        raise InputFileError(f"model card {str(path)!r} is not a card of a model named {path.stem!r}")
    return data


def list_models(zoo_dir: str | Path | None = None) -> list[dict]:
    """The cards of the shipped models (each a dict, see :mod:`trilevelnas.zoo.cards`), the
    default model first, then by name. Empty when nothing is shipped."""
    folder = Path(zoo_dir) if zoo_dir is not None else ZOO_DIR
    cards = [_read_card(p) for p in sorted(folder.glob("*.json"))]
    return sorted(cards, key=lambda c: (not c.get("default", False), c["name"]))


def model_names(zoo_dir: str | Path | None = None) -> list[str]:
    """The names of the shipped models, as :func:`list_models` orders them."""
    return [c["name"] for c in list_models(zoo_dir)]


def _unknown(name: str, zoo_dir) -> UserError:
    names = model_names(zoo_dir)
    known = ", ".join(names) if names else "none is shipped"
    return UserError(f"unknown model name {name!r} (shipped models: {known}; --list-models shows their cards)")


def card(name: str, zoo_dir: str | Path | None = None) -> dict:
    """The card of the shipped model ``name``; UserError naming the known names for an unknown one."""
    for c in list_models(zoo_dir):
        if c["name"] == name:
            return c
    raise _unknown(name, zoo_dir)


def default_name(zoo_dir: str | Path | None = None) -> str:
    """The name of the default shipped model (the card with ``"default": true``); UserError if
    none is shipped."""
    cards = list_models(zoo_dir)
    defaults = [c["name"] for c in cards if c.get("default")]
    if not defaults:
        raise UserError("no default model is shipped with this trilevelnas: give --model FILE"
                        + (f" or -n NAME ({', '.join(c['name'] for c in cards)})" if cards else ""))
    return defaults[0]


def model_path(name: str | None = None, zoo_dir: str | Path | None = None) -> str:
    """The file of the shipped model ``name`` (None: the default one). UserError naming the
    known names for an unknown name; InputFileError if its card is shipped but not its file."""
    name = default_name(zoo_dir) if name is None else name
    entry = card(name, zoo_dir)
    folder = Path(zoo_dir) if zoo_dir is not None else ZOO_DIR
    path = folder / entry.get("file", f"{name}.pt")
    if not path.is_file():
        raise InputFileError(f"shipped model {name!r}: its file {str(path)!r} is missing from the package")
    return str(path)


def load_pretrained(name: str | None = None, zoo_dir: str | Path | None = None):
    """The shipped model ``name`` (None: the default one), built and loaded, in eval mode.
    The file's content digest is checked on loading."""
    from ..inference import load_model_file

    return load_model_file(model_path(name, zoo_dir))


# ---------------------------------------------------------------------------------- presentation
def _f(value, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_card(entry: dict) -> str:
    """A card as the lines ``--list-models`` prints: name, description, cost, held-out scores
    against HR (bicubic beside), against the teacher for a student, teacher and licence, training
    data and recipe, file."""
    held = entry.get("heldout", {})
    head = entry["name"] + ("  (default)" if entry.get("default") else "")
    lines = [head, f"  {entry.get('description', '')}",
             f"  x{entry.get('scale', '?')}, {entry['params']:,} parameters, {entry['gflops']:.3f} GFLOPs "
             "at a 256x256 LR input",
             f"  held out ({', '.join(held.get('images', []))}): PSNR-Y {_f(held.get('psnr_y'), 2)} dB, "
             f"SSIM-Y {_f(held.get('ssim_y'), 4)} against HR; bicubic {_f(held.get('bicubic_psnr_y'), 2)} dB, "
             f"{_f(held.get('bicubic_ssim_y'), 4)}"]
    teacher = entry.get("teacher")
    if teacher:
        vs = entry.get("vs_teacher", {})
        lines.append(f"  against the teacher's output: PSNR-Y {_f(vs.get('psnr_y'), 2)} dB, SSIM-Y "
                     f"{_f(vs.get('ssim_y'), 4)}; bicubic {_f(vs.get('bicubic_psnr_y'), 2)} dB, "
                     f"{_f(vs.get('bicubic_ssim_y'), 4)}")
        lines.append(f"  teacher: {teacher.get('title', teacher.get('name'))} "
                     f"(PSNR-Y {_f(teacher.get('psnr_y'), 2)} dB against HR)")
        lines.append(f"  licence: {teacher.get('licence', 'unknown')}: {teacher.get('notice', '')}".rstrip(": "))
    else:
        lines.append("  teacher: none (supervised by the HR images)")
    training = entry.get("training", {})
    lines.append(f"  training data: {training.get('data', 'not recorded')}")
    lines.append(f"  recipe: {training.get('recipe', 'not recorded')}")
    lines.append(f"  file: {entry.get('file')} ({entry.get('bytes', 0) / 1024:.0f} KB)")
    return "\n".join(lines)


def print_cards(file=None, zoo_dir: str | Path | None = None) -> None:
    """Print every shipped model's card (:func:`format_card`), a blank line between them."""
    file = sys.stdout if file is None else file
    cards = list_models(zoo_dir)
    if not cards:
        print("no model is shipped with this trilevelnas", file=file)
    print("\n\n".join(format_card(c) for c in cards), file=file)


# ------------------------------------------------------------------------------ program options
def add_model_arguments(parser, what: str = "the model") -> None:
    """Add ``--model FILE``, ``-n/--model-name NAME`` and ``--list-models`` to a program's parser;
    :func:`resolve_model` reads them."""
    parser.add_argument("--model", default=None,
                        help=f"{what}: a model file (save_model / train output, or ESRGAN weights); "
                             "default: the default shipped model")
    parser.add_argument("-n", "--model-name", default=None, metavar="NAME",
                        help="a shipped model by name (--list-models shows them)")
    parser.add_argument("--list-models", action="store_true",
                        help="print the shipped models' cards (cost, held-out scores, teacher and licence, "
                             "training data and recipe) and exit")


def resolve_model(args) -> str:
    """The model file that ``args`` (from :func:`add_model_arguments`) names: ``--model``, the
    shipped model of ``-n``, or the default shipped model. UserError (one line) for both at once
    or an unknown name."""
    if args.model is not None and args.model_name is not None:
        raise UserError(f"give --model FILE or -n/--model-name NAME, not both "
                        f"(got --model {args.model} and -n {args.model_name})")
    if args.model is not None:
        return args.model
    return model_path(args.model_name)
