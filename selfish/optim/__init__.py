"""Optimizers of selfish-rnn (spec §5, §6.5): mask-aware SGD, SNT-ASGD (dense params: NT-ASGD),
Adam as in the original, and the non-monotone trigger that switches SGD -> SNT-ASGD."""

from __future__ import annotations

from .adam import build_adam, build_plateau_scheduler
from .asgd import SNTASGD
from .sgd import SparseSGD
from .trigger import NonMonotoneTrigger

__all__ = ["SparseSGD", "SNTASGD", "build_adam", "build_plateau_scheduler", "NonMonotoneTrigger"]
