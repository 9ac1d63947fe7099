"""Mask-aware SGD (spec §1 step 2, §3.5): masked entries stay exactly 0 inside the update itself."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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


class SparseSGD(MaskAwareOptimizer):
    """SGD (optionally with heavy-ball momentum) that keeps masked weights and momentum at exactly 0.

    Equals `torch.optim.SGD(lr, momentum, weight_decay)` followed by `W *= M` and `momentum_buffer *= M`
    (spec §3.5) up to float rounding, without the extra pass: for a masked parameter, with W already 0 off
    the mask,
        no momentum:  W <- W·(1 - lr·wd) - lr·(g ⊙ M)
        momentum μ:   b <- μ·b + g ⊙ M + wd·W;   W <- W - lr·b      (b starts as g ⊙ M + wd·W)
    Parameters without a mask are updated exactly like torch SGD (foreach path). Masks are given with
    `set_masks({param: bool mask})`, keyed by parameter identity; a copy is kept in the optimizer state
    (key "mask"), so a state-dict round trip restores them. The momentum buffer is
    `state[p]["momentum_buffer"]` (torch's name) so that mask code (momentum growth) can read it.
    After `clip_grad_norm_` (which applies the masks to the gradients in the clip's own pass) the next step
    is the dense update for every param: W - lr·(g + wd·W) is 0 where W and g are.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter] | Iterable[dict[str, Any]],
        lr: float,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
    ) -> None:
        if lr < 0.0 or weight_decay < 0.0 or momentum < 0.0:
            raise ValueError(
                f"SparseSGD: lr={lr}, weight_decay={weight_decay}, momentum={momentum} must be >= 0"
            )
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum})
        self._float_masks: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def set_masks(self, masks: Mapping[nn.Parameter, torch.Tensor]) -> None:
        """Use `masks` (bool, same shape as the param) from now on; params absent from `masks` are dense.

        Zeroes the weights and momentum outside the new masks (W *= M, one pass each; W and momentum are
        already 0 outside the previous mask, so survivors and removed-then-regrown weights keep their
        values and newly grown ones start at 0). Calling it again with the same masks changes nothing.
        """
        resolved = resolve_masks(self, masks)
        self._grads_masked = False  # gradients masked with the old masks are not masked with the new ones
        for param in managed_params(self):
            mask = resolved.get(id(param))
            if mask is None:
                if param in self.state:
                    self.state[param].pop("mask", None)
                self._float_masks.pop(id(param), None)
                continue
            state = self.state[param]
            float_mask = refresh_float_mask(self._float_masks, param, mask)
            state["mask"] = mask.clone()
            param.mul_(float_mask)
            buf = state.get("momentum_buffer")
            if buf is not None:
                buf.mul_(float_mask)

    def _step_group(self, group: dict[str, Any], grads_masked: bool) -> None:
        lr, weight_decay, momentum = group["lr"], group["weight_decay"], group["momentum"]
        masked: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        dense: list[tuple[torch.Tensor, torch.Tensor]] = []
        for param in group["params"]:
            if param.grad is None:
                continue
            if param.grad.is_sparse:
                raise RuntimeError("SparseSGD does not support sparse gradients")
            float_mask = None if grads_masked else self._float_masks.get(id(param))
            if float_mask is None:
                dense.append((param, param.grad))
            else:
                masked.append((param, param.grad, float_mask))
        if momentum == 0.0:
            _plain_masked_update(masked, lr, weight_decay)
            _plain_dense_update(dense, lr, weight_decay)
        else:
            self._momentum_masked_update(masked, lr, weight_decay, momentum)
            self._momentum_dense_update(dense, lr, weight_decay, momentum)

    def _momentum_masked_update(
        self,
        masked: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
        lr: float,
        weight_decay: float,
        momentum: float,
    ) -> None:
        for param, grad, float_mask in masked:
            state = self.state[param]
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = torch.mul(grad, float_mask)
            else:
                buf.mul_(momentum).addcmul_(grad, float_mask)
            if weight_decay != 0.0:
                buf.add_(param, alpha=weight_decay)  # W is 0 off the mask, so b stays 0 there
            param.add_(buf, alpha=-lr)

    def _momentum_dense_update(
        self, dense: list[tuple[torch.Tensor, torch.Tensor]], lr: float, weight_decay: float, momentum: float
    ) -> None:
        for param, grad in dense:
            if weight_decay != 0.0:
                grad = grad.add(param, alpha=weight_decay)
            state = self.state[param]
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = torch.clone(grad).detach()
            else:
                buf.mul_(momentum).add_(grad)
            param.add_(buf, alpha=-lr)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a state dict from `state_dict()`; masks come back as bool, caches are rebuilt."""
        state_dict = copied_state_dict(state_dict)
        super().load_state_dict(state_dict)
        self._grads_masked = False
        restore_exact_dtypes(self, state_dict, ("mask",))
        self._float_masks = {
            id(p): self.state[p]["mask"].to(dtype=p.dtype)
            for p in managed_params(self)
            if "mask" in self.state.get(p, {})
        }


def _plain_masked_update(
    masked: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], lr: float, weight_decay: float
) -> None:
    """W <- W·(1 - lr·wd) - lr·(g ⊙ M), fused over the list with torch._foreach_*."""
    if not masked:
        return
    params, grads, float_masks = (list(x) for x in zip(*masked, strict=True))
    if weight_decay != 0.0:
        torch._foreach_mul_(params, 1.0 - lr * weight_decay)
    torch._foreach_addcmul_(params, grads, float_masks, value=-lr)


def _plain_dense_update(
    dense: list[tuple[torch.Tensor, torch.Tensor]], lr: float, weight_decay: float
) -> None:
    """Torch SGD without momentum: W <- W - lr·(g + wd·W), one pass and no temporary.

    With weight decay this is torch's fused SGD kernel (`torch._fused_sgd_`, the same arithmetic as the
    foreach path, which allocates g + wd·W for every parameter at every step); where the kernel is not
    available (device or dtype), the foreach path.
    """
    if not dense:
        return
    params, grads = (list(x) for x in zip(*dense, strict=True))
    if weight_decay == 0.0:
        torch._foreach_add_(params, grads, alpha=-lr)
        return
    if _fused_sgd_applies(params, grads):
        torch._fused_sgd_(params, grads, [], weight_decay=weight_decay, momentum=0.0, lr=lr, dampening=0.0,
                          nesterov=False, maximize=False, is_first_step=False)
        return
    grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_add_(params, grads, alpha=-lr)


_FUSED_DEVICES = ("cpu", "cuda")
_FUSED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _fused_sgd_applies(params: list[torch.Tensor], grads: list[torch.Tensor]) -> bool:
    """True if `torch._fused_sgd_` takes these tensors: one device (CPU or CUDA), one floating dtype."""
    first = params[0]
    if not hasattr(torch, "_fused_sgd_") or first.device.type not in _FUSED_DEVICES or first.dtype not in _FUSED_DTYPES:
        return False
    return all(t.device == first.device and t.dtype == first.dtype for t in params + grads)
