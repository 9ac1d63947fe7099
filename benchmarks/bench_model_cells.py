"""Training tokens/s of the RHN and ON-LSTM recurrences, fast against plain (Python-loop) versions.

Calls ``benchmarks.bench_models.fast_vs_plain`` (owned by the models engineer): forward + backward + SGD
step on a random batch, fast and plain alternating on the same model (``model.fast`` toggled), median
tokens/s. Paper sizes (vocab 10000, batch 20, bptt 35) at full and quick scale, toy sizes at tiny.
"""

from __future__ import annotations

from benchmarks.common import Scale, case, missing_piece

NAME = "model_cells"
TITLE = "RHN and ON-LSTM recurrences, fast vs plain"

TINY_CONFIGS: dict[str, dict] = {
    "rhn": dict(emsize=16, nhid=16, recurrence_depth=2, tied=True, couple=True),
    "onlstm": dict(emsize=20, nhid=20, nlayers=2, chunk_size=5),
}


def run(scale: Scale) -> dict:
    cases, notes, skipped = [], [], []
    try:
        from benchmarks import bench_models
    except Exception as exc:
        return {"cases": [], "notes": [], "skipped": [f"benchmarks.bench_models: {missing_piece(exc)}"]}
    configs = TINY_CONFIGS if scale.tiny else bench_models.PAPER_CONFIGS
    vocab = 100 if scale.tiny else 10_000
    batches = {"full": 2, "quick": 1, "tiny": 1}[scale.name]
    for model_type, options in configs.items():
        try:
            tps = bench_models.fast_vs_plain(model_type, options, vocab_size=vocab, batches=batches)
        except Exception as exc:
            skipped.append(f"{model_type}: {missing_piece(exc)}")
            continue
        cases.append(case(
            f"{model_type} {'tiny' if scale.tiny else 'paper size'}", "training tokens/s", value=tps["fast"],
            baseline=tps["plain"], unit="tok/s", ratio=tps["fast"] / tps["plain"],
            ratio_means="fast tokens/s / plain tokens/s", options=options, vocab_size=vocab, batches=batches,
        ))
    notes.append("measured by benchmarks/bench_models.py:fast_vs_plain (one warm-up step each, then alternating)")
    return {"cases": cases, "notes": notes, "skipped": skipped}
