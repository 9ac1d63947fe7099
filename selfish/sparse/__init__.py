"""Sparse masks for any ``nn.Module``: init, death/growth criteria, redistribution, death-rate schedules,
gate layouts, statistics and the ``Masking`` facade (spec §2-§4, §8; contracts.md "selfish.sparse")."""

from __future__ import annotations

from .criteria import DEATHS, GROWTHS, GrowthInputs, make_death, make_growth
from .decay import DECAYS, ConstantDecay, CosineDecay, DeathRateSchedule, LinearDecay, make_decay
from .initialization import INITS, layer_densities, nominal_nonzeros, select_parameters
from .layout import GateBlock, default_gate_names, resolve_blocks
from .masking import GROWTH_COUNTS, Masking
from .redistribution import REDISTRIBUTIONS, make_redistribution
from .stats import UpdateStats

__all__ = [
    "Masking", "UpdateStats",
    "CosineDecay", "LinearDecay", "ConstantDecay", "DeathRateSchedule", "make_decay", "DECAYS",
    "DEATHS", "GROWTHS", "REDISTRIBUTIONS", "INITS", "GROWTH_COUNTS",
    "make_death", "make_growth", "make_redistribution", "GrowthInputs",
    "layer_densities", "nominal_nonzeros", "select_parameters",
    "GateBlock", "default_gate_names", "resolve_blocks",
]
