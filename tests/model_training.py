"""Shared test helper: a few Adam steps of a language model on one repeated random batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def losses_on_repeated_batch(model, vocab: int = 20, steps: int = 20, lr: float = 0.03) -> list[float]:
    """Train ``model`` for ``steps`` Adam steps at ``lr`` on one random [9, 4] token batch; return losses."""
    data = torch.randint(0, vocab, (9, 4))
    inputs, targets = data[:-1], data[1:].reshape(-1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(inputs, model.init_hidden(4)).logits, targets)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
