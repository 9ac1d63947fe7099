"""Redistribution: *how many* weights each tensor regrows after death (spec §3.3)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

__all__ = ["TensorCounts", "Redistribution", "NoRedistribution", "ProportionalRedistribution",
           "REDISTRIBUTIONS", "make_redistribution"]


@dataclass(frozen=True)
class TensorCounts:
    """Counts of one tensor during an update (plain ints)."""

    numel: int
    nonzero_before: int
    nonzero_after_death: int
    baseline: int  # nonzero count at the first update

    @property
    def removed(self) -> int:
        return self.nonzero_before - self.nonzero_after_death

    @property
    def candidates(self) -> int:
        return self.numel - self.nonzero_after_death


class Redistribution:
    """Base: ``score`` (before death, a 0-d tensor or None) and ``regrow`` (counts per tensor)."""

    needs_momentum = False

    def score(self, weight: torch.Tensor, mask: torch.Tensor, momentum: Callable[[], torch.Tensor]
              ) -> torch.Tensor | None:
        return None

    def regrow(self, counts: Mapping[str, TensorCounts], scores: Mapping[str, float]) -> dict[str, int]:
        raise NotImplementedError

    def end_update(self, counts: Mapping[str, TensorCounts], nonzero_after: Mapping[str, int]) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class NoRedistribution(Redistribution):
    """``none`` (Selfish default): every tensor regrows back to its baseline count, so its size is fixed
    for the run and Bernoulli drift is corrected at the next update."""

    def regrow(self, counts, scores):
        return {n: max(0, min(c.baseline - c.nonzero_after_death, c.candidates)) for n, c in counts.items()}


class ProportionalRedistribution(Redistribution):
    """``magnitude`` | ``nonzeros`` | ``momentum`` (Sparse Momentum): regrowth is shared across tensors
    in proportion to a score s_l taken before death -- mean |W| over active weights, the count of
    |W| > 1e-3, or mean |momentum| over active weights. regrow_l = ceil(share_l (sum removed + a)),
    capped at 0.99 x candidates_l with the excess spread evenly over the tensors (<= 1000 passes, see
    :func:`_cap_and_spread`).
    a is the smoothed residual a <- 0.25 a + 0.75 r + mean(all r so far), r = baseline - nonzero after
    the update, summed over tensors (as in the original)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.needs_momentum = kind == "momentum"
        self.adjusted_growth = 0.0
        self.residual_sum = 0.0
        self.residual_count = 0

    def score(self, weight, mask, momentum):
        w = weight.detach()
        if self.kind == "nonzeros":
            return torch.count_nonzero(w.abs() > 1e-3).to(torch.float64)
        source = w if self.kind == "magnitude" else momentum()
        active = torch.count_nonzero(mask).clamp_min(1)
        return (source.abs() * mask).sum(dtype=torch.float64) / active

    def regrow(self, counts, scores):
        total_score = sum(scores.values())
        n = len(counts)
        shares = {k: (scores[k] / total_score if total_score > 0 else 1.0 / n) for k in counts}
        budget = sum(c.removed for c in counts.values()) + self.adjusted_growth
        result = {k: float(math.ceil(shares[k] * budget)) if budget > 0 else 0.0 for k in counts}
        return _cap_and_spread(result, {k: 0.99 * c.candidates for k, c in counts.items()}, counts)

    def end_update(self, counts, nonzero_after):
        residual = float(sum(c.baseline for c in counts.values()) - sum(nonzero_after.values()))
        self.residual_sum += residual
        self.residual_count += 1
        mean = self.residual_sum / self.residual_count
        self.adjusted_growth = 0.25 * self.adjusted_growth + 0.75 * residual + mean

    def state_dict(self):
        return {"adjusted_growth": self.adjusted_growth, "residual_sum": self.residual_sum,
                "residual_count": self.residual_count}

    def load_state_dict(self, state):
        self.adjusted_growth = float(state["adjusted_growth"])
        self.residual_sum = float(state["residual_sum"])
        self.residual_count = int(state["residual_count"])


def _cap_and_spread(wanted: dict[str, float], caps: dict[str, float], counts: Mapping[str, TensorCounts]
                    ) -> dict[str, int]:
    """Cap each tensor's regrowth at ``caps`` and hand the overflow back out, as Sparse Momentum does.

    Each pass adds the previous pass's overflow, split evenly over all tensors, to every tensor and caps
    again; a capped tensor passes its share straight back into the next overflow. The total is conserved
    (up to what no tensor can take) and the overflow shrinks every pass, so it stops within 1000 passes.
    Returns whole counts, each within [0, candidates].
    """
    result = dict(wanted)
    mean_overflow = 0.0
    for _ in range(1000):
        overflow = 0.0
        for k in result:
            value = result[k] + mean_overflow
            result[k] = min(value, caps[k])
            overflow += value - result[k]
        if overflow <= 0 or all(result[k] >= caps[k] for k in result):
            break
        mean_overflow = overflow / len(result)
    return {k: max(0, min(int(v), counts[k].candidates)) for k, v in result.items()}


REDISTRIBUTIONS: dict[str, Callable[[], Redistribution]] = {
    "none": NoRedistribution,
    "magnitude": lambda: ProportionalRedistribution("magnitude"),
    "nonzeros": lambda: ProportionalRedistribution("nonzeros"),
    "momentum": lambda: ProportionalRedistribution("momentum"),
}


def make_redistribution(name: str) -> Redistribution:
    """Redistribution by spec name; unknown names raise ``ValueError`` listing the allowed ones."""
    if name not in REDISTRIBUTIONS:
        raise ValueError(f"unknown redistribution_mode {name!r}; allowed: {', '.join(REDISTRIBUTIONS)}")
    return REDISTRIBUTIONS[name]()
