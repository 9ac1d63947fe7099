"""Death-rate schedules p(t) ("when and how many", spec §4).

Each schedule is stepped once per optimizer step (``Masking.step``) and answers ``get_dr()`` with the
current death rate. They hold only numbers, so ``state_dict()`` is plain.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["CosineDecay", "LinearDecay", "ConstantDecay", "DeathRateSchedule", "make_decay", "DECAYS"]


class DeathRateSchedule:
    """Base class: ``t`` = optimizer steps so far; subclasses define ``value_at(t)``."""

    def __init__(self, death_rate: float, T_max: int = 1, eta_min: float = 0.005) -> None:
        if not 0.0 <= death_rate <= 1.0:
            raise ValueError(f"death_rate must be in [0, 1], got {death_rate}")
        if T_max <= 0:
            raise ValueError(f"T_max must be positive, got {T_max}")
        self.death_rate = float(death_rate)
        self.T_max = int(T_max)
        self.eta_min = float(eta_min)
        self.t = 0

    def value_at(self, t: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self) -> None:
        """Advance by one optimizer step."""
        self.t += 1

    def get_dr(self, death_rate: float | None = None) -> float:
        """Current death rate p(t). The argument exists for the original API and is ignored."""
        return self.value_at(self.t)

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "death_rate": self.death_rate, "T_max": self.T_max, "eta_min": self.eta_min}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])
        self.death_rate = float(state["death_rate"])
        self.T_max = int(state["T_max"])
        self.eta_min = float(state["eta_min"])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(death_rate={self.death_rate}, T_max={self.T_max}, "
                f"eta_min={self.eta_min}, t={self.t})")


class CosineDecay(DeathRateSchedule):
    """p(t) = eta_min + (p0 - eta_min) (1 + cos(pi t / T_max)) / 2 (closed form of the original's
    CosineAnnealingLR; periodic beyond T_max, spec §4)."""

    def value_at(self, t: int) -> float:
        return self.eta_min + (self.death_rate - self.eta_min) * (1.0 + math.cos(math.pi * t / self.T_max)) / 2.0


class LinearDecay(DeathRateSchedule):
    """p(t) goes linearly from p0 to eta_min over T_max steps, then stays at eta_min."""

    def value_at(self, t: int) -> float:
        frac = min(t / self.T_max, 1.0)
        return self.death_rate + (self.eta_min - self.death_rate) * frac


class ConstantDecay(DeathRateSchedule):
    """p(t) = p0 for all t."""

    def value_at(self, t: int) -> float:
        return self.death_rate


DECAYS: dict[str, type[DeathRateSchedule]] = {
    "cosine": CosineDecay,
    "linear": LinearDecay,
    "constant": ConstantDecay,
}


def make_decay(name: str, death_rate: float, T_max: int = 1, eta_min: float = 0.005) -> DeathRateSchedule:
    """Schedule by name: ``"cosine" | "linear" | "constant"``; unknown names raise ``ValueError``."""
    if name not in DECAYS:
        raise ValueError(f"unknown death-rate decay {name!r}; allowed: {', '.join(sorted(DECAYS))}")
    return DECAYS[name](death_rate, T_max, eta_min)
