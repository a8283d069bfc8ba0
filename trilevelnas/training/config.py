"""Run configuration: nested dataclasses, JSON files, ``key=value`` overrides, validation.

:func:`build_config` builds a configuration in one pass of layers: the dataclass defaults, then a preset file
(``trilevelnas/configs/<name>.json``), then a user ``--config`` file, then ``--set section.key=value``
overrides, then the dedicated command-line flags (``--data``, ``--teacher``, ``--seed``, ...).
Every layer is a nested dict of overrides; an unknown section or key, a value of the wrong type or
an inconsistent combination raises :class:`~trilevelnas.errors.ConfigError` naming the culprit
(:class:`~trilevelnas.errors.InputFileError` for a file that cannot be read).

Every field declares its rule where it is defined: ``x: int = setting(default, integer(ge=0))``
(:mod:`trilevelnas.settings`). The same rule converts a layer's value (:func:`apply_overrides`:
JSON values or ``--set`` text) and checks the finished configuration (:func:`validate`: every
field first, then the combinations of fields). The ``supernet`` section is a
:class:`~trilevelnas.supernet.SupernetConfig`: its fields and rules are the settings (less
``scale``, which is ``data.scale``, and the activation checkpointing), ``relaxations`` spelled as
the flat keys of the config files, and its combinations are the supernet's own checks
(:func:`supernet_config`: the supernet a run builds). See docs/pipeline.md, "Configuration rules".
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from ..devices import available_cores
from ..errors import ConfigError, InputFileError
from ..fileio import os_error
from ..settings import (Rule, boolean, check_value, choice, coerce_value, declared_rules, integer, list_of,
                        number, pair, parse_json, path, setting, show_value, text)
from ..supernet.config import FLAT_RELAXATIONS, SupernetConfig
from ..supernet.config import check_combinations as check_supernet_combinations
from .losses import FLOPS_TARGET_WEIGHT
from .presets import DEFAULT_PRESET, preset_file


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


#: SupernetConfig fields that are not ``supernet`` settings of a run: ``scale`` is ``data.scale``;
#: the programs do not recompute activations (``checkpoint``, ``checkpoint_rows``).
_NOT_RUN_SETTINGS = ("scale", "checkpoint", "checkpoint_rows")


def _supernet_section() -> SupernetConfig:
    """The ``supernet`` section's defaults: :class:`SupernetConfig`'s, with ``order_lambda`` left
    open (None: the topology's default, filled in when the supernet is built, :func:`supernet_config`)."""
    section = SupernetConfig()
    section.order_lambda = None
    return section


def supernet_config(cfg: "Config") -> SupernetConfig:
    """The supernet ``cfg`` builds: its ``supernet`` section at ``data.scale``, validated with the
    open defaults filled in (a new object; the section is left as it is)."""
    s = cfg.supernet
    return dataclasses.replace(s, scale=cfg.data.scale, relaxations=dict(s.relaxations))


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
    # teacher-output cache folder (data/teacher_cache.py); None: the private ~/.cache/trilevelnas/teacher
    teacher_cache: str | None = setting(None, Rule("str", nullable=True, flag="--teacher-cache",
                                                   check=lambda v: None if v.strip() else "must not be empty",
                                                   note='null: the private per-user ~/.cache/trilevelnas/teacher; "off": no cache'))
    # the paper presets distil: a missing --teacher is an error
    require_teacher: bool = setting(False, boolean())
    # λ_f: weight of the expected GFLOPs in the architecture loss
    flops_weight: float = setting(0.0, number(ge=0))
    # GFLOPs at a 256x256 LR input the derived network must cost (±10%); replaces λ_f·H in the search
    flops_target: float | None = setting(None, number(gt=0, nullable=True, note="null: no target"))
    # weight of the target's penalty on the expected GFLOPs in the architecture loss; 0: the target
    # is met by the derivation alone and the architecture gradient is the task's (docs/supernet.md)
    flops_target_weight: float = setting(FLOPS_TARGET_WEIGHT, number(ge=0))
    # what the target's penalty moves: "path" (β alone: the cells' ops and widths follow the task
    # and the derivation fits them to the target; a fixed path has no β, so there the derivation
    # alone meets the target) or "all" (α, β, γ); docs/supernet.md
    flops_target_levels: str = setting("path", choice("path", "all"))


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
    # decay of the weight average validated, scored and saved (BasicSR's ema_decay, 0.999)
    ema: float = setting(0.0, number(ge=0, lt=1, note="0: the last iterate, no average"))


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
    # torch intra-op threads on CPU; 0: all cores available to the process; at most that many
    # (a bound of the machine that runs it: check_paths, not validate)
    threads: int = setting(0, integer(ge=0, note="0: all cores available to the process"))
    # the derived network's train and finetune phases in channels-last (NHWC) memory format: oneDNN
    # and cuDNN skip the layout reorders around each convolution (float rounding only; docs/pipeline.md)
    channels_last: bool = setting(True, boolean())
    # search program: train the derived network (writes model.pt)
    train_after_search: bool = setting(True, boolean())
    # --resume: continue although the training or validation images changed since the checkpoint
    allow_data_change: bool = setting(False, boolean())


@dataclass
class Config:
    """A whole run: the search space, the data, the objective and every phase."""

    data: DataConfig = field(default_factory=DataConfig)
    supernet: SupernetConfig = field(default_factory=_supernet_section)
    loss: LossConfig = field(default_factory=LossConfig)
    pretrain: PhaseConfig = field(default_factory=PhaseConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    preset: str | None = None

    def to_dict(self) -> dict:
        """A JSON-ready nested dict of the settings (tuples become lists), what ``config.json`` holds."""
        d = {name: {key: get_setting(getattr(self, name), key) for key, _ in _settings(cls)}
             for name, cls in sections().items()}
        return json.loads(json.dumps({**d, "preset": self.preset}))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Config":
        """The defaults overridden by ``d`` (a nested dict), validated."""
        cfg = cls()
        apply_overrides(cfg, d, source="config")
        validate(cfg)
        return cfg


def sections() -> dict[str, type]:
    """``{section name: its dataclass}`` of :class:`Config`, in declaration order."""
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config) if f.default_factory is not dataclasses.MISSING}


