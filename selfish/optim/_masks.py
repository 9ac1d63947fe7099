"""Shared pieces of the mask-aware optimizers: their base class (step wrapper, gradient clipping fused with
the mask), mask validation and state-dict fix-ups."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn


class MaskAwareOptimizer(torch.optim.Optimizer):
    """Base of :class:`SparseSGD` and :class:`SNTASGD`: masks known by parameter identity (the subclass keeps
    ``self._float_masks = {id(param): 0/1 mask in the param's dtype}``) and :meth:`clip_grad_norm_`.

    A subclass implements ``_step_group(group, grads_masked)``. ``grads_masked`` is True when the gradients
    were already multiplied by the masks (by :meth:`clip_grad_norm_` since the last step or mask change):
    then a masked parameter takes the dense update, which keeps its zeros (W and g are 0 off the mask).
    """

    _float_masks: dict[int, torch.Tensor]
    _grads_masked: bool = False

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """One update of every param with a gradient (masked ones stay exactly 0 off their mask)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads_masked, self._grads_masked = self._grads_masked, False
        for group in self.param_groups:
            self._step_group(group, grads_masked)
        return loss

    def _step_group(self, group: dict[str, Any], grads_masked: bool) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """``torch.nn.utils.clip_grad_norm_(managed params, max_norm)`` whose rescale pass also applies the masks.

        The total L2 norm is over the full (dense) gradients, as the original's clip before ``W *= M`` (spec
        §1 step 2); then ``g <- c·(g ⊙ M)`` for masked params in the one pass that would rescale anyway
        (``g <- c·g`` for dense ones), with c = min(1, max_norm / (norm + 1e-6)), and the next :meth:`step`
        takes those gradients as they are. The kept entries equal torch's clip bitwise. Returns the norm.
        Do not accumulate more gradient between this call and the step. (Gradient growth reads the dense
        ``.grad`` at the mask update: :class:`selfish.sparse.Masking` clips with torch's function then.)
        """
        params = [p for p in managed_params(self) if p.grad is not None]
        grads = [p.grad for p in params]
        if not grads:
            return torch.zeros(())
        total = _total_norm(grads)
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        masked = [(p.grad, self._float_masks[id(p)]) for p in params if id(p) in self._float_masks]
        dense = [p.grad for p in params if id(p) not in self._float_masks]
        _scale_and_mask_(masked, coef)
        if dense:
            torch._foreach_mul_(dense, coef.to(dense[0].device))
        self._grads_masked = True
        return total


def _total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of all ``grads`` as one vector, computed as ``torch.nn.utils.clip_grad_norm_`` does."""
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6
        return torch.nn.utils.get_total_norm(grads, 2.0)
    first = grads[0].device
    norms = [torch.linalg.vector_norm(g) for g in grads]
    return torch.linalg.vector_norm(torch.stack([n.to(first) for n in norms]))


def _scale_and_mask_(masked: list[tuple[torch.Tensor, torch.Tensor]], coef: torch.Tensor) -> None:
    """``g <- coef·(g ⊙ M)`` in place for every (g, 0/1 mask) pair.

    On the CPU one pass per tensor, ``addcmul(0, g, M, value=coef)`` (``0 + coef·g·1`` is ``coef·g`` exactly);
    elsewhere two foreach passes with ``coef`` kept on the device (no host sync per step).
    """
    if not masked:
        return
    grads, masks = (list(x) for x in zip(*masked, strict=True))
    if all(g.device.type == "cpu" for g in grads):
        scale = float(coef)
        zero = torch.zeros((), dtype=grads[0].dtype)
        for grad, mask in zip(grads, masks, strict=True):
            torch.addcmul(zero, grad, mask, value=scale, out=grad)
        return
    torch._foreach_mul_(grads, masks)
    torch._foreach_mul_(grads, coef.to(grads[0].device))


def managed_params(optimizer: torch.optim.Optimizer) -> Iterator[nn.Parameter]:
    """All parameters of `optimizer`, group by group, in order."""
    for group in optimizer.param_groups:
        yield from group["params"]


def resolve_masks(
    optimizer: torch.optim.Optimizer, masks: Mapping[nn.Parameter, torch.Tensor]
) -> dict[int, torch.Tensor]:
    """Check `masks` (keyed by parameter identity) against the optimizer's parameters.

    Returns {id(param): bool mask on the param's device}. Raises ValueError for a mask of a parameter the
    optimizer does not manage or of the wrong shape, TypeError for a mask that is not boolean.
    """
    params = {id(p): p for p in managed_params(optimizer)}
    resolved: dict[int, torch.Tensor] = {}
    for param, mask in masks.items():
        param_id = id(param)
        if param_id not in params:
            raise ValueError(
                f"set_masks: a mask of shape {tuple(mask.shape)} names a parameter this optimizer does not manage"
            )
        if mask.dtype != torch.bool:
            raise TypeError(f"set_masks: masks must be bool tensors, got {mask.dtype}")
        if mask.shape != param.shape:
            raise ValueError(
                f"set_masks: mask shape {tuple(mask.shape)} != parameter shape {tuple(param.shape)}"
            )
        resolved[param_id] = mask.detach().to(device=param.device)
    return resolved


def refresh_float_mask(
    float_masks: dict[int, torch.Tensor], param: nn.Parameter, mask: torch.Tensor
) -> torch.Tensor:
    """`mask` as 0/1 in `param`'s dtype, written into the buffer `float_masks[id(param)]` (allocated on first
    use; reusing it avoids a fresh weight-sized allocation, and its page faults, at every mask update)."""
    float_mask = float_masks.get(id(param))
    if float_mask is None or float_mask.shape != param.shape or float_mask.dtype != param.dtype:
        float_mask = torch.empty(param.shape, dtype=param.dtype, device=param.device)
        float_masks[id(param)] = float_mask
    float_mask.copy_(mask.view(torch.uint8))  # the uint8 -> float cast is ~3x faster than bool -> float
    return float_mask


def copied_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of an optimizer state dict, so that loading it never aliases the caller's tensors."""
    return {
        "state": copy.deepcopy(state_dict["state"]),
        "param_groups": copy.deepcopy(state_dict["param_groups"]),
    }


def restore_exact_dtypes(
    optimizer: torch.optim.Optimizer, state_dict: Mapping[str, Any], keys: tuple[str, ...]
) -> None:
    """Undo `Optimizer.load_state_dict`'s cast of every state tensor to the parameter's dtype for `keys`.

    torch casts all state tensors of a float parameter to its float dtype, which would turn bool masks and
    int32 step counters into floats; here they are put back from `state_dict` with their own dtype.
    """
    saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
    for saved_id, param in zip(saved_ids, managed_params(optimizer), strict=True):
        saved = state_dict["state"].get(saved_id)
        if saved is None:
            continue
        for key in keys:
            value = saved.get(key)
            if isinstance(value, torch.Tensor):
                optimizer.state[param][key] = value.to(device=param.device, copy=True)
