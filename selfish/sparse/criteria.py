"""Death and growth criteria: *which* weights leave and enter a mask (spec §3.2, §3.4).

Criteria are small classes with one job; ``DEATHS``/``GROWTHS`` map the spec strings to them and
``make_death``/``make_growth`` reject unknown names. How many weights move is decided elsewhere
(death rate schedule, ``redistribution``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .layout import GateBlock
from .select import (
    Workspace,
    _abs,
    bernoulli_select,
    count,
    drop_smallest,
    fix_count,
    select_largest,
    select_smallest,
)

__all__ = [
    "DeathCriterion", "MagnitudeDeath", "MagnitudeRNNDeath", "SETDeath", "ThresholdDeath",
    "GrowthInputs", "GrowthCriterion", "RandomGrowth", "RandomRNNGrowth", "GradientGrowth",
    "MomentumGrowth", "DEATHS", "GROWTHS", "make_death", "make_growth",
]


def _neg_abs(t: torch.Tensor, workspace: Workspace | None) -> torch.Tensor:
    return t.abs().neg_() if workspace is None else workspace.neg_abs(t)


def n_to_remove(death_rate: float, nonzero: int) -> int:
    """ceil(p * N_nz), the original count of weights to remove (spec §3.2)."""
    return min(nonzero, math.ceil(death_rate * nonzero - 1e-9))


class DeathCriterion:
    """Returns the mask after death: a subset of ``mask``."""

    needs_momentum = False

    def prune(self, weight: torch.Tensor, mask: torch.Tensor, nonzero: int, death_rate: float,
              blocks: Sequence[GateBlock], generator: torch.Generator,
              workspace: Workspace | None = None) -> torch.Tensor:
        raise NotImplementedError

    def end_update(self, removed: int, expected: int) -> None:
        """Called once per update with the total removed and the total ceil(p N_nz) over tensors."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class MagnitudeDeath(DeathCriterion):
    """Remove the ceil(p N_nz) smallest |W| of the **whole tensor**, all gates competing ("cell weight
    redistribution", the Selfish default, spec §3.2). Exactly that many are removed: ties at the
    threshold are broken at random (the original removed all ties, which only matters for active
    weights that are exactly 0)."""

    def prune(self, weight, mask, nonzero, death_rate, blocks, generator, workspace=None):
        k = n_to_remove(death_rate, nonzero)
        return drop_smallest(_abs(weight.detach(), workspace), mask, k, generator, nonzero, workspace)


class MagnitudeRNNDeath(DeathCriterion):
    """Magnitude death per gate block, ceil(p N_nz,g) in every gate, so every gate keeps its density
    when growth is per gate too (``magnitude_rnn``; inferred meaning, spec §3.2)."""

    def prune(self, weight, mask, nonzero, death_rate, blocks, generator, workspace=None):
        magnitude = _abs(weight.detach(), workspace)
        after = mask.clone()
        for block in blocks:
            rows = slice(block.start, block.stop)
            block_nonzero = int(count(mask[rows]))
            k = n_to_remove(death_rate, block_nonzero)
            removed = select_smallest(magnitude[rows], mask[rows], k, generator, block_nonzero, workspace)
            after[rows] &= ~removed
        return after


class SETDeath(DeathCriterion):
    """SET's intended rule: about half of ceil(p N_nz) from the smallest non-negative weights and half
    from the negative weights closest to zero (spec §3.2; the original removed the *most* negative ones,
    a bug not reproduced). If one side runs short, the other side takes the rest."""

    def prune(self, weight, mask, nonzero, death_rate, blocks, generator, workspace=None):
        w = weight.detach()
        k = n_to_remove(death_rate, nonzero)
        positive = mask & (w >= 0)
        negative = mask & (w < 0)
        n_pos = int(count(positive))
        n_neg = nonzero - n_pos
        k_pos = min(n_pos, math.ceil(k / 2))
        k_neg = min(n_neg, k - k_pos)
        k_pos = min(n_pos, k - k_neg)
        removed = select_smallest(w, positive, k_pos, generator, n_pos)
        removed |= select_largest(w, negative, k_neg, generator, n_neg)
        return mask ^ removed


class ThresholdDeath(DeathCriterion):
    """Remove every active |W| <= tau (DSR-like). tau starts at ``threshold`` and is doubled when the
    update removed fewer than (1 - tolerance) x the expected sum ceil(p N_nz), halved when it removed
    more than (1 + tolerance) x (spec §3.2). tau is part of the state."""

    def __init__(self, threshold: float = 1e-3, tolerance: float = 0.02) -> None:
        self.threshold = float(threshold)
        self.tolerance = float(tolerance)

    def prune(self, weight, mask, nonzero, death_rate, blocks, generator, workspace=None):
        return mask & (_abs(weight.detach(), workspace) > self.threshold)

    def end_update(self, removed: int, expected: int) -> None:
        if removed < (1.0 - self.tolerance) * expected:
            self.threshold *= 2.0
        elif removed > (1.0 + self.tolerance) * expected:
            self.threshold *= 0.5

    def state_dict(self) -> dict:
        return {"threshold": self.threshold}

    def load_state_dict(self, state: dict) -> None:
        self.threshold = float(state["threshold"])


