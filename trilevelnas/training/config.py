"""Run configuration: nested dataclasses, JSON files, ``key=value`` overrides, validation.

A configuration is built in layers: the dataclass defaults, then a preset file
(``trilevelnas/configs/<name>.json``), then a user ``--config`` file, then ``--set section.key=value``
overrides, then the dedicated command-line flags (``--data``, ``--teacher``, ``--seed``, ...).
Every layer is a nested dict of overrides; an unknown section or key, a value of the wrong type or
an inconsistent combination raises :class:`~trilevelnas.errors.UserError` naming the culprit.

Every field declares its rule where it is defined: ``x: int = setting(default, integer(ge=0))``
stores a :class:`Rule` in the field's metadata (its type, whether it may be null, its range or
choices, and for lists the rule of each entry). The same rule converts a layer's value
(:func:`apply_overrides`: JSON values or ``--set`` text) and checks the finished configuration
(:func:`validate`: every field first, then the combinations of fields). See docs/pipeline.md,
"Configuration rules".
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

from ..errors import UserError
from ..fileio import os_error

# ------------------------------------------------------------------------------------------ rules
_INT_LIMIT = 2 ** 63  # ints are seeds, step counts and sizes: they must fit torch's int64
_NULL_WORDS = ("none", "null")
_TRUE_WORDS = ("true", "1", "yes")
_FALSE_WORDS = ("false", "0", "no")
_KINDS = ("int", "float", "bool", "str", "path", "list", "tuple")


@dataclass(frozen=True)
class Rule:
    """What one configuration field holds; :func:`validate` applies it to every field.

    ``kind``: ``int``, ``float``, ``bool``, ``str``, ``path`` (a non-empty string naming a file or
    folder), ``list`` or ``tuple`` (entries follow ``item``; a tuple has exactly ``length``).
    ``nullable``: None is allowed (``null``/``none`` on the command line). Scalars: ``low``/``high``
    bounds (``*_open``: the bound itself is excluded), ``choices``, ``multiple_of``; floats must be
    finite. Lists: ``increasing`` (strictly), ``at_most`` (the name of a sibling int field every
    entry may not exceed while that field is > 0). ``path_kind``: ``"file"`` or ``"dir"``, what
    :func:`check_paths` expects there; ``flag``: the command-line option that sets it. ``check``:
    an extra test returning a problem text or None. ``note``: what special values mean.
    """

    kind: str
    nullable: bool = False
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False
    choices: tuple | None = None
    multiple_of: int | None = None
    item: "Rule | None" = None
    length: int | None = None
    increasing: bool = False
    at_most: str | None = None
    path_kind: str | None = None
    flag: str | None = None
    check: Callable[[Any], str | None] | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown rule kind {self.kind!r}")
        if self.kind in ("list", "tuple") and self.item is None:
            raise ValueError("a list or tuple rule needs an item rule")

    def allows(self, value: Any) -> bool:
        """Whether a scalar ``value`` of the right type passes the rule's range, choices and checks."""
        return _scalar_problem(value, self) is None


def _bounds(ge, gt, le, lt) -> dict:
    if ge is not None and gt is not None or le is not None and lt is not None:
        raise ValueError("give one lower and one upper bound at most")
    return {"low": gt if gt is not None else ge, "low_open": gt is not None,
            "high": lt if lt is not None else le, "high_open": lt is not None}


def integer(*, ge=None, gt=None, le=None, lt=None, choices=None, multiple_of=None,
            nullable=False, note="") -> Rule:
    """An int field (``ge``/``gt``/``le``/``lt`` bounds, or ``choices``)."""
    return Rule("int", nullable=nullable, choices=tuple(choices) if choices else None,
                multiple_of=multiple_of, note=note, **_bounds(ge, gt, le, lt))


def number(*, ge=None, gt=None, le=None, lt=None, nullable=False, note="") -> Rule:
    """A finite float field with optional bounds."""
    return Rule("float", nullable=nullable, note=note, **_bounds(ge, gt, le, lt))


