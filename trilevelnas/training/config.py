"""Run configuration: nested dataclasses, JSON files, ``key=value`` overrides, validation.

A configuration is built in layers: the dataclass defaults, then a preset file
(``trilevelnas/configs/<name>.json``), then a user ``--config`` file, then ``--set section.key=value``
overrides, then the dedicated command-line flags (``--data``, ``--teacher``, ``--seed``, ...).
Every layer is a nested dict of overrides; an unknown section or key, a value of the wrong type or
an inconsistent combination raises :class:`~trilevelnas.cli.UserError` naming the culprit.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..cli import UserError


@dataclass
class DataConfig:
    """Where the images come from and how they are cut into batches."""

    root: str | None = None  # HR folder (or paired folder); None: the embedded photographs
    lq_root: str | None = None  # paired LR folder (BasicSR dataroot_lq); None: LR made on the fly
    filename_tmpl: str = "{}"  # paired LR names, BasicSR style ("{}x4")
    val_root: str | None = None  # validation HR folder; None: the embedded validation photographs
    val_max_images: int = 0  # 0: all validation images
    scale: int = 4
    patch_size: int = 96  # HR patch side (the LR patch is patch_size // scale)
    batch_size: int = 16
    augment: bool = True
    skip_bad_images: bool = False
    require_root: bool = False  # the paper presets: the embedded photographs are no substitute


@dataclass
class SupernetSection:
    """The search space (see DESIGN §3); passed to ``supernet.SupernetConfig``."""

    backbone: str = "B"
    topology: str = "tree"  # tree | trellis | fixed
    channels: int = 64
    n_rir: int = 5
    n_up: int = 2
    share: str = "ordinal"  # ordinal | none
    relaxation: str = "sparsestmax"  # softmax | sparsemax | sparsestmax, for α and trellis edges
    node_relaxation: str = "sorted_sparsestmax"  # the tree's node weights β
    order_lambda: float | None = None  # None: 0.01 for the tree, 0 for trellis / fixed
    sparse_execution: bool = True
    fixed_path: list[int] | None = None  # topology "fixed": the path; None: the backbone's full path
    gumbel_tau: float = 1.0  # temperature of the Gumbel-softmax width sampler


@dataclass
class LossConfig:
    """The distance d(G, G0) and the efficiency term H of the paper's Eq. 5."""

    objective: str = "psnr"  # psnr (L1 content) | visual (L1 content + VGG perceptual)
    content_weight: float = 1.0
    perceptual_weight: float = 1.0  # used when objective is "visual"
    perceptual_in_search: bool = True  # visual objective: perceptual loss during the search phase
    vgg_weights: str | None = None  # torchvision-format VGG19 weight file (visual objective)
    teacher: str | None = None  # ESRGAN weights; None: supervise with the HR images
    require_teacher: bool = False  # the paper presets distil: a missing --teacher is an error
    flops_weight: float = 0.0  # λ_f: weight of the expected GFLOPs in the architecture loss


@dataclass
class PhaseConfig:
    """One optimisation phase: Adam on the network weights with a step-decay schedule."""

    steps: int = 0
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    milestones: list[int] = field(default_factory=list)  # steps at which the lr is multiplied by lr_decay
    lr_decay: float = 0.5
    grad_clip: float = 0.0  # 0: no clipping
    batch_size: int = 0  # 0: data.batch_size


@dataclass
class SearchConfig(PhaseConfig):
    """The search phase: weight steps as a PhaseConfig, plus the architecture optimiser."""

    arch_lr: float = 3e-4
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 0.0
    radius_start: float = 0.0  # ρ, as a fraction of each group's circumradius
    radius_end: float = 1.0
    radius_warmup: float = 0.0  # fraction of the search steps held at radius_start before the ramp


@dataclass
class TrainConfig(PhaseConfig):
    """Training the derived network after the search (or from an architecture file)."""

    init: str = "search"  # search: inherit the supernet's weights | scratch: fresh initialisation
    finetune_steps: int = 0  # visual objective: perceptual fine-tuning after the content phase
    finetune_milestones: list[int] = field(default_factory=list)


@dataclass
class RunConfig:
    """Bookkeeping: seed, checkpoint and log cadence, validation, device."""

    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    checkpoint_every: int = 100  # steps; a checkpoint is also written at every phase end
    log_every: int = 10
    val_every: int = 0  # steps of the training phases; 0: validate at phase ends only
    threads: int = 0  # torch intra-op threads on CPU; 0: leave torch's default
    train_after_search: bool = True  # search program: train the derived network (writes model.pt)


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


