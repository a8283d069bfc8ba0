"""The train program's run: the derived network of an architecture file, trained from the weights
``--init`` supplied (:class:`InitWeights`, read and checked by the program) or from scratch; or a
textbook baseline from scratch (:class:`BaselineRun`)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn as nn

from ..arch import Architecture
from ..errors import ConfigError
from . import checkpoint as ckpt
from .config import Config
from .distributed import DistContext
from .run import Run


@dataclass
class InitWeights:
    """What a train run starts from: ``model``, the derived network with inherited weights; for a
    search checkpoint also its ``supernet_config`` and architecture tensors (``arch_tensors``),
    which the run's checkpoints keep."""

    model: nn.Module
    supernet_config: dict | None = None
    arch_tensors: dict = field(default_factory=dict)

    def search_record(self) -> ckpt.SearchState:
        """What the run's checkpoints keep of the search it inherits from."""
        return ckpt.SearchState(supernet_config=self.supernet_config, arch=dict(self.arch_tensors))


class TrainRun(Run):
    """The train (and finetune) phases of ``arch``. ``init``: the weights to start from (None:
    from scratch); ``inherited``: whether the run's weights came from ``--init`` (the summary's
    ``train_init``; on resume the checkpoint holds the weights and ``init`` is None)."""

    program = "train"

    def __init__(self, cfg: Config, out_dir: str, ctx: DistContext, device: torch.device, arch: Architecture,
                 init: InitWeights | None = None, inherited: bool = False, resume: ckpt.Checkpoint | None = None,
                 progress: bool | None = None, init_record: dict | None = None):
        self.arch = arch
        self.inherited = inherited
        #: ``{"file", "sha256", "inherited"}`` of ``--init`` (None: from scratch), kept in checkpoints
        self.init_record = init_record
        #: the supernet config and architecture tensors of the search checkpoint ``--init`` named
        self.search_record = ckpt.SearchState()
        super().__init__(cfg, out_dir, ctx, device, resume=resume, progress=progress)
        if resume is not None:
            self._restore(resume)
        elif init is not None:
            self.search_record = init.search_record()
            self.model = init.model.to(device)
        else:
            self.model = self._fresh_model()

    def _checkpoint(self) -> ckpt.Checkpoint:
        state = super()._checkpoint()
        return replace(state, meta=replace(state.meta, init=self.init_record), search=self.search_record)

    def _restore(self, state: ckpt.Checkpoint) -> None:
        super()._restore(state)
        self.search_record = state.search

    def _train_init(self) -> str:
        return "inherited" if self.inherited else "scratch"


class BaselineRun(TrainRun):
    """The train phases of a textbook baseline (``--baseline``), from scratch with the same recipe
    as a derived network. ``arch`` is its :class:`~trilevelnas.models.baselines.BaselineSpec`; the
    checkpoint's ``architecture`` holds the baseline's config."""

    def _fresh_model(self) -> nn.Module:
        ckpt.seed_all(ckpt.step_seed(self.cfg.run.seed, 99))
        return self.arch.build().to(self.device)

    def _restore(self, state: ckpt.Checkpoint) -> None:
        stored = state.weights.architecture
        if stored != self.arch.to_dict():
            raise ConfigError(f"--resume: the run in {self.out_dir} trained {stored!r}, not the "
                              f"baseline {self.arch.to_dict()!r}; give the same --baseline, or start a new --out")
        super()._restore(replace(state, weights=ckpt.Weights(ema=state.weights.ema)))
        if state.weights.model is not None:
            self.model = self.arch.build().to(self.device)
            self.model.load_state_dict(state.weights.model)