def boolean(note="") -> Rule:
    """A bool field (``true``/``false``, ``yes``/``no``, ``1``/``0`` on the command line)."""
    return Rule("bool", note=note)


def choice(*options: str, note="") -> Rule:
    """A string field that must be one of ``options``."""
    return Rule("str", choices=tuple(options), note=note)


def text(check: Callable[[Any], str | None] | None = None, note="") -> Rule:
    """A free string field, with an optional extra ``check``."""
    return Rule("str", check=check, note=note)


def path(kind: str, *, flag: str | None = None, note="") -> Rule:
    """A nullable path to a ``"file"`` or a ``"dir"`` (existence is checked by :func:`check_paths`)."""
    if kind not in ("file", "dir"):
        raise ValueError("path kind must be 'file' or 'dir'")
    return Rule("path", nullable=True, path_kind=kind, flag=flag, note=note)


def list_of(item: Rule, *, nullable=False, increasing=False, at_most=None, note="") -> Rule:
    """A list whose entries follow ``item``."""
    return Rule("list", item=item, nullable=nullable, increasing=increasing, at_most=at_most, note=note)


def pair(item: Rule, note="") -> Rule:
    """A tuple of exactly two entries following ``item``."""
    return Rule("tuple", item=item, length=2, note=note)


def setting(default: Any, rule: Rule):
    """A dataclass field with ``default`` (a list default is copied per instance) and its ``rule``."""
    if isinstance(default, list):
        return field(default_factory=lambda d=tuple(default): list(d), metadata={"rule": rule})
    return field(default=default, metadata={"rule": rule})


def _filename_template(value: str) -> str | None:
    try:
        if value.format("a") == value.format("b"):
            return "must contain {} where the GT file stem goes, like {}x4"
    except (IndexError, KeyError, ValueError) as exc:
        return f"not a filename template ({exc}); use {{}} for the GT file stem, like {{}}x4"
    return None


def _device_name(value: str) -> str | None:
    if value in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", value):
        return None
    return "expected auto, cpu, cuda or cuda:N"


_BETA = number(ge=0, lt=1)
_STEP = integer(ge=1)


# ------------------------------------------------------------------------------------- sections
@dataclass
class DataConfig:
    """Where the images come from and how they are cut into batches."""

    # HR folder (or paired folder); None: the embedded photographs
    root: str | None = setting(None, path("dir", flag="--data"))
    # paired LR folder (BasicSR dataroot_lq); None: LR made on the fly
    lq_root: str | None = setting(None, path("dir"))
    filename_tmpl: str = setting("{}", text(_filename_template))  # paired LR names, BasicSR style ("{}x4")
    # validation HR folder; None: the embedded validation photographs
    val_root: str | None = setting(None, path("dir"))
    val_max_images: int = setting(0, integer(ge=0, note="0: all validation images"))
    scale: int = setting(4, integer(choices=(2, 3, 4, 8)))
    # HR patch side (the LR patch is patch_size // scale); a multiple of scale, see validate()
    patch_size: int = setting(96, integer(ge=1))
    batch_size: int = setting(16, integer(ge=1))
    augment: bool = setting(True, boolean())
    skip_bad_images: bool = setting(False, boolean())
    # the paper presets: the embedded photographs are no substitute
    require_root: bool = setting(False, boolean())


@dataclass
class SupernetSection:
    """The search space (docs/supernet.md); passed to ``supernet.SupernetConfig``."""

    backbone: str = setting("B", choice("A", "B"))
    topology: str = setting("tree", choice("tree", "trellis", "fixed"))
    channels: int = setting(64, integer(ge=8, multiple_of=8))
    n_rir: int = setting(5, integer(ge=1))
    n_up: int = setting(2, integer(ge=0))
    share: str = setting("ordinal", choice("ordinal", "none"))
    # for α and trellis edges
    relaxation: str = setting("sparsestmax", choice("softmax", "sparsemax", "sparsestmax"))
    # the tree's node weights β
    node_relaxation: str = setting("sorted_sparsestmax",
                                   choice("softmax", "sparsemax", "sparsestmax", "sorted_sparsestmax"))
    # None: 0.01 for the tree, 0 for trellis / fixed
    order_lambda: float | None = setting(None, number(ge=0, nullable=True,
                                                       note="null: the topology's default"))
    sparse_execution: bool = setting(True, boolean())
    # topology "fixed": the path; None: the backbone's full path
    fixed_path: list[int] | None = setting(None, list_of(integer(choices=(0, 1), note="0: RiR cell, 1: up/conv"),
                                                         nullable=True))
    gumbel_tau: float = setting(1.0, number(gt=0))  # temperature of the Gumbel-softmax width sampler


