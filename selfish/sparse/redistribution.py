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
    capped at 0.99 x candidates_l with the excess spread evenly over uncapped tensors (<= 1000 passes).
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
        wanted = {k: math.ceil(shares[k] * budget) if budget > 0 else 0 for k in counts}
        caps = {k: 0.99 * c.candidates for k, c in counts.items()}
        result = dict(wanted)
        extra = 0.0
        for _ in range(1000):
            excess = 0.0
            open_names = []
            for k in counts:
                value = wanted[k] + extra
                if value > caps[k]:
                    excess += value - caps[k]
                    result[k] = caps[k]
                else:
                    result[k] = value
                    open_names.append(k)
            if excess <= 0 or not open_names:
                break
            extra += excess / len(open_names)
        return {k: max(0, min(int(v), counts[k].candidates)) for k, v in result.items()}

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
