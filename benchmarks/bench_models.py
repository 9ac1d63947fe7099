"""Training throughput of the models' fast vs plain recurrences (tokens/s, CPU).

One "step" = forward + backward + SGD step on a random batch (paper sizes: vocab 10000, batch 20,
bptt 35). Fast and plain steps alternate on the same model (toggling ``model.fast``), so load from
other processes hits both alike; the reported figure is the median over the timed steps.
``run()`` returns a dict; ``python benchmarks/bench_models.py [out.json] [threads]`` prints it as
JSON and writes it to ``benchmarks/results/models.json`` (or ``out.json``), threads default 2. The
load averages before/after are recorded: on a shared machine, 2-thread GEMMs stall whenever the
other core is busy, so compare numbers only at similar load.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from selfish.models import build_model

PAPER_CONFIGS: dict[str, dict] = {
    "rhn": dict(emsize=830, nhid=830, recurrence_depth=10, tied=True, couple=True),
    "onlstm": dict(emsize=400, nhid=1150, nlayers=3, chunk_size=10),
}


def _step_seconds(model: nn.Module, opt: torch.optim.Optimizer, tokens: torch.Tensor, hidden) -> float:
    """Wall time of one forward + backward + SGD step on ``tokens`` ``[L+1, B]``."""
    start = time.perf_counter()
    out = model(tokens[:-1], hidden)
    loss = F.cross_entropy(out.logits, tokens[1:].reshape(-1)) + model.regularizer(out, 2.0, 1.0)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return time.perf_counter() - start


def fast_vs_plain(
    model_type: str,
    options: dict,
    *,
    vocab_size: int = 10000,
    batch_size: int = 20,
    bptt: int = 35,
    batches: int = 3,
    seed: int = 0,
) -> dict[str, float]:
    """Median training tokens/s of ``fast=True`` and ``fast=False`` (one untimed warm-up step each)."""
    torch.manual_seed(seed)
    model = build_model(model_type, vocab_size, **options)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(seed)
    hidden = model.init_hidden(batch_size)
    times: dict[str, list[float]] = {"fast": [], "plain": []}
    for i in range(batches + 1):
        for label in ("fast", "plain"):
            model.fast = label == "fast"
            tokens = torch.randint(0, vocab_size, (bptt + 1, batch_size), generator=gen)
            seconds = _step_seconds(model, opt, tokens, hidden)
            if i > 0:
                times[label].append(seconds)
    tokens_per_batch = batch_size * bptt
    result = {label: round(tokens_per_batch / statistics.median(ts), 1) for label, ts in times.items()}
    result["speedup"] = round(result["fast"] / result["plain"], 2)
    return result


def run(threads: int = 2, batches: int = 5, models: tuple[str, ...] = ("rhn", "onlstm")) -> dict:
    """Fast vs plain training throughput for the paper-size models named in ``models``."""
    torch.set_num_threads(threads)
    results: dict = {
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "threads": threads,
        "batch_size": 20,
        "bptt": 35,
        "vocab_size": 10000,
        "batches": batches,
    }
    for name in models:
        options = PAPER_CONFIGS[name]
        results[name] = {"options": options, "tokens_per_s": fast_vs_plain(name, options, batches=batches)}
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    results["torch"] = torch.__version__
    results["machine"] = platform.machine()
    return results


if __name__ == "__main__":
    out_path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results" / "models.json"
    result = run(threads=int(sys.argv[2]) if len(sys.argv) > 2 else 2)
    print(json.dumps(result, indent=2))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