@dataclass
class LossConfig:
    """The distance d(G, G0) and the efficiency term H of the paper's Eq. 5."""

    # psnr (L1 content) | visual (L1 content + VGG perceptual)
    objective: str = setting("psnr", choice("psnr", "visual"))
    content_weight: float = setting(1.0, number(ge=0))
    perceptual_weight: float = setting(1.0, number(ge=0))  # used when objective is "visual"
    # visual objective: perceptual loss during the search phase
    perceptual_in_search: bool = setting(True, boolean())
    # torchvision-format VGG19 weight file (visual objective)
    vgg_weights: str | None = setting(None, path("file"))
    # ESRGAN weights; None: supervise with the HR images
    teacher: str | None = setting(None, path("file", flag="--teacher"))
    # teacher-output cache folder (data/teacher_cache.py); None: .teacher-cache next to --out
    teacher_cache: str | None = setting(None, Rule("str", nullable=True, flag="--teacher-cache",
                                                   check=lambda v: None if v.strip() else "must not be empty",
                                                   note='null: .teacher-cache next to --out; "off": no cache'))
    # the paper presets distil: a missing --teacher is an error
    require_teacher: bool = setting(False, boolean())
    # λ_f: weight of the expected GFLOPs in the architecture loss
    flops_weight: float = setting(0.0, number(ge=0))


@dataclass
class PhaseConfig:
    """One optimisation phase: Adam on the network weights with a step-decay schedule."""

    steps: int = setting(0, integer(ge=0, note="0: the phase does not run"))
    lr: float = setting(1e-4, number(gt=0))
    betas: tuple[float, float] = setting((0.9, 0.999), pair(_BETA))
    weight_decay: float = setting(0.0, number(ge=0))
    # steps at which the lr is multiplied by lr_decay
    milestones: list[int] = setting([], list_of(_STEP, increasing=True, at_most="steps"))
    lr_decay: float = setting(0.5, number(gt=0, le=1))
    grad_clip: float = setting(0.0, number(ge=0, note="0: no clipping"))
    batch_size: int = setting(0, integer(ge=0, note="0: data.batch_size"))


@dataclass
class SearchConfig(PhaseConfig):
    """The search phase: weight steps as a PhaseConfig, plus the architecture optimiser."""

    arch_lr: float = setting(3e-4, number(gt=0))
    arch_betas: tuple[float, float] = setting((0.5, 0.999), pair(_BETA))
    arch_weight_decay: float = setting(0.0, number(ge=0))
    # ρ, as a fraction of each group's circumradius
    radius_start: float = setting(0.0, number(ge=0, le=1, note="a fraction of the circumradius"))
    radius_end: float = setting(1.0, number(ge=0, le=1, note="a fraction of the circumradius"))
    # fraction of the search steps held at radius_start before the ramp
    radius_warmup: float = setting(0.0, number(ge=0, lt=1))


@dataclass
class TrainConfig(PhaseConfig):
    """Training the derived network after the search (or from an architecture file)."""

    # search: inherit the supernet's weights | scratch: fresh initialisation
    init: str = setting("search", choice("search", "scratch"))
    # visual objective: perceptual fine-tuning after the content phase
    finetune_steps: int = setting(0, integer(ge=0, note="0: no fine-tuning"))
    finetune_milestones: list[int] = setting([], list_of(_STEP, increasing=True, at_most="finetune_steps"))


