"""Shared helpers of the mask-aware optimizers: mask validation and state-dict fix-ups."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn


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