_ENUMS = {
    ("supernet", "backbone"): ("A", "B"),
    ("supernet", "topology"): ("tree", "trellis", "fixed"),
    ("supernet", "share"): ("ordinal", "none"),
    ("supernet", "relaxation"): ("softmax", "sparsemax", "sparsestmax"),
    ("supernet", "node_relaxation"): ("softmax", "sparsemax", "sparsestmax", "sorted_sparsestmax"),
    ("loss", "objective"): ("psnr", "visual"),
    ("train", "init"): ("search", "scratch"),
}


def _coerce(value: Any, template: Any, where: str) -> Any:
    """``value`` converted to the type of the field's current value ``template``."""
    if template is None or value is None:
        return value
    if isinstance(template, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise UserError(f"{where}: expected true or false, got {value!r}")
    if isinstance(template, int) and not isinstance(template, bool):
        if isinstance(value, bool):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)
        raise UserError(f"{where}: expected an integer, got {value!r}")
    if isinstance(template, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise UserError(f"{where}: expected a number, got {value!r}")
    if isinstance(template, (list, tuple)):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise UserError(f"{where}: expected a JSON list like [1, 2], got {value!r}") from None
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        if isinstance(template, tuple):
            if len(value) != len(template):
                raise UserError(f"{where}: expected {len(template)} values, got {list(value)!r}")
            return tuple(_coerce(v, t, where) for v, t in zip(value, template))
        return [_coerce(v, 0, where) if not isinstance(v, float) else v for v in value]
    if isinstance(template, str):
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _nullable_fields(obj) -> set[str]:
    return {f.name for f in dataclasses.fields(obj) if "None" in str(f.type)}


def apply_overrides(cfg: Config, overrides: Mapping[str, Any], source: str) -> None:
    """Set the nested ``overrides`` on ``cfg`` in place; ``source`` names their origin in errors."""
    if not isinstance(overrides, Mapping):
        raise UserError(f"{source}: expected a JSON object at the top level")
    sections = {f.name for f in dataclasses.fields(cfg)}
    for name, value in overrides.items():
        if name in ("description", "comment"):
            continue
        if name not in sections:
            raise UserError(f"{source}: unknown section {name!r} (known: {', '.join(sorted(sections))})")
        if name == "preset":
            cfg.preset = value
            continue
        section = getattr(cfg, name)
        if not isinstance(value, Mapping):
            raise UserError(f"{source}: section {name!r} must be an object")
        known = {f.name for f in dataclasses.fields(section)}
        nullable = _nullable_fields(section)
        for key, v in value.items():
            where = f"{source}: {name}.{key}"
            if key not in known:
                raise UserError(f"{where}: unknown key (known in {name}: {', '.join(sorted(known))})")
            current = getattr(section, key)
            if v is None or (isinstance(v, str) and v.lower() in ("none", "null") and key in nullable):
                if key not in nullable:
                    raise UserError(f"{where}: may not be null")
                setattr(section, key, None)
                continue
            if current is None:
                # a nullable field: infer the type from the dataclass annotation
                ftype = next(f.type for f in dataclasses.fields(section) if f.name == key)
                text = str(ftype)
                template = [0] if "list" in text else 0.0 if "float" in text else 0 if "int" in text else ""
                v = _coerce(v, template, where)
                if isinstance(template, str) and not isinstance(v, str):
                    raise UserError(f"{where}: expected a string")
            else:
                v = _coerce(v, current, where)
            setattr(section, key, v)


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
    """A JSON object from ``path``; a missing or malformed file raises UserError naming it."""
    if not os.path.isfile(path):
        raise UserError(f"{what} {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} {path!r} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path!r}: expected a JSON object")
    return data


def validate(cfg: Config) -> None:
    """Raise UserError for values out of range or combinations that cannot run."""
    for (section, key), allowed in _ENUMS.items():
        v = getattr(getattr(cfg, section), key)
        if v not in allowed:
            raise UserError(f"{section}.{key} = {v!r}: expected one of {', '.join(allowed)}")
    d, s, r = cfg.data, cfg.supernet, cfg.run
    if d.require_root and d.root is None:
        raise UserError(f"preset {cfg.preset or ''!s} needs a training data folder: pass --data DIR "
                        "(the paper used DIV2K + Flickr2K HR images)")
    if cfg.loss.require_teacher and not cfg.loss.teacher:
        raise UserError(f"preset {cfg.preset or ''!s} distils from an ESRGAN teacher: pass --teacher FILE "
                        "(RRDBNet weights), or --set loss.require_teacher=false to supervise with the HR images")
    if d.scale not in (2, 3, 4, 8):
        raise UserError(f"data.scale = {d.scale}: expected 2, 3, 4 or 8")
    if s.backbone == "A" and d.scale != 2 ** s.n_up:
        raise UserError(f"data.scale = {d.scale} is inconsistent with backbone A and supernet.n_up = "
                        f"{s.n_up} (each up doubles the size: scale must be {2 ** s.n_up})")
    if d.patch_size < d.scale * 4 or d.patch_size % d.scale:
        raise UserError(f"data.patch_size = {d.patch_size}: must be a multiple of data.scale "
                        f"({d.scale}) and at least {d.scale * 4}")
    if d.batch_size < 1:
        raise UserError(f"data.batch_size = {d.batch_size}: must be at least 1")
    if s.channels < 8 or s.channels % 8:
        raise UserError(f"supernet.channels = {s.channels}: must be a positive multiple of 8")
    if s.n_rir < 1 or s.n_up < 0:
        raise UserError(f"supernet.n_rir = {s.n_rir}, supernet.n_up = {s.n_up}: need n_rir >= 1, n_up >= 0")
    if s.order_lambda is not None and s.order_lambda < 0:
        raise UserError(f"supernet.order_lambda = {s.order_lambda}: must be >= 0")
    if s.order_lambda and s.topology != "tree":
        raise UserError(f"supernet.order_lambda = {s.order_lambda}: the ordering term orders the tree's "
                        f"root-to-node paths; topology {s.topology!r} has none (set it to 0)")
    if s.fixed_path is not None:
        if any(v not in (0, 1) for v in s.fixed_path):
            raise UserError(f"supernet.fixed_path = {s.fixed_path}: entries must be 0 (RiR) or 1")
    if cfg.loss.flops_weight < 0:
        raise UserError(f"loss.flops_weight = {cfg.loss.flops_weight}: must be >= 0")
    if cfg.loss.objective == "visual" and cfg.loss.perceptual_weight > 0 and not cfg.loss.vgg_weights:
        raise UserError("loss.objective = 'visual' needs loss.vgg_weights (a torchvision-format VGG19 "
                        "weight file; set it with --set loss.vgg_weights=PATH)")
    for name in ("pretrain", "search", "train"):
        p = getattr(cfg, name)
        if p.steps < 0:
            raise UserError(f"{name}.steps = {p.steps}: must be >= 0")
        if p.lr <= 0:
            raise UserError(f"{name}.lr = {p.lr}: must be positive")
        if p.batch_size < 0:
            raise UserError(f"{name}.batch_size = {p.batch_size}: must be >= 0 (0: data.batch_size)")
        if any(m <= 0 for m in p.milestones):
            raise UserError(f"{name}.milestones = {p.milestones}: must be positive step numbers")
    sc = cfg.search
    if not (0.0 <= sc.radius_start <= 1.0 and 0.0 <= sc.radius_end <= 1.0):
        raise UserError(f"search.radius_start/radius_end = {sc.radius_start}/{sc.radius_end}: "
                        "each must lie in [0, 1] (a fraction of the circumradius)")
    if not 0.0 <= sc.radius_warmup < 1.0:
        raise UserError(f"search.radius_warmup = {sc.radius_warmup}: must lie in [0, 1)")
    if sc.arch_lr <= 0:
        raise UserError(f"search.arch_lr = {sc.arch_lr}: must be positive")
    if cfg.train.finetune_steps < 0:
        raise UserError(f"train.finetune_steps = {cfg.train.finetune_steps}: must be >= 0")
    if cfg.train.finetune_steps > 0 and cfg.loss.objective != "visual":
        raise UserError("train.finetune_steps > 0 is the perceptual fine-tuning of the visual "
                        "objective, but loss.objective = 'psnr'")
    if r.checkpoint_every < 1 or r.log_every < 1:
        raise UserError("run.checkpoint_every and run.log_every must be at least 1")
    if r.val_every < 0 or r.threads < 0:
        raise UserError("run.val_every and run.threads must be >= 0")
    if not (r.device in ("auto", "cpu", "cuda") or r.device.startswith("cuda:")):
        raise UserError(f"run.device = {r.device!r}: expected auto, cpu, cuda or cuda:N")
