"""Language models (spec §6): stacked LSTM, RHN, ON-LSTM, AWD-LSTM-MoS, and their regularisers.

``build_model(type, vocab_size, **options)`` builds one by name; unknown names raise ``ValueError``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from selfish.models.base import LMOutput, ar_tar, repackage_hidden
from selfish.models.lstm import StackedLSTM
from selfish.models.mos import MoS
from selfish.models.onlstm import ONLSTM
from selfish.models.regularizers import LockedDropout, embedded_dropout
from selfish.models.rhn import RHN

MODEL_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "lstm": StackedLSTM,
    "rhn": RHN,
    "onlstm": ONLSTM,
    "mos": MoS,
}


def build_model(type: str, vocab_size: int, **options) -> nn.Module:
    """Build the model registered as ``type`` ("lstm", "rhn", "onlstm", "mos") with ``options``."""
    try:
        cls = MODEL_REGISTRY[type.lower()]
    except KeyError:
        known = ", ".join(sorted(MODEL_REGISTRY))
        raise ValueError(f"unknown model type {type!r}; known types: {known}") from None
    try:
        inspect.signature(cls).bind(vocab_size, **options)
    except TypeError as err:
        raise ValueError(f"bad options for model {type!r}: {err}") from err
    return cls(vocab_size, **options)


__all__ = [
    "LMOutput",
    "LockedDropout",
    "MODEL_REGISTRY",
    "MoS",
    "ONLSTM",
    "RHN",
    "StackedLSTM",
    "ar_tar",
    "build_model",
    "embedded_dropout",
    "repackage_hidden",
]
