"""Training tokens/s of the RHN and ON-LSTM recurrences, fast against plain (Python-loop) versions.

One step = forward + loss (+ AR/TAR) + backward + SGD step on a random batch (paper sizes: vocab 10000,
batch 20, bptt 35), on one model whose ``fast`` flag is toggled, so the variants share weights. Each
variant is (implementation, precision): ``fp32``, or ``bf16`` = the forward under
``torch.autocast(bfloat16)`` as ``train.precision: bf16`` does. Variants alternate step by step (order
flipped every round) after one untimed warm-up step each; figures are medians over the timed steps.

The issue target (fast >= 2x the plain loop's tokens/s for the paper RHN) is checked twice: in fp32, and
with the fast recurrence under bf16 autocast against the same fp32 plain loop. A third row compares the
two implementations both under bf16, so the gain of the implementation and of the precision are apart.

For the RHN a fifth unit, the *matmul floor*, runs only the matrix products of one training step (same
shapes, same count, fp32, preallocated outputs, nothing else) alternating with the four variants. No
fp32 implementation that forms these products with torch's matmul can train faster than the floor, so
``plain time / floor time`` is the largest fast-over-plain ratio this machine allows.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import Scale, case, interleaved, median, missing_piece
from selfish.models.recurrent import onednn_has_bf16

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
FLOOR = "matmul floor"


def rhn_step_matmuls(vocab: int, emsize: int, nhid: int, recurrence_depth: int, tied: bool = True,
                     couple: bool = True, batch_size: int = 20, bptt: int = 35) -> list[tuple[int, int, int, int]]:
    """The matrix products of one RHN training step (spec §6.2) as ``(count, m, k, n)``: ``[m, k] @ [k, n]``.

    Forward: the input projection ``W x`` of all steps at once, one ``[B, H] @ [H, G·H]`` per micro-step,
    the decoder. Backward: decoder input and weight gradients, one ``[B, G·H] @ [G·H, H]`` per micro-step,
    one time-batched ``R_l`` weight gradient per micro-layer, the input projection's two gradients.
    G = 2 (H, T) when coupled, 3 with the carry gate. The embedding's backward is an index-add, not a matmul.
    """
    rows, gates = batch_size * bptt, (2 if couple else 3) * nhid
    micro_steps = bptt * recurrence_depth
    inputs = [2 * nhid] if couple else [2 * nhid, nhid]  # W ([H; T]) and, uncoupled, W_C (C)
    return [
        *((1, rows, emsize, n) for n in inputs),       # W x (and W_C x) for every step
        (micro_steps, batch_size, nhid, gates),        # R_l s per micro-step
        (1, rows, nhid, vocab),                        # decoder
        (1, rows, vocab, nhid),                        # decoder: d input
        (1, vocab, rows, nhid),                        # decoder: d weight
        (micro_steps, batch_size, gates, nhid),        # d state through R_l per micro-step
        (recurrence_depth, gates, rows, nhid),         # d R_l, batched over time
        *((1, rows, n, emsize) for n in inputs),       # W (W_C): d input
        *((1, n, rows, emsize) for n in inputs),       # W (W_C): d weight
    ]


def matmul_floor_unit(shapes: list[tuple[int, int, int, int]]):
    """A timing unit doing exactly the products ``shapes`` (count, m, k, n) in fp32, outputs preallocated.

    The right operand is a transposed view of a row-major ``[n, k]`` weight, as ``x @ W.T`` reads it."""
    g = torch.Generator().manual_seed(0)
    operands = [(torch.randn(m, k, generator=g), torch.randn(n, k, generator=g).t(), torch.empty(m, n), count)
                for count, m, k, n in shapes]

    def unit() -> float:
        start = time.perf_counter()
        for a, b, out, count in operands:
            for _ in range(count):
                torch.mm(a, b, out=out)
        return time.perf_counter() - start

    return unit


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
                         bptt: int = 35, seed: int = 0, variants: tuple = VARIANTS) -> dict[str, float]:
    """Median training tokens/s per variant label (``"fast fp32"``, ``"plain bf16"``, ...)."""
    from selfish.models import build_model

    torch.manual_seed(seed)
    model = build_model(model_type, vocab, **options)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(seed)
    units = {f"{impl} {precision}": _step_unit(model, opt, impl == "fast", precision, vocab, batch_size, bptt,
                                               generator)
             for impl, precision in variants}
    if model_type == "rhn":
        units[FLOOR] = matmul_floor_unit(rhn_step_matmuls(vocab, batch_size=batch_size, bptt=bptt, **options))
    times = interleaved(units, repeats=steps)
    return {label: batch_size * bptt / median(ts) for label, ts in times.items()}


def run(scale: Scale) -> dict:
    cases, notes, skipped = [], [], []
    configs = TINY_CONFIGS if scale.tiny else PAPER_CONFIGS
    vocab = 100 if scale.tiny else 10_000
    steps = {"full": 3, "quick": 1, "tiny": 1}[scale.name]
    size = "tiny" if scale.tiny else "paper size"
    # Without native bf16 (AVX2-only CPUs) oneDNN emulates it: ~20x slower than fp32 here (2026-12-01:
    # RHN 26 vs 510 tok/s), so at full scale the bf16 variants would take most of `make bench` to say so.
    variants = VARIANTS if scale.tiny or onednn_has_bf16() else tuple(v for v in VARIANTS if v[1] == "fp32")
    if variants != VARIANTS:
        notes.append("bf16 variants not timed: this CPU has no native bf16 (oneDNN), where they ran ~20x slower "
                     "than fp32 (RHN 26 vs 510 tok/s, 2026-12-01)")
    for model_type, options in configs.items():
        try:
            tps = variant_tokens_per_s(model_type, options, vocab=vocab, steps=steps, variants=variants)
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
            if value not in tps or baseline not in tps:
                continue
            ratio = tps[value] / tps[baseline]
            met = {"meets_target": ratio >= TARGET} if target and label != "both bf16" else {}
            cases.append(case(
                f"{model_type} {size}, {label}", "training tokens/s", value=tps[value], baseline=tps[baseline],
                unit="tok/s", ratio=ratio, ratio_means=ratio_means, **(target if met else {}), **met,
                options=options, vocab_size=vocab, steps=steps, tokens_per_s=tps,
            ))
        if FLOOR in tps:
            cases.append(case(
                f"{model_type} {size}, matmul floor", "training tokens/s", value=tps[FLOOR],
                baseline=tps["plain fp32"], unit="tok/s", ratio=tps[FLOOR] / tps["plain fp32"],
                ratio_means="plain step time / time of the step's fp32 matmuls alone: the largest fast/plain "
                            "ratio any fp32 implementation could reach", options=options, vocab_size=vocab,
                steps=steps, matmuls=rhn_step_matmuls(vocab, **options),
            ))
    notes.append("one model per type, fast flag toggled; four variants alternate step by step; SGD lr 1e-4")
    notes.append("matmul floor: the RHN step's matrix products alone (fp32, same shapes and count), "
                 "alternating with the variants; a step cannot be faster than its products")
    return {"cases": cases, "notes": notes, "skipped": skipped}