@dataclass
class RunConfig:
    """Bookkeeping: seed, checkpoint and log cadence, validation, device."""

    seed: int = setting(0, integer(ge=0))
    device: str = setting("auto", text(_device_name))  # auto | cpu | cuda | cuda:N
    # steps; a checkpoint is also written at every phase end
    checkpoint_every: int = setting(100, integer(ge=1))
    log_every: int = setting(10, integer(ge=1))
    # steps of the training phases; 0: validate at phase ends only
    val_every: int = setting(0, integer(ge=0, note="0: at phase ends only"))
    # torch intra-op threads on CPU; 0: all cores available to the process
    threads: int = setting(0, integer(ge=0, note="0: all cores available to the process"))
    # search program: train the derived network (writes model.pt)
    train_after_search: bool = setting(True, boolean())


@dataclass
class Config:
    """A whole run: the search space, the data, the objective and every phase."""

    data: DataConfig = field(default_factory=DataConfig)
    supernet: SupernetSection = field(default_factory=SupernetSection)
    loss: LossConfig = field(default_factory=LossConfig)
    pretrain: PhaseConfig = field(default_factory=PhaseConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    preset: str | None = None

    def to_dict(self) -> dict:
        """A JSON-ready nested dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Config":
        """The defaults overridden by ``d`` (a nested dict), validated."""
        cfg = cls()
        apply_overrides(cfg, d, source="config")
        validate(cfg)
        return cfg


def sections() -> dict[str, type]:
    """``{section name: its dataclass}`` of :class:`Config`, in declaration order."""
    return {f.name: f.default_factory for f in dataclasses.fields(Config)
            if f.default_factory is not dataclasses.MISSING}


def field_rules() -> Iterator[tuple[str, str, Rule]]:
    """``(section, key, rule)`` for every field of every section, in declaration order.

    A field declared without a rule is a programming error (TypeError naming it), so a new field
    cannot slip past :func:`validate`.
    """
    for name, cls in sections().items():
        for f in dataclasses.fields(cls):
            rule = f.metadata.get("rule")
            if not isinstance(rule, Rule):
                raise TypeError(f"config field {name}.{f.name} declares no Rule (use setting(default, rule))")
            yield name, f.name, rule


# ------------------------------------------------------------------------------- the checker
def _show(value: Any) -> str:
    """``value`` as the messages print it: repr, with tuples shown as lists."""
    if isinstance(value, tuple):
        value = list(value)
    return repr(value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _range_text(rule: Rule) -> str:
    lo, hi = rule.low, rule.high
    if lo is not None and hi is not None:
        return (f"must lie in {'(' if rule.low_open else '['}{_num(lo)}, {_num(hi)}"
                f"{')' if rule.high_open else ']'}")
    if lo is not None:
        if lo == 0 and rule.low_open:
            return "must be positive"
        return f"must be {'>' if rule.low_open else '>='} {_num(lo)}"
    return f"must be {'<' if rule.high_open else '<='} {_num(hi)}"


def _type_name(rule: Rule) -> str:
    return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
            "path": "a path (a string)", "list": "a list like [1, 2]",
            "tuple": f"a list of {rule.length} values"}[rule.kind]


def _scalar_problem(value: Any, rule: Rule) -> str | None:
    """The first way a correctly typed scalar breaks ``rule`` (choices, finiteness, range), or None."""
    if rule.kind == "float" and not math.isfinite(value):
        return "must be finite"
    if rule.kind == "int" and not -_INT_LIMIT < value < _INT_LIMIT:
        return "is too large (integers must fit in 64 bits)"
    if rule.choices is not None and value not in rule.choices:
        return f"expected one of {', '.join(str(c) for c in rule.choices)}"
    if rule.kind in ("int", "float"):
        lo, hi = rule.low, rule.high
        if (lo is not None and (value < lo or (rule.low_open and value == lo))) or \
                (hi is not None and (value > hi or (rule.high_open and value == hi))):
            return _range_text(rule) + (f" ({rule.note})" if rule.note else "")
        if rule.multiple_of and value % rule.multiple_of:
            return f"must be a multiple of {rule.multiple_of}"
    if rule.kind == "path":
        if not value.strip():
            return "must not be empty (use null for none)"
        if "\0" in value:
            return "must not contain a NUL character"
    if rule.check is not None:
        return rule.check(value)
    return None


def _fail(where: str, value: Any, problem: str) -> UserError:
    return UserError(f"{where} = {_show(value)}: {problem}")


def _typed(value: Any, rule: Rule) -> bool:
    k = rule.kind
    if k == "bool":
        return isinstance(value, bool)
    if k == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if k == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if k in ("str", "path"):
        return isinstance(value, str)
    return isinstance(value, (list, tuple))


def check_value(value: Any, rule: Rule, where: str, section: Any = None) -> None:
    """Raise UserError ``"<where> = <value>: <problem>"`` unless ``value`` satisfies ``rule``.

    ``where`` is the key path (``search.betas``); list entries are named ``where[i]``. With
    ``section`` (the dataclass instance holding the field) the rule's relation to a sibling field
    (``at_most``) is checked too; without it, only what the value is on its own.
    """
    if value is None:
        if rule.nullable:
            return
        raise UserError(f"{where}: may not be null")
    if not _typed(value, rule):
        raise _fail(where, value, f"expected {_type_name(rule)}")
    if rule.kind not in ("list", "tuple"):
        problem = _scalar_problem(value, rule)
        if problem:
            raise _fail(where, value, problem)
        return
    if rule.kind == "tuple" and len(value) != rule.length:
        raise _fail(where, value, f"expected {rule.length} values")
    for i, v in enumerate(value):
        check_value(v, rule.item, f"{where}[{i}]", section)
    if rule.increasing:
        for i in range(1, len(value)):
            if value[i] <= value[i - 1]:
                raise _fail(f"{where}[{i}]", value[i], f"must be larger than {where}[{i - 1}] = "
                            f"{_show(value[i - 1])} (the entries must be strictly increasing)")
    if rule.at_most is not None and section is not None:
        limit = getattr(section, rule.at_most, None)
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            sibling = f"{where.rsplit('.', 1)[0]}.{rule.at_most}" if "." in where else rule.at_most
            for i, v in enumerate(value):
                if v > limit:
                    raise _fail(f"{where}[{i}]", v, f"must not exceed {sibling} = {limit} (set {where} "
                                "too, e.g. to [])")


def _as_list(value: Any, rule: Rule, where: str) -> list:
    """A list from a JSON list, a tuple, or ``--set`` text (JSON, or ``[a, b]`` with bare words)."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        s = value.strip()
        try:
            parsed = json.loads(s)
        except json.JSONDecodeError:
            if s.startswith("[") and s.endswith("]"):  # e.g. [nan, 0.9]: bare words, read per entry
                inner = s[1:-1].strip()
                return [p.strip() for p in inner.split(",")] if inner else []
            raise _fail(where, value, f"expected {_type_name(rule)}") from None
        if isinstance(parsed, list):
            return parsed
    raise _fail(where, value, f"expected {_type_name(rule)}")


def coerce_value(value: Any, rule: Rule, where: str) -> Any:
    """``value`` (a JSON value or ``--set`` text) converted to the type ``rule`` declares.

    Only the type is settled here (``"10"`` → 10, ``"false"`` → False, ``"[0.5, 0.9]"`` →
    (0.5, 0.9), ``"null"`` → None for a nullable field); ranges are :func:`check_value`'s. A value
    that is not of the type raises UserError naming ``where``.
    """
    if value is None or (rule.nullable and isinstance(value, str) and value.strip().lower() in _NULL_WORDS):
        if not rule.nullable:
            raise UserError(f"{where}: may not be null")
        return None
    k = rule.kind
    if k == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS + _FALSE_WORDS:
            return value.strip().lower() in _TRUE_WORDS
    elif k == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        number_ = value
        if isinstance(value, str):
            try:
                number_ = int(value.strip())
                return number_
            except ValueError:
                try:
                    number_ = float(value)
                except ValueError:
                    number_ = None
        if isinstance(number_, float) and number_.is_integer():
            return int(number_)
    elif k == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif k in ("str", "path"):
        if isinstance(value, str):
            return value
    else:
        items = _as_list(value, rule, where)
        if k == "tuple" and len(items) != rule.length:
            raise _fail(where, value, f"expected {rule.length} values")
        out = [coerce_value(v, rule.item, f"{where}[{i}]") for i, v in enumerate(items)]
        return tuple(out) if k == "tuple" else out
    raise _fail(where, value, f"expected {_type_name(rule)}")


# ---------------------------------------------------------------------------------- layering
def apply_overrides(cfg: Config, overrides: Mapping[str, Any], source: str) -> None:
    """Set the nested ``overrides`` on ``cfg`` in place; ``source`` names their origin in errors.

    Each value is converted with its field's rule (:func:`coerce_value`); unknown sections and
    keys and values of the wrong type raise UserError. Ranges are checked by :func:`validate`,
    once every layer is in.
    """
    if not isinstance(overrides, Mapping):
        raise UserError(f"{source}: expected a JSON object at the top level")
    known_sections = sections()
    names = set(known_sections) | {"preset"}
    rules = {}
    for sec, key, rule in field_rules():
        rules.setdefault(sec, {})[key] = rule
    for name, value in overrides.items():
        if name in ("description", "comment"):
            continue
        if name not in names:
            raise UserError(f"{source}: unknown section {name!r} (known: {', '.join(sorted(names))})")
        if name == "preset":
            if value is not None and not isinstance(value, str):
                raise UserError(f"{source}: preset = {_show(value)}: expected a preset name (a string)")
            cfg.preset = value
            continue
        section = getattr(cfg, name)
        if not isinstance(value, Mapping):
            raise UserError(f"{source}: section {name!r} must be an object")
        known = rules[name]
        for key, v in value.items():
            where = f"{source}: {name}.{key}"
            if key not in known:
                raise UserError(f"{where}: unknown key (known in {name}: {', '.join(sorted(known))})")
            setattr(section, key, coerce_value(v, known[key], where))


def parse_set(items: list[str] | None) -> dict:
    """``["search.steps=10", ...]`` → ``{"search": {"steps": "10"}}`` (strings; coerced later)."""
    out: dict[str, dict] = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected section.key=value")
        key, value = item.split("=", 1)
        if key.count(".") != 1:
            raise UserError(f"--set {item!r}: the key must be section.key, like search.steps")
        section, name = key.split(".")
        out.setdefault(section, {})[name] = value
    return out


def load_json(path: str, what: str) -> dict:
    """A JSON object from ``path``; a missing, unreadable or malformed file raises UserError naming it."""
    if os.path.isdir(path):
        raise UserError(f"{what} {path!r} is a folder, not a file")
    if not os.path.lexists(path):
        raise UserError(f"{what} {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise os_error(exc, f"{what} {path!r}", "read") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} {path!r} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path!r}: expected a JSON object")
    return data


# -------------------------------------------------------------------------------- validation
def validate(cfg: Config) -> None:
    """Raise UserError for the first field that breaks its rule, then for combinations that cannot run.

    Every field of every section is checked with its declared :class:`Rule` (type, null, range,
    choices, list entries), in declaration order; the cross-field checks follow (the inputs a
    preset requires, a field's declared bound by a sibling such as milestones by steps, and the
    combinations of :func:`_check_combinations`).
    """
    if cfg.preset is not None and not isinstance(cfg.preset, str):
        raise UserError(f"preset = {_show(cfg.preset)}: expected a preset name (a string)")
    for sec, key, rule in field_rules():
        check_value(getattr(getattr(cfg, sec), key), rule, f"{sec}.{key}")
    _check_combinations(cfg)


def _check_combinations(cfg: Config) -> None:
    """The rules that relate several fields (each field is already valid on its own): first the
    inputs a preset requires, then the fields' declared relations to a sibling (``at_most``),
    then the combinations below."""
    d, s = cfg.data, cfg.supernet
    if d.require_root and d.root is None:
        raise UserError(f"preset {cfg.preset or ''!s} needs a training data folder: pass --data DIR "
                        "(the paper used DIV2K + Flickr2K HR images)")
    if cfg.loss.require_teacher and not cfg.loss.teacher:
        raise UserError(f"preset {cfg.preset or ''!s} distils from an ESRGAN teacher: pass --teacher FILE "
                        "(RRDBNet weights), or --set loss.require_teacher=false to supervise with the HR images")
    for sec, key, rule in field_rules():
        if rule.at_most is not None:
            section = getattr(cfg, sec)
            check_value(getattr(section, key), rule, f"{sec}.{key}", section)
    if s.backbone == "A" and d.scale != 2 ** s.n_up:
        raise UserError(f"data.scale = {d.scale} is inconsistent with backbone A and supernet.n_up = "
                        f"{s.n_up} (each up doubles the size: scale must be {2 ** s.n_up})")
    if d.patch_size < d.scale * 4 or d.patch_size % d.scale:
        raise UserError(f"data.patch_size = {d.patch_size}: must be a multiple of data.scale "
                        f"({d.scale}) and at least {d.scale * 4}")
    if s.order_lambda and s.topology != "tree":
        raise UserError(f"supernet.order_lambda = {s.order_lambda}: the ordering term orders the tree's "
                        f"root-to-node paths; topology {s.topology!r} has none (set it to 0)")
    if s.topology == "tree" and s.n_rir + s.n_up > 12:
        raise UserError(f"supernet.n_rir = {s.n_rir}, supernet.n_up = {s.n_up}: the tree would be too "
                        "large (n_rir + n_up must be at most 12)")
    if s.fixed_path is not None and s.backbone == "A" and sum(s.fixed_path) > s.n_up:
        raise UserError(f"supernet.fixed_path = {s.fixed_path} has {sum(s.fixed_path)} ups; backbone A "
                        f"with supernet.n_up = {s.n_up} takes at most {s.n_up}")
    if cfg.loss.objective == "visual" and cfg.loss.perceptual_weight > 0 and not cfg.loss.vgg_weights:
        raise UserError("loss.objective = 'visual' needs loss.vgg_weights (a torchvision-format VGG19 "
                        "weight file; set it with --set loss.vgg_weights=PATH)")
    if cfg.train.finetune_steps > 0 and cfg.loss.objective != "visual":
        raise UserError("train.finetune_steps > 0 is the perceptual fine-tuning of the visual "
                        "objective, but loss.objective = 'psnr'")


def check_paths(cfg: Config, files: Mapping[str, str | None] | None = None) -> None:
    """UserError unless every path field that is set names an existing, readable file or folder
    of the kind its rule declares, and each of ``files`` (``{"--init": path}``) a readable file.

    For a run (not for :func:`build_config`, which may describe a run on another machine): called
    before any data is read, so a wrong path is named before the long work starts.
    """
    items = []
    for sec, key, rule in field_rules():
        value = getattr(getattr(cfg, sec), key)
        if rule.kind == "path" and value is not None:
            name = f"{sec}.{key}" + (f" ({rule.flag})" if rule.flag else "")
            items.append((name, value, rule.path_kind))
    items += [(flag, value, "file") for flag, value in (files or {}).items() if value is not None]
    for name, value, kind in items:
        what = "folder" if kind == "dir" else "file"
        if not os.path.exists(value):
            parent = os.path.dirname(os.path.abspath(value))
            if os.path.exists(parent) and not os.path.isdir(parent):
                raise UserError(f"{name} {value}: {parent} is a file, not a folder")
            raise UserError(f"{name} {value}: no such {what}")
        if kind == "dir" and not os.path.isdir(value):
            raise UserError(f"{name} {value}: it is a file, not a folder")
        if kind == "file" and os.path.isdir(value):
            raise UserError(f"{name} {value}: it is a folder, not a file")
        if not os.access(value, os.R_OK | (os.X_OK if kind == "dir" else 0)):
            raise UserError(f"{name} {value}: cannot read it: permission denied")
