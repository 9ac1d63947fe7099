"""NonMonotoneTrigger (spec §5.1) and Adam as in the original (spec §6.5)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from selfish.optim import NonMonotoneTrigger, build_adam, build_plateau_scheduler


def _first_switch(losses: list[float], nonmono: int = 5) -> int | None:
    """1-based epoch at which the trigger first fires."""
    trigger = NonMonotoneTrigger(nonmono)
    for epoch, loss in enumerate(losses, start=1):
        if trigger.should_switch(loss):
            return epoch
    return None


def test_earliest_switch_is_epoch_seven_with_nonmono_five() -> None:
    rising = [5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0]
    assert _first_switch(rising) == 7  # worse than epoch 1 from epoch 2 on, but only 7 can fire


def test_trigger_compares_with_best_loss_older_than_nonmono_epochs() -> None:
    # epochs 1..6 improve; 7 is worse than epoch 6 but better than min(history[:-5]) = epoch 1 -> no switch
    losses = [6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 5.5]
    assert _first_switch(losses) is None
    # epoch 8: min(history[:-5]) = min(epochs 1, 2) = 5.0; 5.0 is not > 5.0 (strict), 5.01 is
    assert _first_switch([*losses, 5.0]) is None
    assert _first_switch([*losses, 5.01]) == 8
    assert _first_switch([float(10 - e) for e in range(30)]) is None  # monotone improvement never fires


def test_trigger_records_before_it_returns_and_round_trips() -> None:
    trigger = NonMonotoneTrigger(nonmono=2)
    for loss in (3.0, 2.0, 1.0):
        assert not trigger.should_switch(loss)
    assert trigger.history == [3.0, 2.0, 1.0]
    restored = NonMonotoneTrigger(nonmono=9)
    restored.load_state_dict(json.loads(json.dumps(trigger.state_dict())))
    assert restored.nonmono == 2 and restored.history == trigger.history
    assert restored.should_switch(3.5) and trigger.should_switch(3.5)  # 3.5 > min([3.0]) for both


def test_trigger_nonmono_zero_and_validation() -> None:
    trigger = NonMonotoneTrigger(nonmono=0)
    assert not trigger.should_switch(1.0)  # empty history
    assert trigger.should_switch(1.5)
    with pytest.raises(ValueError):
        NonMonotoneTrigger(nonmono=-1)


def test_adam_settings_as_original() -> None:
    model = nn.Linear(3, 2)
    adam = build_adam(model.parameters(), weight_decay=1e-4)
    group = adam.param_groups[0]
    assert isinstance(adam, torch.optim.Adam)
    assert group["lr"] == 1e-3 and group["betas"] == (0.0, 0.999) and group["eps"] == 1e-9
    assert group["weight_decay"] == 1e-4 and not group["amsgrad"]
    assert build_adam(model.parameters(), lr=0.5).param_groups[0]["lr"] == 0.5


def test_plateau_scheduler_halves_lr_after_three_flat_epochs() -> None:
    adam = build_adam(nn.Linear(3, 2).parameters(), lr=0.01)
    scheduler = build_plateau_scheduler(adam)
    for _ in range(3):  # best, then 2 epochs without improvement (patience 2)
        scheduler.step(1.0)
    assert adam.param_groups[0]["lr"] == pytest.approx(0.01)
    scheduler.step(1.0)  # equal is no improvement (threshold 0): 3rd bad epoch
    assert adam.param_groups[0]["lr"] == pytest.approx(0.005)
    scheduler.step(0.999999)  # any improvement resets the count
    for _ in range(2):
        scheduler.step(1.0)
    assert adam.param_groups[0]["lr"] == pytest.approx(0.005)
