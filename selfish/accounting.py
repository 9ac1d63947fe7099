"""Parameter and FLOPs accounting (spec §2.2 and §8).

Conventions
-----------
* *Maskable* tensors are the ones the masks cover (every >=2-D weight whose name lacks "bias" by default,
  embedding and decoder included, spec §2.1). ``params_dense`` counts them dense and ``params_nonzero``
  counts their non-zeros, which is how the paper quotes model size (66.0M -> 21.78M for the 2x1500 LSTM
  at density 0.33). Biases and other dense parameters are reported apart (``params_other``).
* Forward FLOPs per token count multiply-adds of every weight matrix used once per token as 2 FLOPs per
  weight (2 per non-zero when sparse). Embedding lookups and element-wise gate arithmetic are ignored, as
  in spec §8. A model may declare extra uses per token with ``matmul_uses() -> {param name: uses}``
  (the MoS decoder is applied once per expert).
* Training FLOPs follow the RigL convention (Evci et al. 2020; spec §8): dense 3 f_D per token; static
  and random-growth methods (SET, Selfish-RNN) 3 f_S; SNFS (momentum growth) 2 f_S + f_D; RigL (gradient
  growth) (3 f_S dT + 2 f_S + f_D) / (dT + 1) with dT the steps between mask updates. Test FLOPs: f_S.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class TensorCount:
    """Counts for one parameter tensor."""

    name: str
    shape: tuple[int, ...]
    numel: int
    nonzero: int
    maskable: bool
    forward_uses: int  # matrix-vector uses per token (0 for an embedding lookup)


def _owners(model: nn.Module) -> dict[int, list[nn.Module]]:
    """Map id(parameter) -> the modules that hold it directly (a tied weight has two owners)."""
    owners: dict[int, list[nn.Module]] = {}
    for _, module in model.named_modules(remove_duplicate=False):
        for _, param in module.named_parameters(recurse=False):
            owners.setdefault(id(param), []).append(module)
    return owners


def _forward_uses(
    model: nn.Module, name: str, param: nn.Parameter, owners: dict[int, list[nn.Module]]
) -> int:
    declared = getattr(model, "matmul_uses", None)
    if callable(declared):
        uses = declared()
        if name in uses:
            return int(uses[name])
    if param.dim() < 2:
        return 0
    # A tied weight is owned by an Embedding (lookup, free) and by a Linear (a real matmul).
    holders = owners.get(id(param), [])
    return sum(0 if isinstance(m, nn.Embedding) else 1 for m in holders) if holders else 1


def count_tensors(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor] | None = None,
    nominal_density: Mapping[str, float] | None = None,
) -> list[TensorCount]:
    """Per-tensor counts of ``model`` (each shared Parameter once, under its first name).

    ``masks`` (bool, by parameter name) gives realised non-zeros; ``nominal_density`` (by name) gives the
    paper's nominal counts ``round(density * numel)`` instead. A tensor is maskable when it has a mask or
    a nominal density; without either argument every tensor counts as dense and unmasked.
    """
    owners = _owners(model)
    counts = []
    for name, param in model.named_parameters():
        numel = param.numel()
        maskable = False
        nonzero = numel
        if masks is not None and name in masks:
            maskable, nonzero = True, int(masks[name].sum().item())
        elif nominal_density is not None and name in nominal_density:
            maskable, nonzero = True, int(round(nominal_density[name] * numel))
        counts.append(
            TensorCount(
                name, tuple(param.shape), numel, nonzero, maskable, _forward_uses(model, name, param, owners)
            )
        )
    return counts


def forward_flops_per_token(counts: list[TensorCount], sparse: bool) -> int:
    """Forward FLOPs per token: 2 per weight (per non-zero when ``sparse``) per use (spec §8)."""
    return sum(2 * (c.nonzero if sparse else c.numel) * c.forward_uses for c in counts)


def training_flops_per_token(f_dense: float, f_sparse: float, method: str, update_interval: int) -> float:
    """Training FLOPs per token for one optimizer step, RigL convention (spec §8).

    ``method``: "dense", "static", "random" (SET / Selfish-RNN), "momentum" (SNFS) or "gradient" (RigL).
    ``update_interval``: optimizer steps between mask updates (dT).
    """
    if method == "dense":
        return 3.0 * f_dense
    if method in ("static", "random", "random_rnn"):
        return 3.0 * f_sparse
    if method == "momentum":
        return 2.0 * f_sparse + f_dense
    if method == "gradient":
        dt = max(1, update_interval)
        return (3.0 * f_sparse * dt + 2.0 * f_sparse + f_dense) / (dt + 1)
    raise ValueError(
        f"unknown training method {method!r}; allowed: dense, static, random, momentum, gradient"
    )


def summarize(
    counts: list[TensorCount],
    *,
    method: str,
    update_interval: int,
    train_tokens_total: int,
) -> dict:
    """Totals and FLOPs for a run: the ``describe`` numbers and the run summary's ``flops`` block."""
    maskable = [c for c in counts if c.maskable]
    f_dense = forward_flops_per_token(counts, sparse=False)
    f_sparse = forward_flops_per_token(counts, sparse=True)
    per_token = training_flops_per_token(f_dense, f_sparse, method, update_interval)
    params_dense = (
        sum(c.numel for c in maskable)
        if maskable
        else sum(c.numel for c in counts if c.numel and len(c.shape) >= 2)
    )
    params_nonzero = sum(c.nonzero for c in maskable) if maskable else params_dense
    params_total = sum(c.numel for c in counts)
    return {
        "params_total": params_total,
        "params_dense": params_dense,
        "params_nonzero": params_nonzero,
        "params_other": params_total - (sum(c.numel for c in maskable) if maskable else params_dense),
        "density": params_nonzero / params_dense if params_dense else 1.0,
        "tensors": [asdict(c) for c in counts],
        "flops": {
            "forward_dense_per_token": f_dense,
            "forward_sparse_per_token": f_sparse,
            "train_per_token": per_token,
            "train_total": per_token * train_tokens_total,
            "test_per_token": f_sparse,
            "method": method,
        },
    }


def training_method(sparse_enabled: bool, death_rate: float, growth: str) -> str:
    """Which FLOPs formula applies to a run (spec §8)."""
    if not sparse_enabled:
        return "dense"
    if death_rate == 0.0:
        return "static"
    return growth if growth in ("momentum", "gradient") else "random"
