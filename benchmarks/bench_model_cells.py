"""Training tokens/s of the RHN and ON-LSTM recurrences, fast against plain (Python-loop) versions.

One step = forward + loss (+ AR/TAR) + backward + SGD step on a random batch (paper sizes: vocab 10000,
batch 20, bptt 35), on one model whose ``fast`` flag is toggled, so the variants share weights. Each
variant is (implementation, precision): ``fp32``, or ``bf16`` = the forward under
``torch.autocast(bfloat16)`` as ``train.precision: bf16`` does. Variants alternate step by step (order
flipped every round) after one untimed warm-up step each; figures are medians over the timed steps.

The issue target (fast >= 2x the plain loop's tokens/s for the paper RHN) is checked twice: in fp32, and
with the fast recurrence under bf16 autocast against the same fp32 plain loop. A third row compares the
two implementations both under bf16, so the gain of the implementation and of the precision are apart.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import Scale, case, interleaved, median, missing_piece

NAME = "model_cells"
TITLE = "RHN and ON-LSTM recurrences, fast vs plain"
TARGET = 2.0

PAPER_CONFIGS: dict[str, dict] = {
    "rhn": dict(emsize=830, nhid=830, recurrence_depth=10, tied=True, couple=True),
    "onlstm": dict(emsize=400, nhid=1150, nlayers=3, chunk_size=10),
}
TINY_CONFIGS: dict[str, dict] = {
    "rhn": dict(emsize=16, nhid=16, recurrence_depth=2, tied=True, couple=True),
    "onlstm": dict(emsize=20, nhid=20, nlayers=2, chunk_size=5),
}
VARIANTS = (("fast", "fp32"), ("plain", "fp32"), ("fast", "bf16"), ("plain", "bf16"))


def _step_unit(model: nn.Module, opt: torch.optim.Optimizer, fast: bool, precision: str, vocab: int,
               batch_size: int, bptt: int, generator: torch.Generator):
    """A timing unit: one training step of ``model`` with the given implementation and precision."""
    hidden = model.init_hidden(batch_size)

    def unit() -> float:
        model.fast = fast
        tokens = torch.randint(0, vocab, (bptt + 1, batch_size), generator=generator)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(tokens[:-1], hidden)
            loss = F.cross_entropy(out.logits, tokens[1:].reshape(-1)) + model.regularizer(out, 2.0, 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    return unit


def variant_tokens_per_s(model_type: str, options: dict, *, vocab: int, steps: int, batch_size: int = 20,
                         bptt: int = 35, seed: int = 0) -> dict[str, float]:
    """Median training tokens/s per variant label (``"fast fp32"``, ``"plain bf16"``, ...)."""
    from selfish.models import build_model

    torch.manual_seed(seed)
    model = build_model(model_type, vocab, **options)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(seed)
    units = {f"{impl} {precision}": _step_unit(model, opt, impl == "fast", precision, vocab, batch_size, bptt,
                                               generator)
             for impl, precision in VARIANTS}
    times = interleaved(units, repeats=steps)
    return {label: batch_size * bptt / median(ts) for label, ts in times.items()}


def run(scale: Scale) -> dict:
    cases, notes, skipped = [], [], []
    configs = TINY_CONFIGS if scale.tiny else PAPER_CONFIGS
    vocab = 100 if scale.tiny else 10_000
    steps = {"full": 3, "quick": 1, "tiny": 1}[scale.name]
    size = "tiny" if scale.tiny else "paper size"
    for model_type, options in configs.items():
        try:
            tps = variant_tokens_per_s(model_type, options, vocab=vocab, steps=steps)
        except Exception as exc:
            skipped.append(f"{model_type}: {missing_piece(exc)}")
            continue
        target = dict(target=f">= {TARGET}") if model_type == "rhn" else {}
        for label, (value, baseline), ratio_means in (
            ("fp32", ("fast fp32", "plain fp32"), "fast tokens/s / plain tokens/s, both fp32"),
            ("fast bf16 vs plain fp32", ("fast bf16", "plain fp32"),
             "fast tokens/s under bf16 autocast / plain fp32 tokens/s"),
            ("both bf16", ("fast bf16", "plain bf16"), "fast tokens/s / plain tokens/s, both under bf16 autocast"),
        ):
            ratio = tps[value] / tps[baseline]
            met = {"meets_target": ratio >= TARGET} if target and label != "both bf16" else {}
            cases.append(case(
                f"{model_type} {size}, {label}", "training tokens/s", value=tps[value], baseline=tps[baseline],
                unit="tok/s", ratio=ratio, ratio_means=ratio_means, **(target if met else {}), **met,
                options=options, vocab_size=vocab, steps=steps, tokens_per_s=tps,
            ))
    notes.append("one model per type, fast flag toggled; four variants alternate step by step; SGD lr 1e-4")
    return {"cases": cases, "notes": notes, "skipped": skipped}