def _settings(cls: type) -> Iterator[tuple[str, Rule]]:
    """``(key, rule)`` of the settings of a section's dataclass, in declaration order: its fields;
    for :class:`SupernetConfig` less :data:`_NOT_RUN_SETTINGS`, with the ``relaxations`` mapping
    spelled as the config files' flat keys (:data:`FLAT_RELAXATIONS`)."""
    for name, rule in declared_rules(cls):
        if cls is not SupernetConfig:
            yield name, rule
        elif name == "relaxations":
            level_rules = dict(rule.entries)
            yield from ((key, level_rules[levels[0]]) for key, levels in FLAT_RELAXATIONS.items())
        elif name not in _NOT_RUN_SETTINGS:
            yield name, rule


def get_setting(section, key: str):
    """The value of setting ``key`` of a ``section`` object (a flat relaxation key reads its first level)."""
    levels = FLAT_RELAXATIONS.get(key) if isinstance(section, SupernetConfig) else None
    return section.relaxations[levels[0]] if levels else getattr(section, key)


def _set_setting(section, key: str, value) -> None:
    levels = FLAT_RELAXATIONS.get(key) if isinstance(section, SupernetConfig) else None
    if levels:
        section.relaxations.update(dict.fromkeys(levels, value))
    else:
        setattr(section, key, value)


def field_rules() -> Iterator[tuple[str, str, Rule]]:
    """``(section, key, rule)`` for every setting of every section, in declaration order.

    A field declared without a rule is a programming error (TypeError naming it), so a new field
    cannot slip past :func:`validate`.
    """
    for name, cls in sections().items():
        for key, rule in _settings(cls):
            yield name, key, rule


