"""Search space below the network level: candidate superkernel ops, RiR cells, the width set and
the Gumbel straight-through width sampler (docs/supernet.md "Kernel level: widths")."""
from .candidates import OP_NAMES, make_candidates
from .cell import N_SLOTS, RESIDUAL_SCALE, MixedSlot, RiRCell
from .widths import SANDWICH, WIDTH_MODES, sample_widths, width_set

__all__ = ["OP_NAMES", "make_candidates", "N_SLOTS", "RESIDUAL_SCALE", "MixedSlot",
           "RiRCell", "SANDWICH", "WIDTH_MODES", "sample_widths", "width_set"]
