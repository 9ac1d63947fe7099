"""Shared model interface (contracts.md, "selfish.models").

Every language model returns an :class:`LMOutput` from ``forward(tokens [L, B], hidden)``:
``logits`` is ``[L*B, V]`` such that ``F.cross_entropy(logits, targets)`` is the loss (MoS returns
log-probabilities, for which cross-entropy equals the NLL).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

Hidden = Any  # a tensor, or (nested) tuples/lists of tensors


class LMOutput(NamedTuple):
    """What every model's ``forward`` returns.

    logits: ``[L*B, V]`` (log-probabilities for MoS).
    hidden: the recurrent state to feed to the next call (detach it with :func:`repackage_hidden`).
    raw_outputs: per-layer outputs ``[L, B, H_l]`` before the between-layer dropout.
    dropped_outputs: per-layer outputs after dropout (the last one is what the decoder saw).
    """

    logits: Tensor
    hidden: Hidden
    raw_outputs: list[Tensor]
    dropped_outputs: list[Tensor]


def repackage_hidden(h: Hidden) -> Hidden:
    """Detach a hidden state (tensor or nested tuple/list of tensors) from its history."""
    if isinstance(h, Tensor):
        return h.detach()
    if isinstance(h, tuple):
        return tuple(repackage_hidden(v) for v in h)
    if isinstance(h, list):
        return [repackage_hidden(v) for v in h]
    raise TypeError(f"cannot repackage hidden state of type {type(h).__name__}")


def zero_regularizer(reference: nn.Module) -> Tensor:
    """A scalar 0 on the device/dtype of ``reference``'s first parameter (models without AR/TAR)."""
    p = next(reference.parameters())
    return torch.zeros((), device=p.device, dtype=p.dtype)


def ar_tar(output: LMOutput, alpha: float, beta: float) -> Tensor:
    """AWD activation regularisation (spec §6.3): ``alpha * mean(d_last^2) + beta * mean((r_t - r_{t-1})^2)``.

    AR uses the last layer's dropped output, TAR the last layer's raw output (both ``[L, B, H]``).
    Returns a 0-dim tensor (0 when ``alpha == beta == 0``).
    """
    raw = output.raw_outputs[-1]
    loss = raw.new_zeros(())
    if alpha:
        loss = loss + alpha * output.dropped_outputs[-1].pow(2).mean()
    if beta and raw.size(0) > 1:
        loss = loss + beta * (raw[1:] - raw[:-1]).pow(2).mean()
    return loss
