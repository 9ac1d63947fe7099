"""Achieved training FLOP/s against the float32 matmul peak measured in the same process.

Achieved = 3 x forward FLOPs per token (``selfish.accounting``, dense count: the CPU kernels are dense)
x tokens per batch / seconds per batch (fwd+loss+bwd+clip+step). Peak = 2 n^3 / seconds of one large
square float32 matmul (n = 2048; tiny scale 512). Batch rounds and matmuls alternate; the ratio says how
close training runs to the hardware's arithmetic limit. Rows for the dense model; the sparse model's
*useful* FLOP/s (non-zeros only) is recorded in the details.
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import Scale, case, interleaved, median, missing_piece, spread
from benchmarks.trainers import batch_unit, lstm_trainer

NAME = "flops"
TITLE = "Achieved training FLOP/s vs matmul peak"


def matmul_unit(n: int):
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    out = torch.empty(n, n)

    def unit() -> float:
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        return time.perf_counter() - start

    return unit


def forward_flops(model: torch.nn.Module, masks=None) -> tuple[int, int]:
    """(dense, sparse) forward FLOPs per token from ``selfish.accounting``."""
    from selfish import accounting

    counts = accounting.count_tensors(model, masks=masks)
    return (accounting.forward_flops_per_token(counts, sparse=False),
            accounting.forward_flops_per_token(counts, sparse=True))


def run(scale: Scale) -> dict:
    cases, notes, skipped = [], [], []
    n = 512 if scale.tiny else 2048
    sizes = [("2x32 (tiny)", 32, 200)] if scale.tiny else [("2x200", 200, 10_000), ("2x650", 650, 10_000)]
    for label, nhid, vocab in sizes:
        try:
            dense = lstm_trainer(nhid, sparse=False, batches=scale.batches, vocab=vocab)
            f_dense, _ = forward_flops(dense.model)
        except Exception as exc:
            skipped.append(f"{label}: {missing_piece(exc)}")
            continue
        times = interleaved({"matmul": matmul_unit(n), "batch": batch_unit(dense, scale.batches)},
                            repeats=max(3, scale.repeats), budget_s=scale.budget_s)
        tokens = dense.settings.batch_size * dense.settings.bptt
        peak = 2 * n**3 / median(times["matmul"])
        achieved = 3 * f_dense * tokens / median(times["batch"])
        details = dict(forward_flops_per_token=f_dense, tokens_per_batch=tokens, matmul_n=n,
                       batch_times=spread(times["batch"]), matmul_times=spread(times["matmul"]))
        try:
            sparse = lstm_trainer(nhid, sparse=True, batches=scale.batches, vocab=vocab)
            _, f_sparse = forward_flops(sparse.model, sparse.masking.masks)
            details["sparse_useful_flops_per_s"] = 3 * f_sparse * tokens / median(times["batch"])
            details["forward_sparse_flops_per_token"] = f_sparse
            del sparse
        except Exception as exc:
            skipped.append(f"{label} sparse useful FLOP/s: {missing_piece(exc)}")
        cases.append(case(
            f"{label} dense training", "FLOP/s (3 x forward FLOPs x tokens / batch time)", value=achieved,
            baseline=peak, unit="FLOP/s", ratio=achieved / peak,
            ratio_means="achieved training FLOP/s / float32 matmul peak", **details,
        ))
        del dense
    notes.append("sparse useful FLOP/s assumes the dense batch time (sparse runs dense kernels at "
                 ">= 0.98x of it by the training benchmark)")
    return {"cases": cases, "notes": notes, "skipped": skipped}