# ---------------------------------------------------------------------------------- layering
def apply_overrides(cfg: Config, overrides: Mapping[str, Any], source: str) -> None:
    """Set the nested ``overrides`` on ``cfg`` in place; ``source`` names their origin in errors.

    Each value is converted with its field's rule (:func:`coerce_value`); unknown sections and
    keys and values of the wrong type raise ConfigError. Ranges are checked by :func:`validate`,
    once every layer is in.
    """
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{source}: expected a JSON object at the top level")
    known_sections = sections()
    names = set(known_sections) | {"preset"}
    rules = {}
    for sec, key, rule in field_rules():
        rules.setdefault(sec, {})[key] = rule
    for name, value in overrides.items():
        if name in ("description", "comment"):
            continue
        if name not in names:
            raise ConfigError(f"{source}: unknown section {name!r} (known: {', '.join(sorted(names))})")
        if name == "preset":
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{source}: preset = {show_value(value)}: expected a preset name (a string)")
            cfg.preset = value
            continue
        section = getattr(cfg, name)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: section {name!r} must be an object")
        known = rules[name]
        for key, v in value.items():
            where = f"{source}: {name}.{key}"
            if key not in known:
                raise ConfigError(f"{where}: unknown key (known in {name}: {', '.join(sorted(known))})")
            _set_setting(section, key, coerce_value(v, known[key], where))


def parse_set(items: list[str] | None) -> dict:
    """``["search.steps=10", ...]`` → ``{"search": {"steps": "10"}}`` (strings; coerced later)."""
    out: dict[str, dict] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        key, value = item.split("=", 1)
        if key.count(".") != 1:
            raise ConfigError(f"--set {item!r}: the key must be section.key, like search.steps")
        section, name = key.split(".")
        out.setdefault(section, {})[name] = value
    return out


def build_config(preset: str | None = None, config_file: str | None = None,
                 sets: Sequence[str] | None = None, flags: Mapping[str, Mapping[str, Any]] | None = None,
                 base: Mapping[str, Any] | None = None) -> Config:
    """The validated configuration of the layers defaults ← ``base`` (e.g. a checkpoint's config)
    ← preset ← config file ← ``--set`` ← flags, each applied as it is read.

    ``preset`` None means the default preset unless ``base`` is given; ``flags`` is a nested dict
    of the dedicated command-line options (None values are skipped).
    """
    cfg = Config()
    if base is not None:
        apply_overrides(cfg, base, source="checkpoint config")
    if preset is None and base is None:
        preset = DEFAULT_PRESET
    if preset is not None:
        apply_overrides(cfg, load_json(preset_file(preset), "preset file"), source=f"preset {preset}")
        cfg.preset = preset
    if config_file is not None:
        apply_overrides(cfg, load_json(config_file, "--config file"), source=f"--config {config_file}")
    apply_overrides(cfg, parse_set(list(sets or [])), source="--set")
    given = {sec: {k: v for k, v in vals.items() if v is not None} for sec, vals in (flags or {}).items()}
    apply_overrides(cfg, {sec: vals for sec, vals in given.items() if vals}, source="command line")
    validate(cfg)
    return cfg


