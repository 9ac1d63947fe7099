"""Sparse initialization: per-tensor densities (uniform, ER, ERK) and the Bernoulli mask draw (spec §2)."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

__all__ = ["INITS", "layer_densities", "nominal_nonzeros", "select_parameters", "draw_mask"]

Shapes = Mapping[str, Sequence[int]]


def _uniform(shapes: Shapes, density: float) -> dict[str, float]:
    """Every tensor at ``density`` (spec §2.3)."""
    return {name: float(density) for name in shapes}


def _er(shapes: Shapes, density: float) -> dict[str, float]:
    """SET's Erdos-Renyi: nonzeros of a tensor = eps * sum(shape), eps from the original multiplicative
    search (start 10, factor 0.5 shrinking by 0.95) until within +-5 of density * total (spec §2.4).

    The search can stall once its step has shrunk; after 10,000 iterations eps falls back to the
    closed form target / sum over tensors of sum(shape). Densities above 1 are clipped to 1 when drawn
    (the original did not clip, which draws the same all-ones mask).
    """
    total = sum(math.prod(s) for s in shapes.values())
    target = density * total
    perimeter = sum(sum(s) for s in shapes.values())
    epsilon, factor = 10.0, 0.5
    for _ in range(10_000):
        current = epsilon * perimeter
        if target - 5 < current < target + 5:
            break
        epsilon *= (1.0 - factor) if current > target else (1.0 + factor)
        factor *= 0.95
    else:
        epsilon = target / perimeter
    return {name: min(1.0, epsilon * sum(s) / math.prod(s)) for name, s in shapes.items()}


def _erk(shapes: Shapes, density: float, power: float = 1.0) -> dict[str, float]:
    """Erdos-Renyi-Kernel (RigL): density_l = eps * (sum dims / prod dims)^power, layers whose density
    would exceed 1 are made dense and eps is recomputed (spec §2.5)."""
    numel = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: (sum(s) / numel[n]) ** power for n, s in shapes.items()}
    dense: set[str] = set()
    while True:
        sparse = [n for n in shapes if n not in dense]
        if not sparse:
            return {n: 1.0 for n in shapes}
        budget = sum(density * numel[n] for n in sparse) - sum((1.0 - density) * numel[n] for n in dense)
        epsilon = budget / sum(raw[n] * numel[n] for n in sparse)
        too_dense = [n for n in sparse if epsilon * raw[n] > 1.0]
        if not too_dense:
            break
        dense.add(max(too_dense, key=lambda n: raw[n]))
    return {n: 1.0 if n in dense else epsilon * raw[n] for n in shapes}


INITS: dict[str, Callable[[Shapes, float], dict[str, float]]] = {"uniform": _uniform, "ER": _er, "ERK": _erk}


def layer_densities(shapes: Shapes, density: float, sparse_init: str = "uniform") -> dict[str, float]:
    """Target density per tensor name for an overall ``density`` over the given shapes."""
    if sparse_init not in INITS:
        raise ValueError(f"unknown sparse_init {sparse_init!r}; allowed: {', '.join(INITS)}")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    return INITS[sparse_init](shapes, density)


def nominal_nonzeros(shapes: Shapes, densities: Mapping[str, float]) -> float:
    """Expected nonzero count sum_l numel_l * density_l (spec §2.2)."""
    return sum(math.prod(shapes[n]) * densities[n] for n in shapes)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def select_parameters(
    model: nn.Module, include: Sequence[str] | None = None, exclude: Sequence[str] | None = None,
) -> dict[str, nn.Parameter]:
    """Parameters to mask, by fully qualified name (tied weights appear once, under their first name).

    Default: every parameter of 2+ dims whose name has no "bias" (spec §2.1). ``include``/``exclude``
    are fnmatch globs; with ``include`` only matching names are masked. 1-D parameters never are.
    """
    chosen: dict[str, nn.Parameter] = {}
    for name, param in model.named_parameters():
        if param.dim() < 2:
            continue
        if include is not None:
            if not _matches(name, include):
                continue
        elif "bias" in name:
            continue
        if exclude is not None and _matches(name, exclude):
            continue
        chosen[name] = param
    return chosen


def draw_mask(shape: torch.Size, density: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Bernoulli mask ``U[0,1) < density`` (bool, on ``device``)."""
    if density >= 1.0:
        return torch.ones(shape, dtype=torch.bool, device=device)
    return torch.rand(shape, generator=generator, device=device) < density
