"""Time-batched weight gradients for hand-written recurrences (used by the fast ON-LSTM / MoS paths).

A recurrent weight ``W`` is used at every time step (``h_{t-1} @ W^T``). Plain autograd computes and
accumulates a full ``W``-sized gradient at each step (L rank-B updates plus L additions of a W-sized
tensor). :class:`TimeBatchedLinear` instead records each step's output gradient and input during the
backward pass and forms ``dW = sum_t g_t^T h_{t-1}`` in one ``[G, L·B] @ [L·B, H]`` matmul once every
step's backward has run. Numerically it equals plain autograd up to float summation order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

T = TypeVar("T")


@functools.cache
def onednn_has_bf16() -> bool:
    """Whether oneDNN can run bf16 kernels on this CPU (AVX512-BF16 / AMX); False on AVX2-only CPUs."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def fused_lstm(call: Callable[[Tensor, tuple[Tensor, ...]], T], inputs: Tensor, state: tuple[Tensor, ...]) -> T:
    """``call(inputs, state)`` of a fused LSTM kernel (``nn.LSTM`` or ``torch.lstm``), autocast-safe.

    Under CPU bf16 autocast on a CPU whose oneDNN has no bf16 LSTM (it raises "could not create a primitive
    descriptor"), the LSTM runs in fp32 with autocast off; everywhere else it runs as called.
    """
    if (inputs.device.type == "cpu" and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16 and not onednn_has_bf16()):
        with torch.autocast("cpu", enabled=False):
            return call(inputs.float(), tuple(s.float() for s in state))
    return call(inputs, state)


def autocast_matmul_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast would run matmuls in on ``device_type`` (e.g. bfloat16), or None when it is off."""
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


class _WeightGradCollector(torch.autograd.Function):
    """Identity on the weight; its backward forms the weight gradient from the steps' records."""

    @staticmethod
    def forward(ctx, weight: Tensor, records: list[tuple[Tensor, Tensor]]) -> Tensor:
        ctx.records, ctx.weight_dtype = records, weight.dtype
        ctx.set_materialize_grads(False)
        return weight.view_as(weight)

    @staticmethod
    def backward(ctx, grad: Tensor | None):
        records = ctx.records
        if not records:
            return grad, None
        grads = torch.cat([g for g, _ in records])
        inputs = torch.cat([h for _, h in records])
        records.clear()
        weight_grad = (grads.t() @ inputs).to(ctx.weight_dtype)
        if grad is not None:
            weight_grad = weight_grad + grad
        return weight_grad, None


class _RecordedMatmul(torch.autograd.Function):
    """``h @ W^T`` whose backward returns only the input gradient and records ``(g, h)`` for ``W``.

    ``matmul_weight`` is ``weight`` itself, or its copy in the autocast dtype (cast once per forward call);
    the product and both backward matmuls run in its dtype, as autocast would run them.
    """

    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, records: list[tuple[Tensor, Tensor]], matmul_weight: Tensor):
        h_mm = h.to(matmul_weight.dtype)
        ctx.save_for_backward(h_mm, matmul_weight)
        ctx.records, ctx.h_dtype = records, h.dtype
        return h_mm @ matmul_weight.t()

    @staticmethod
    def backward(ctx, grad: Tensor):
        h, weight = ctx.saved_tensors
        grad = grad.to(weight.dtype)
        if ctx.needs_input_grad[1]:
            ctx.records.append((grad, h))
        grad_h = (grad @ weight).to(ctx.h_dtype) if ctx.needs_input_grad[0] else None
        return grad_h, None, None, None


class TimeBatchedLinear:
    """``step(h) = h @ weight^T`` for many steps of one forward call, with one batched weight gradient.

    Create one per forward call (``TimeBatchedLinear(weight)``), call ``step(h [B, H]) -> [B, G]`` at each
    time step. ``weight`` ``[G, H]`` may be a non-leaf (e.g. a DropConnect-masked weight). Under autocast
    the matmuls run in the autocast dtype on one cast copy of the weight.
    """

    def __init__(self, weight: Tensor) -> None:
        self._records: list[tuple[Tensor, Tensor]] = []
        self._weight = _WeightGradCollector.apply(weight, self._records) if weight.requires_grad else weight
        matmul_dtype = autocast_matmul_dtype(weight.device.type)
        self._matmul_weight = weight.detach() if matmul_dtype is None else weight.detach().to(matmul_dtype)

    def step(self, h: Tensor) -> Tensor:
        if not (self._weight.requires_grad and torch.is_grad_enabled()):
            return h @ self._weight.t()
        return _RecordedMatmul.apply(h, self._weight, self._records, self._matmul_weight)
