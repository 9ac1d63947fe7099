"""SNT-ASGD (spec §5.2): ASGD with t0=0, lambd=0 whose per-weight averages follow the masks.

Per element the average is the mean of the weight's values since the 2nd step after it was last
(re)activated (after the 1st step it is the current value); inactive weights average to 0; a weight removed
and regrown in the same update keeps its average. Unmasked (dense) parameters are plain torch ASGD with
t0=0, lambd=0 (mean of the iterates from the 2nd step on), i.e. AWD-LSTM's NT-ASGD (spec §5.1).

Memory-bandwidth design (this runs every batch): the masks change only in `set_masks`, so instead of the
original's per-element step counters and running mean (several passes per step) we keep, per element,

    sum            -- the running sum of the weight over the steps that count (0 where inactive)
    activated_at   -- the optimizer step count when the element was last activated (python int when it is
                      the same for every element, else an int32 tensor; only written in `set_masks`)

and each step costs one extra fused pass, `sum += W`. The only exception is the first step after an
activation (new optimizer, `restart()`, or `set_masks` that grows weights): the newly active elements must
not be added yet, so that one step uses a masked add. The average, sum / (step - activated_at - 1), is only
computed when asked for (`averages()`, `averaged()`), once per epoch.

Measured (CPU, 2 threads, density 0.33, random grads, median step): SNTASGD / SparseSGD = 1.24-1.41 at
4.65M params (2x200 LSTM) and 1.49-1.58 at 66M (2x1500); torch ASGD / (torch SGD + W *= M) = 1.6-2.8. A
torch.compile-fused update (W and sum in one pass) was ~2.5x faster per kernel but took ~26 s to compile and
recompiles per shape and lr value, so it is not used.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ._masks import (
    MaskAwareOptimizer,
    copied_state_dict,
    managed_params,
    refresh_float_mask,
    resolve_masks,
    restore_exact_dtypes,
)
from .sgd import _plain_dense_update, _plain_masked_update


class SNTASGD(MaskAwareOptimizer):
    """Sparse non-monotonically triggered ASGD (spec §5.2) with constant lr, t0=0, lambd=0.

    The weight update is SGD without momentum, mask-aware like `SparseSGD`:
    W <- W·(1 - lr·wd) - lr·(g ⊙ M) for masked params, W <- W - lr·(g + wd·W) for dense ones (and for
    masked ones after `clip_grad_norm_`, which applies the masks to the gradients).

    State per parameter (all in `state_dict()`): "step" (int, steps taken), "sum" (tensor like the param),
    "activated_at" (int or int32 tensor), "mask" (bool copy of the last mask, or None = dense),
    "pending" (bool: the next step is the first one after an activation).
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter] | Iterable[dict[str, Any]],
        lr: float,
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0.0 or weight_decay < 0.0:
            raise ValueError(f"SNTASGD: lr={lr}, weight_decay={weight_decay} must be >= 0")
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})
        self._float_masks: dict[int, torch.Tensor] = {}

    # ----------------------------------------------------------------------------------------------- state
    def _param_state(self, param: nn.Parameter) -> dict[str, Any]:
        """The state of `param`, created on first use (step 0, all elements active since step 0)."""
        state = self.state[param]
        if not state:
            state["step"] = 0
            state["sum"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["activated_at"] = 0
            state["mask"] = None
            state["pending"] = True
        return state

    @torch.no_grad()
    def set_masks(self, masks: Mapping[nn.Parameter, torch.Tensor]) -> None:
        """Use `masks` (bool, keyed by parameter identity) from now on; absent params are dense.

        Newly active elements start a new average at the next step; removed ones get sum 0 (and weight 0);
        elements active in both the old and the new mask keep their average. Same masks again: no change.
        Per masked param: one compare (new & ~old), one `any`, three cheap passes when something grew,
        the 0/1 cast of the mask and one multiply each of W and the sum.
        """
        resolved = resolve_masks(self, masks)
        self._grads_masked = False  # gradients masked with the old masks are not masked with the new ones
        for param in managed_params(self):
            state = self._param_state(param)
            new, old = resolved.get(id(param)), state["mask"]
            if new is None and old is None:
                continue
            if old is None:
                grown = None  # everything was active: nothing is newly activated
            else:
                grown = ~old if new is None else torch.gt(new, old)  # new & ~old
            if grown is not None and bool(grown.any()):
                self._mark_activated(state, grown, self._float_masks.get(id(param)))
            if new is None:
                state["mask"] = None
                self._float_masks.pop(id(param), None)
            else:
                float_mask = refresh_float_mask(self._float_masks, param, new)
                state["sum"].mul_(float_mask)  # 0 off the old mask already: this zeroes the removed
                param.mul_(float_mask)
                state["mask"] = new.clone()

    @staticmethod
    def _mark_activated(state: dict[str, Any], grown: torch.Tensor, scratch: torch.Tensor | None = None) -> None:
        """Record that the `grown` elements become active now (their average restarts).

        activated_at = max(activated_at, step * grown): every recorded activation is <= the current step,
        so this sets exactly the grown elements (three fast passes; a masked_fill_ is ~4x slower on CPU).
        `scratch` (the old float mask, about to be rewritten) holds step * grown when it has 4-byte elements.
        """
        activated_at, step = state["activated_at"], state["step"]
        if not isinstance(activated_at, torch.Tensor):
            activated_at = torch.full(grown.shape, activated_at, dtype=torch.int32, device=grown.device)
        if scratch is not None and scratch.element_size() == 4 and scratch.shape == grown.shape:
            marks = scratch.view(torch.int32)
        else:
            marks = torch.empty_like(activated_at)
        marks.copy_(grown.view(torch.uint8)).mul_(step)
        torch.maximum(activated_at, marks, out=activated_at)
        state["activated_at"] = activated_at
        state["pending"] = True

    @torch.no_grad()
    def restart(self) -> None:
        """Start all averages over, as a newly created optimizer with the same masks would (spec §6.3)."""
        for param in managed_params(self):
            if param not in self.state:
                continue
            state = self.state[param]
            state["sum"].zero_()
            state["activated_at"] = state["step"]
            state["pending"] = True

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a state dict from `state_dict()` (exact: bool masks and int32 counters keep their dtype)."""
        state_dict = copied_state_dict(state_dict)
        super().load_state_dict(state_dict)
        self._grads_masked = False
        restore_exact_dtypes(self, state_dict, ("mask", "activated_at"))
        self._float_masks = {}
        for param in managed_params(self):
            mask = self.state[param].get("mask") if param in self.state else None
            if mask is not None:
                self._float_masks[id(param)] = mask.to(dtype=param.dtype)

    # ------------------------------------------------------------------------------------------------ step
    def _step_group(self, group: dict[str, Any], grads_masked: bool) -> None:
        """One ASGD step (constant lr) of the group's params with a gradient, then accumulate the averages."""
        lr, weight_decay = group["lr"], group["weight_decay"]
        masked: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        dense: list[tuple[torch.Tensor, torch.Tensor]] = []
        accumulate: list[tuple[torch.Tensor, torch.Tensor]] = []  # (sum, W): add the whole tensor
        first_after_activation: list[tuple[dict[str, Any], torch.Tensor]] = []
        for param in group["params"]:
            if param.grad is None:
                continue
            if param.grad.is_sparse:
                raise RuntimeError("SNTASGD does not support sparse gradients")
            state = self._param_state(param)
            float_mask = None if grads_masked else self._float_masks.get(id(param))
            if float_mask is None:
                dense.append((param, param.grad))
            else:
                masked.append((param, param.grad, float_mask))
            if state["pending"]:
                first_after_activation.append((state, param))
            else:
                accumulate.append((state["sum"], param))
            state["step"] += 1
        _plain_masked_update(masked, lr, weight_decay)
        _plain_dense_update(dense, lr, weight_decay)
        if accumulate:
            sums, params = (list(x) for x in zip(*accumulate, strict=True))
            torch._foreach_add_(sums, params)
        for state, param in first_after_activation:
            _accumulate_settled(state, param)
            state["pending"] = False

    # -------------------------------------------------------------------------------------------- averages
    @torch.no_grad()
    def averages(self) -> dict[nn.Parameter, torch.Tensor]:
        """{param: averaged weights} for every managed param (new tensors; 0 outside the mask, spec §5.2).

        Elements that took fewer than 2 steps since their activation (and params never stepped) average to
        their current value, as torch ASGD's `ax` after its first step.
        """
        return {param: self._average(param) for param in managed_params(self)}

    def _average(self, param: nn.Parameter) -> torch.Tensor:
        if param not in self.state or not self.state[param]:
            return param.detach().clone()
        state = self.state[param]
        counted = state["step"] - 1 - state["activated_at"]  # steps in the sum: step - activated_at - 1
        if isinstance(counted, torch.Tensor):
            average = torch.where(counted >= 1, state["sum"] / counted.clamp(min=1), param.detach())
        elif counted >= 1:
            average = state["sum"] / counted
        else:
            average = param.detach().clone()
        if state["mask"] is not None:
            average = average.masked_fill_(~state["mask"], 0.0)
        return average

    @contextmanager
    def averaged(self) -> Iterator[None]:
        """Inside the block the params hold their averages; the raw weights are restored bitwise after
        (also on exception). Use for evaluation and for saving the averaged model (spec §5.1)."""
        raw: list[tuple[nn.Parameter, torch.Tensor]] = []
        try:
            with torch.no_grad():
                for param in managed_params(self):
                    average = self._average(param)
                    raw.append((param, param.detach().clone()))
                    param.copy_(average)
            yield
        finally:
            with torch.no_grad():
                for param, weights in raw:
                    param.copy_(weights)


def _accumulate_settled(state: dict[str, Any], param: torch.Tensor) -> None:
    """First step after an activation: add W only where the element was active before this step.

    Elements activated at step count s are first stepped at s+1 (average = that value) and summed from
    s+2 on; the step count before this step was state["step"] - 1.
    """
    activated_at, step_before = state["activated_at"], state["step"] - 1
    if isinstance(activated_at, torch.Tensor):
        state["sum"].add_(torch.where(activated_at < step_before, param.detach(), 0.0))
    elif activated_at < step_before:
        state["sum"].add_(param.detach())
