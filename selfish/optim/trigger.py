"""The non-monotone trigger of NT-ASGD (AWD-LSTM, spec §5.1): when to switch from SGD to (S)NT-ASGD."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class NonMonotoneTrigger:
    """Records one validation loss per epoch and says when to switch to averaging.

    `should_switch(v)` is True when `len(history) > nonmono and v > min(history[:-nonmono])`, history being
    the losses recorded BEFORE v; then v is appended (same order as AWD/SR `main.py`). With nonmono=5 the
    earliest switch is at the 7th call (epoch 7). nonmono=0 compares with the whole history (the original
    would take `min([])` and crash). The caller stops asking once it has switched (the switch is final).
    """

    def __init__(self, nonmono: int = 5) -> None:
        if nonmono < 0:
            raise ValueError(f"nonmono must be >= 0, got {nonmono}")
        self.nonmono = nonmono
        self.history: list[float] = []

    def should_switch(self, val_loss: float) -> bool:
        """True if `val_loss` (this epoch, nats) is worse than the best loss of more than `nonmono` epochs ago."""
        earlier = self.history[: len(self.history) - self.nonmono]
        switch = len(self.history) > self.nonmono and val_loss > min(earlier)
        self.history.append(float(val_loss))
        return switch

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers only."""
        return {"nonmono": self.nonmono, "history": list(self.history)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.nonmono = int(state["nonmono"])
        self.history = [float(v) for v in state["history"]]
