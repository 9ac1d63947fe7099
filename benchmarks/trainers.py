"""Timing units built on the real training loop (``selfish.experiment.build`` -> ``Trainer``).

A *batch* here is exactly what ``Trainer.train_epoch`` does per batch: forward, loss, backward, gradient
clipping, optimizer step (``Masking.step()`` when sparse: the step plus whatever keeps pruned weights at
zero). The loop runs ``max_steps_per_epoch`` batches per call, so one call is one timed round.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch.nn.functional as F

from benchmarks.common import build_trainer, lstm_spec, random_corpus

VOCAB = 10_000


def lstm_trainer(nhid: int, *, sparse: bool, batches: int, vocab: int = VOCAB, nlayers: int = 2,
                 batch_size: int = 20, bptt: int = 35, density: float = 0.33, death_rate: float = 0.8):
    """A Trainer of the paper's stacked LSTM on random tokens, ``batches`` batches per ``train_epoch``."""
    spec = lstm_spec(nhid, nlayers, sparse=sparse, density=density, death_rate=death_rate,
                     batch_size=batch_size, bptt=bptt, steps=batches)
    corpus = random_corpus(vocab, n_train=batch_size * (bptt * batches + 2), n_eval=batch_size * 4)
    return build_trainer(spec, corpus)


def batch_unit(trainer: Any, batches: int) -> Callable[[], float]:
    """One round = ``trainer.train_epoch`` over ``batches`` batches; returns seconds per batch."""
    state = {"epoch": 0}

    def unit() -> float:
        state["epoch"] += 1
        start = time.perf_counter()
        trainer.train_epoch(state["epoch"])
        return (time.perf_counter() - start) / batches

    return unit


def step_unit(trainer: Any) -> Callable[[], float]:
    """Gradient clipping and one optimizer step as the loop takes them (sparse: the clip that also masks the
    gradients, then ``Masking.step()``), on the gradients left by the last batch; returns its seconds."""
    params = [p for p in trainer.model.parameters() if p.requires_grad]

    def unit() -> float:
        start = time.perf_counter()
        trainer._clip_gradients(params)
        trainer._optimizer_step()
        return time.perf_counter() - start

    return unit


def batch_pieces(trainer: Any) -> dict[str, float]:
    """Seconds of each piece of one training batch, mirroring ``Trainer.train_epoch`` (for diagnosis)."""
    from selfish.data import get_batch

    s = trainer.settings
    trainer.model.train()
    hidden = trainer.model.init_hidden(s.batch_size)
    inputs, targets = get_batch(trainer.train_data, 0, s.bptt)
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    trainer.optimizer.zero_grad(set_to_none=True)
    out = trainer.model(inputs, hidden)
    loss = F.cross_entropy(out.logits, targets)
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    if s.clip:
        trainer._clip_gradients(params)
    t3 = time.perf_counter()
    trainer._optimizer_step()
    t4 = time.perf_counter()
    times.update(forward_loss=t1 - t0, backward=t2 - t1, clip=t3 - t2, step=t4 - t3, total=t4 - t0)
    return times


def median_pieces(trainer: Any, repeats: int) -> dict[str, float]:
    """Median of :func:`batch_pieces` over ``repeats`` batches (seconds per piece)."""
    runs = [batch_pieces(trainer) for _ in range(repeats)]
    return {key: sorted(r[key] for r in runs)[len(runs) // 2] for key in runs[0]}
