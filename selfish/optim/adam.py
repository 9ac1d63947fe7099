"""Adam and its plateau scheduler exactly as the original's `--optimizer adam` (spec §6.5)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def build_adam(
    params: Iterable[nn.Parameter] | Iterable[dict[str, Any]], lr: float = 1e-3, weight_decay: float = 1.2e-6
) -> torch.optim.Adam:
    """`torch.optim.Adam(betas=(0, 0.999), eps=1e-9)` as in SR `main.py` (its lr is torch's default 1e-3,
    its weight decay `--wdecay`, default 1.2e-6). Not mask-aware: `Masking` masks `exp_avg`/`exp_avg_sq`."""
    return torch.optim.Adam(params, lr=lr, betas=(0.0, 0.999), eps=1e-9, weight_decay=weight_decay)


def build_plateau_scheduler(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """Halve the lr when the validation loss has not improved for 2 epochs:
    `ReduceLROnPlateau(mode="min", factor=0.5, patience=2, threshold=0)` as in SR `main.py`.
    Call `.step(val_loss)` once per epoch."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=0.5, patience=2, threshold=0.0
    )