def load_json(path: str, what: str) -> dict:
    """A JSON object from ``path``; a missing, unreadable or malformed file raises InputFileError naming it.

    Read with :func:`~trilevelnas.settings.parse_json`: nesting deeper than 64 levels is malformed,
    and an over-long integer is refused by its field's rule, naming the key.
    """
    if os.path.isdir(path):
        raise InputFileError(f"{what} {path!r} is a folder, not a file")
    if not os.path.lexists(path):
        raise InputFileError(f"{what} {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            data = parse_json(f.read())
    except OSError as exc:
        raise os_error(exc, f"{what} {path!r}", "read") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{what} {path!r} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputFileError(f"{what} {path!r}: expected a JSON object")
    return data


def _check_threads(cfg: Config) -> None:
    """More threads than cores only slow a run, and libgomp crashed on 100,000 (a segfault)."""
    cores = available_cores()
    if cfg.run.threads > cores:
        raise ConfigError(f"run.threads = {cfg.run.threads}: must be at most {cores}, the CPU cores this "
                          "process may use (0: all of them)")


# -------------------------------------------------------------------------------- validation
def validate(cfg: Config) -> None:
    """Raise ConfigError for the first field that breaks its rule, then for combinations that cannot run.

    Every field of every section is checked with its declared :class:`Rule` (type, null, range,
    choices, list entries), in declaration order; the cross-field checks follow (the inputs a
    preset requires, a field's declared bound by a sibling such as milestones by steps, and the
    combinations of :func:`_check_combinations`).
    """
    if cfg.preset is not None and not isinstance(cfg.preset, str):
        raise ConfigError(f"preset = {show_value(cfg.preset)}: expected a preset name (a string)")
    for sec, key, rule in field_rules():
        check_value(get_setting(getattr(cfg, sec), key), rule, f"{sec}.{key}")
    _check_combinations(cfg)


def _check_combinations(cfg: Config) -> None:
    """The rules that relate several fields (each field is already valid on its own): first the
    inputs a preset requires, then the fields' declared relations to a sibling (``at_most``),
    then the combinations below."""
    d, s = cfg.data, cfg.supernet
    if d.require_root and d.root is None:
        raise ConfigError(f"preset {cfg.preset or ''!s} needs a training data folder: pass --data DIR "
                          "(the paper used DIV2K + Flickr2K HR images)")
    if cfg.loss.require_teacher and not cfg.loss.teacher:
        raise ConfigError(f"preset {cfg.preset or ''!s} distils from an ESRGAN teacher: pass --teacher FILE "
                          "(RRDBNet weights), or --set loss.require_teacher=false to supervise with the HR images")
    for sec, key, rule in field_rules():
        if rule.at_most is not None:
            section = getattr(cfg, sec)
            check_value(get_setting(section, key), rule, f"{sec}.{key}", section)
    check_supernet_combinations(s, d.scale, lambda key: "data.scale" if key == "scale" else f"supernet.{key}")
    if d.patch_size < d.scale * 4 or d.patch_size % d.scale:
        raise ConfigError(f"data.patch_size = {d.patch_size}: must be a multiple of data.scale "
                          f"({d.scale}) and at least {d.scale * 4}")
    if cfg.loss.objective == "visual" and cfg.loss.perceptual_weight > 0 and not cfg.loss.vgg_weights:
        raise ConfigError("loss.objective = 'visual' needs loss.vgg_weights (a torchvision-format VGG19 "
                          "weight file; set it with --set loss.vgg_weights=PATH)")
    if cfg.train.finetune_steps > 0 and cfg.loss.objective != "visual":
        raise ConfigError("train.finetune_steps > 0 is the perceptual fine-tuning of the visual "
                          "objective, but loss.objective = 'psnr'")


def check_paths(cfg: Config, files: Mapping[str, str | None] | None = None) -> None:
    """InputFileError unless every path field that is set names an existing, readable file or folder
    of the kind its rule declares, and each of ``files`` (``{"--init": path}``) a readable file;
    ConfigError when ``run.threads`` exceeds the CPU cores this process may use.

    For a run (not for :func:`build_config`, which may describe a run on another machine): called
    before any data is read, so a wrong path is named before the long work starts. (So a resume on
    a machine with fewer cores than the checkpoint's ``run.threads`` takes ``--set run.threads=0``.)
    """
    _check_threads(cfg)
    items = []
    for sec, key, rule in field_rules():
        value = get_setting(getattr(cfg, sec), key)
        if rule.kind == "path" and value is not None:
            name = f"{sec}.{key}" + (f" ({rule.flag})" if rule.flag else "")
            items.append((name, value, rule.path_kind))
    items += [(flag, value, "file") for flag, value in (files or {}).items() if value is not None]
    for name, value, kind in items:
        what = "folder" if kind == "dir" else "file"
        if not os.path.exists(value):
            parent = os.path.dirname(os.path.abspath(value))
            if os.path.exists(parent) and not os.path.isdir(parent):
                raise InputFileError(f"{name} {value}: {parent} is a file, not a folder")
            raise InputFileError(f"{name} {value}: no such {what}")
        if kind == "dir" and not os.path.isdir(value):
            raise InputFileError(f"{name} {value}: it is a file, not a folder")
        if kind == "file" and os.path.isdir(value):
            raise InputFileError(f"{name} {value}: it is a folder, not a file")
        if not os.access(value, os.R_OK | (os.X_OK if kind == "dir" else 0)):
            raise InputFileError(f"{name} {value}: cannot read it: permission denied")