@dataclass
class GrowthInputs:
    """What a growth criterion may look at for one tensor."""

    param: torch.nn.Parameter
    momentum: Callable[[], torch.Tensor]  # |momentum|-like score source, same shape as param
    generator: torch.Generator
    exact: bool  # growth_count == "exact"
    workspace: Workspace | None = None


class GrowthCriterion:
    """Returns the grown positions: a subset of ``candidates`` (the zeros of the post-death mask)."""

    needs_momentum = False
    needs_gradient = False

    def grow(self, candidates: torch.Tensor, n_candidates: int, n_grow: int, blocks: Sequence[GateBlock],
             inputs: GrowthInputs) -> torch.Tensor:
        raise NotImplementedError


def _random_block(candidates, n_candidates, n_grow, inputs: GrowthInputs) -> torch.Tensor:
    n_grow = max(0, min(n_grow, n_candidates))
    if n_candidates == 0 or n_grow == 0:
        return torch.zeros_like(candidates)
    grown = bernoulli_select(candidates, n_grow / n_candidates, inputs.generator, inputs.workspace)
    if inputs.exact:
        grown = fix_count(grown, candidates, n_grow, inputs.generator, n_candidates)
    return grown


class RandomGrowth(GrowthCriterion):
    """Each candidate on with probability n_grow / #candidates over the whole tensor (SET growth, spec
    §3.4); ``exact`` corrects the realised count to exactly n_grow."""

    def grow(self, candidates, n_candidates, n_grow, blocks, inputs):
        return _random_block(candidates, n_candidates, n_grow, inputs)


class RandomRNNGrowth(GrowthCriterion):
    """Random growth with an equal share of n_grow per gate block (``random_rnn``; inferred meaning,
    spec §3.4). The remainder goes to randomly chosen gates; a gate without enough candidates passes
    its surplus to the others."""

    def grow(self, candidates, n_candidates, n_grow, blocks, inputs):
        slices = [slice(b.start, b.stop) for b in blocks]
        room = [int(count(candidates[s])) for s in slices]
        shares = equal_shares(min(n_grow, sum(room)), room, inputs.generator)
        grown = torch.zeros_like(candidates)
        for s, n_room, share in zip(slices, room, shares, strict=True):
            grown[s] = _random_block(candidates[s], n_room, share, inputs)
        return grown


def equal_shares(total: int, room: Sequence[int], generator: torch.Generator) -> list[int]:
    """Split ``total`` into near-equal integer shares capped by ``room``; leftovers go to blocks with room."""
    shares = [0] * len(room)
    remaining = total
    while remaining > 0:
        open_blocks = [i for i in range(len(room)) if shares[i] < room[i]]
        if not open_blocks:
            break
        base, extra = divmod(remaining, len(open_blocks))
        order = torch.randperm(len(open_blocks), generator=generator, device=generator.device).tolist()
        lucky = {open_blocks[j] for j in order[:extra]}
        for i in open_blocks:
            add = min(base + (1 if i in lucky else 0), room[i] - shares[i])
            shares[i] += add
            remaining -= add
    return shares


class GradientGrowth(GrowthCriterion):
    """RigL: the n_grow candidates with the largest |grad|, from the ``.grad`` left on the parameter by
    the last backward pass (spec §3.4)."""

    needs_gradient = True

    def grow(self, candidates, n_candidates, n_grow, blocks, inputs):
        grad = inputs.param.grad
        if grad is None:
            raise ValueError("gradient growth needs the .grad of every masked parameter, but it is None "
                             "(was zero_grad(set_to_none=True) called before the update?)")
        return select_smallest(_neg_abs(grad.detach(), inputs.workspace), candidates, n_grow, inputs.generator,
                               n_candidates, inputs.workspace)


class MomentumGrowth(GrowthCriterion):
    """SNFS: the n_grow candidates with the largest |momentum| (SGD momentum buffer or Adam
    exp_avg / (sqrt(exp_avg_sq) + eps)) (spec §3.4)."""

    needs_momentum = True

    def grow(self, candidates, n_candidates, n_grow, blocks, inputs):
        return select_smallest(_neg_abs(inputs.momentum(), inputs.workspace), candidates, n_grow,
                               inputs.generator, n_candidates, inputs.workspace)


DEATHS: dict[str, type[DeathCriterion]] = {
    "magnitude": MagnitudeDeath,
    "magnitude_rnn": MagnitudeRNNDeath,
    "SET": SETDeath,
    "threshold": ThresholdDeath,
}
GROWTHS: dict[str, type[GrowthCriterion]] = {
    "random": RandomGrowth,
    "random_rnn": RandomRNNGrowth,
    "gradient": GradientGrowth,
    "momentum": MomentumGrowth,
}


def make_death(name: str, **options) -> DeathCriterion:
    """Death criterion by spec name; unknown names raise ``ValueError`` listing the allowed ones."""
    if name not in DEATHS:
        raise ValueError(f"unknown death_mode {name!r}; allowed: {', '.join(DEATHS)}")
    return DEATHS[name](**options)


def make_growth(name: str) -> GrowthCriterion:
    """Growth criterion by spec name; unknown names raise ``ValueError`` listing the allowed ones."""
    if name not in GROWTHS:
        raise ValueError(f"unknown growth_mode {name!r}; allowed: {', '.join(GROWTHS)}")
    return GROWTHS[name]()
