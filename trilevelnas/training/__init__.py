"""The search and training pipeline behind ``python -m trilevelnas.search`` and ``trilevelnas.train``.

- :mod:`.config`: the dataclass config, built in one pass from its layers (:mod:`.presets`: the
  preset files, ``--config``, ``--set``, flags);
- :mod:`.run`: what both runs share (data, training the derived network, checkpoints, summary);
  :mod:`.search_run`: the paper's Algorithm 1 (pretrain, search, derive, train from search);
  :mod:`.train_run`: training an architecture file; :mod:`.architect`: the architecture step;
- :mod:`.summary`: the summary table (the programs' command-line plumbing: :mod:`trilevelnas.cli.program`);
- :mod:`.loop`: the shared training loop (per-step seeding, NaN stop, checkpoints, logs);
- :mod:`.losses`, :mod:`.checkpoint`, :mod:`.logging`, :mod:`.plots`, :mod:`.distributed`.
"""
from .config import Config, build_config
from .presets import available as available_presets

__all__ = ["Config", "available_presets", "build_config"]
