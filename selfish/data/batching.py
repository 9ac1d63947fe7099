"""Batching and truncated-BPTT streams, as in salesforce/awd-lstm-lm (`utils.py`, `main.py`).

A token stream [n] becomes a matrix [rows, batch_size] whose columns are contiguous pieces of the
stream; training walks down the rows in windows of `seq_len` (spec §6.3 for the variable rule).
"""

from __future__ import annotations

import torch

from .errors import DataError


def batchify(data: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a token stream [n] into `batch_size` columns: returns [n // batch_size, batch_size].

    The remainder (n mod batch_size tokens at the end) is dropped, as in AWD `batchify`. Column b holds
    tokens b*rows .. (b+1)*rows-1. The result lives on `data`'s device and is contiguous.
    """
    if data.dim() != 1:
        raise DataError(f"batchify expects a 1-D token stream, got shape {tuple(data.shape)}")
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    rows = data.size(0) // batch_size
    if rows < 2:
        raise DataError(
            f"stream of {data.size(0)} tokens is too short for batch_size {batch_size} "
            f"(needs at least {2 * batch_size} tokens for one input/target pair)"
        )
    return data.narrow(0, 0, rows * batch_size).view(batch_size, rows).t().contiguous()


def get_batch(source: torch.Tensor, i: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Window starting at row `i`: inputs [L, B] and next-token targets flattened to [L*B].

    L = min(seq_len, rows - 1 - i) (the last window is shorter). Both are views of `source`.
    """
    length = min(seq_len, source.size(0) - 1 - i)
    if i < 0 or length < 1:
        raise DataError(f"no batch at row {i} with seq_len {seq_len} in a source of {source.size(0)} rows")
    inputs = source[i : i + length]
    targets = source[i + 1 : i + 1 + length].reshape(-1)
    return inputs, targets


def bptt_schedule(
    n_rows: int,
    bptt: int,
    *,
    variable: bool,
    generator: torch.Generator | None = None,
    max_seq_len_delta: int | None = 40,
    min_len: int = 5,
) -> list[tuple[int, int]]:
    """The (start row i, seq_len) windows of one pass over a batchified source with `n_rows` rows.

    Fixed (`variable=False`): i = 0, bptt, 2*bptt, ... while i < n_rows - 1, seq_len = bptt (the
    evaluation loop of AWD and the training loop of the Selfish-RNN LSTM/RHN code); no random draws.

    Variable (`variable=True`, spec §6.3, AWD `main.py` train loop): per window draw
    base = bptt with probability 0.95 else bptt / 2, then seq_len = max(min_len, int(N(base, 5)));
    if `max_seq_len_delta` is not None, seq_len = min(seq_len, bptt + max_seq_len_delta) (the AWD-MoS
    line; salesforce/awd-lstm-lm has it commented out: pass None for that behaviour). The walk goes
    i += seq_len while i < n_rows - 2 (AWD's `while i < train_data.size(0) - 1 - 1`). Draws come only
    from `generator` (required), one uniform and one normal per window, so equal seeds give equal
    schedules.

    The seq_len returned is the drawn one; `get_batch` shortens the last window to fit, and the learning
    rate is scaled with the drawn length (`lr_scale`), as in AWD.
    """
    if bptt < 1:
        raise DataError(f"bptt must be >= 1, got {bptt}")
    if not variable:
        return [(i, bptt) for i in range(0, n_rows - 1, bptt)]
    if generator is None:
        raise DataError("variable BPTT needs a torch.Generator seeded by the caller")
    cap = None if max_seq_len_delta is None else bptt + max_seq_len_delta
    if min_len < 1 or (cap is not None and cap < 1):
        raise DataError(f"min_len ({min_len}) and bptt + max_seq_len_delta ({cap}) must be >= 1")
    schedule: list[tuple[int, int]] = []
    i = 0
    while i < n_rows - 2:
        coin = torch.rand((), generator=generator).item()
        base = float(bptt) if coin < 0.95 else bptt / 2.0
        drawn = base + 5.0 * torch.randn((), generator=generator, dtype=torch.float64).item()
        seq_len = max(min_len, int(drawn))
        if cap is not None:
            seq_len = min(seq_len, cap)
        schedule.append((i, seq_len))
        i += seq_len
    return schedule


def lr_scale(seq_len: int, bptt: int) -> float:
    """Learning-rate factor for a window of `seq_len` under variable BPTT: seq_len / bptt (spec §6.3)."""
    return seq_len / bptt
