"""Supernets of the Trilevel NAS search space: tree (paper), trellis (Auto-DeepLab baseline) and
fixed path (bilevel baseline), with relaxations, sparse execution, the expected-FLOPs model,
derivation and extraction (docs/supernet.md)."""
from .config import DEFAULT_RELAXATIONS, LEVEL_RELAXATIONS, TOPOLOGIES, SupernetConfig
from .network import Supernet, StepContext
from .relax import PackedRelaxation
from .tree import enumerate_tree

__all__ = ["Supernet", "SupernetConfig", "StepContext", "PackedRelaxation", "enumerate_tree",
           "DEFAULT_RELAXATIONS", "LEVEL_RELAXATIONS", "TOPOLOGIES"]
