"""Mask statistics of one update (spec §8) in the ``UpdateStats.to_dict()`` shape of contracts.md."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

__all__ = ["UpdateStats", "tensor_entry", "gate_entry", "total_entry"]


@dataclass
class UpdateStats:
    """Counts of one prune-and-regrow update.

    ``total`` and ``tensors[name]`` hold ``nonzero_before``, ``nonzero_after``, ``removed``, ``regrown``,
    ``regrown_just_removed``, ``numel``, ``density``, ``turnover`` (|M_t xor M_t-1| / (2 nnz(M_t))),
    ``exploration_rate`` (|ever active| / numel) and ``death_rate`` (realised removed / nonzero_before).
    ``gates[name][gate]`` (only for tensors with more than one gate block) holds ``nonzero_before``,
    ``nonzero_after``, ``removed``, ``regrown``, ``numel``, ``density``.
    """

    update: int
    step: int
    death_rate: float
    total: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, dict[str, Any]] = field(default_factory=dict)
    gates: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"update": self.update, "step": self.step, "death_rate": self.death_rate,
                "total": copy.deepcopy(self.total), "tensors": copy.deepcopy(self.tensors),
                "gates": copy.deepcopy(self.gates)}


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def tensor_entry(before: int, after_death: int, grown: int, just_removed: int, after: int, numel: int,
                 ever: int) -> dict[str, Any]:
    """Per-tensor (or total) stats from plain counts."""
    removed = before - after_death
    changed = (removed - just_removed) + (grown - just_removed)  # |M_t xor M_t-1|
    return {"nonzero_before": before, "nonzero_after": after, "removed": removed, "regrown": grown,
            "regrown_just_removed": just_removed, "numel": numel, "density": _ratio(after, numel),
            "turnover": _ratio(changed, 2 * after), "exploration_rate": _ratio(ever, numel),
            "death_rate": _ratio(removed, before)}


def total_entry(entries: list[dict[str, Any]], ever: int) -> dict[str, Any]:
    """Sum of per-tensor entries, ratios recomputed over the sums."""
    keys = ("nonzero_before", "nonzero_after", "removed", "regrown", "regrown_just_removed", "numel")
    s = {k: sum(e[k] for e in entries) for k in keys}
    return tensor_entry(s["nonzero_before"], s["nonzero_before"] - s["removed"], s["regrown"],
                        s["regrown_just_removed"], s["nonzero_after"], s["numel"], ever)


def gate_entry(before: int, after_death: int, grown: int, after: int, numel: int) -> dict[str, Any]:
    """Per-gate stats from plain counts."""
    return {"nonzero_before": before, "nonzero_after": after, "removed": before - after_death,
            "regrown": grown, "numel": numel, "density": _ratio(after, numel)}
