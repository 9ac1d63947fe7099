"""The ``Masking`` facade: sparse masks for any ``nn.Module`` with prune-and-regrow (spec §2-§4, §8).

Composes a death criterion, a growth criterion, a redistribution rule and a death-rate schedule, and
keeps the original three-step recipe working::

    decay = CosineDecay(death_rate, T_max)
    mask = Masking(optimizer, death_rate=..., death_mode=..., death_rate_decay=decay,
                   growth_mode=..., redistribution_mode=..., model=...)
    mask.add_module(model, sparse_init=..., density=...)
    mask.step()            # in place of optimizer.step()
    mask.at_end_of_epoch()  # prune and regrow

Masks are bool tensors keyed by the fully qualified parameter name. Every random draw comes from a
generator seeded with crc32 of (seed, parameter name, update index, purpose), so a run resumed from
``state_dict()`` replays exactly.

Choices where the spec leaves room (or the original is loose):
- death removes exactly ceil(p N_nz) weights; ties at the threshold are broken at random (the original
  removed every tied weight, which only differs for active weights that are exactly 0);
- Bernoulli growth draws 16-bit numbers with a randomly rounded threshold: each candidate's marginal
  probability is exactly n / #candidates (see ``select.bernoulli_select``);
- after an update, weights *and* optimizer state survive only where a weight was active before and
  after (removed-then-regrown weights keep both, as in the original's ``W *= M`` and spec §5.2);
- ``UpdateStats.gates`` lists only tensors with more than one gate block; per-tensor entries also carry
  the realised ``death_rate`` (removed / nonzero_before).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .criteria import GrowthInputs, make_death, make_growth, n_to_remove
from .decay import ConstantDecay, DeathRateSchedule
from .initialization import draw_mask, layer_densities, nominal_nonzeros, select_parameters
from .layout import GateBlock, LayoutSpec, discover_layouts, resolve_blocks
from .redistribution import TensorCounts, make_redistribution
from .select import Workspace, count, make_generator
from .stats import UpdateStats, gate_entry, tensor_entry, total_entry

__all__ = ["Masking", "GROWTH_COUNTS", "OPTIMIZER_STATE_KEYS"]

GROWTH_COUNTS = ("bernoulli", "exact")
OPTIMIZER_STATE_KEYS = ("momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def _has_momentum(optimizer: torch.optim.Optimizer) -> bool:
    """True if some param group keeps a momentum (SGD momentum > 0) or Adam-style first moment."""
    for group in optimizer.param_groups:
        if float(group.get("momentum", 0.0) or 0.0) > 0.0 or "betas" in group:
            return True
    return False


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(f"mask invariant violated: {message}")


class Masking:
    """Dynamic sparse masks for the weights of a model (see module docstring; contracts.md)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        death_rate: float = 0.8,
        death_mode: str = "magnitude",
        growth_mode: str = "random",
        redistribution_mode: str = "none",
        death_rate_decay: DeathRateSchedule | None = None,
        model: Any = None,
        seed: int = 0,
        update_every: int | None = None,
        gate_layout: Mapping[str, LayoutSpec] | None = None,
        growth_count: str = "bernoulli",
        threshold: float = 1e-3,
        check_invariants: bool = True,
    ) -> None:
        """``model`` is the original's legacy string ("LSTM"/"RHN") and is ignored. ``threshold`` is the
        initial tau of ``death_mode="threshold"``. ``check_invariants`` adds two count passes per tensor
        and update that assert death only removes and growth only adds outside the survivors."""
        death_options = {"threshold": threshold} if death_mode == "threshold" else {}
        self.death = make_death(death_mode, **death_options)
        self.growth = make_growth(growth_mode)
        self.redistribution = make_redistribution(redistribution_mode)
        if growth_count not in GROWTH_COUNTS:
            raise ValueError(f"unknown growth_count {growth_count!r}; allowed: {', '.join(GROWTH_COUNTS)}")
        if update_every is not None and int(update_every) <= 0:
            raise ValueError(f"update_every must be a positive int or None, got {update_every}")
        self.death_mode, self.growth_mode, self.redistribution_mode = death_mode, growth_mode, redistribution_mode
        self.growth_count = growth_count
        self.check_invariants = bool(check_invariants)
        self.decay = death_rate_decay if death_rate_decay is not None else ConstantDecay(death_rate)
        self.seed = int(seed)
        self.update_every = None if update_every is None else int(update_every)
        self.gate_layout_override = dict(gate_layout or {})
        self.masks: dict[str, torch.Tensor] = {}
        self.params: dict[str, nn.Parameter] = {}
        self.blocks: dict[str, list[GateBlock]] = {}
        self.ever_active: dict[str, torch.Tensor] = {}
        self.baseline: dict[str, int] = {}
        self.target_density: dict[str, float] = {}
        self.update_index = 0
        self.steps = 0
        self.last_stats: UpdateStats | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        # scratch sized for the largest tensor, kept for the run: a float cast of a mask (steps without a
        # mask-aware optimizer), and for updates |W|, random bits and a bool buffer (about 7 bytes a weight)
        self._workspace = Workspace()
        self._count_cache: dict[str, tuple[torch.Tensor, int, list]] = {}  # counts of unmodified masks
        self.set_optimizer(optimizer)

    # ------------------------------------------------------------------ optimizer
    @property
    def needs_momentum(self) -> bool:
        return self.growth.needs_momentum or self.redistribution.needs_momentum

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self._optimizer

    @optimizer.setter
    def optimizer(self, optimizer: torch.optim.Optimizer) -> None:  # the original assigned it directly
        self.set_optimizer(optimizer)

    @property
    def mask_aware(self) -> bool:
        """The optimizer keeps masked entries 0 itself (has ``set_masks``)."""
        return hasattr(self._optimizer, "set_masks")

    def set_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Swap the optimizer (e.g. at the SGD -> ASGD switch) and give it the masks if mask-aware."""
        if self.needs_momentum and not _has_momentum(optimizer):
            raise ValueError(
                f"growth_mode={self.growth_mode!r} / redistribution_mode={self.redistribution_mode!r} need an "
                f"optimizer with momentum (SGD momentum > 0 or Adam), got {type(optimizer).__name__} without")
        self._optimizer = optimizer
        if self.masks:
            self._push_masks()

    def _push_masks(self) -> None:
        if self.mask_aware:
            self._optimizer.set_masks({self.params[n]: m for n, m in self.masks.items()})

    def _momentum(self, param: nn.Parameter) -> torch.Tensor:
        """SGD ``momentum_buffer``, else Adam ``exp_avg / (sqrt(exp_avg_sq) + eps)``, else zeros."""
        state = self._optimizer.state.get(param, {})
        buf = state.get("momentum_buffer")
        if buf is not None:
            return buf
        if "exp_avg" in state and "exp_avg_sq" in state:
            eps = next((g.get("eps", 1e-8) for g in self._optimizer.param_groups
                        if any(p is param for p in g["params"])), 1e-8)
            return state["exp_avg"] / (state["exp_avg_sq"].sqrt() + eps)
        return torch.zeros_like(param)

    def _multiply(self, param: nn.Parameter, keep: torch.Tensor, optimizer_state: bool) -> None:
        """W *= keep, and the same for the optimizer's momentum/Adam buffers if ``optimizer_state``."""
        factor = self._workspace.as_float(keep, param)
        param.data.mul_(factor)
        if not optimizer_state:
            return
        state = self._optimizer.state.get(param, {})
        for key in OPTIMIZER_STATE_KEYS:
            buf = state.get(key)
            if isinstance(buf, torch.Tensor) and buf.shape == keep.shape:
                buf.mul_(factor if buf.dtype == factor.dtype else keep)

    # ------------------------------------------------------------------ building
    def add_module(self, module: nn.Module, density: float = 0.33, sparse_init: str = "uniform",
                   include: Sequence[str] | None = None, exclude: Sequence[str] | None = None) -> None:
        """Create masks for ``module``'s weights (spec §2) and zero the masked entries.

        Default: every parameter with 2+ dims whose name lacks "bias"; ``include``/``exclude`` are fnmatch
        globs. Densities per tensor come from ``sparse_init`` ("uniform" | "ER" | "ERK").
        """
        chosen = select_parameters(module, include, exclude)
        clash = sorted(set(chosen) & set(self.masks))
        if clash:
            raise ValueError(f"parameters already masked: {clash}")
        if not chosen:
            raise ValueError("add_module found no parameter to mask (check include/exclude)")
        all_names = dict(module.named_parameters())
        unknown = sorted(set(self.gate_layout_override) - set(all_names) - set(self.masks))
        if unknown:
            raise ValueError(f"gate_layout names unknown parameters {unknown}; known: {sorted(all_names)}")
        if self.needs_momentum:
            self._check_momentum_groups(chosen)
        names_by_id = {id(p): n for n, p in all_names.items()}
        layouts = {**discover_layouts(module, names_by_id), **self.gate_layout_override}
        densities = layer_densities({n: tuple(p.shape) for n, p in chosen.items()}, density, sparse_init)
        self.nominal_nonzeros = nominal_nonzeros({n: tuple(p.shape) for n, p in chosen.items()}, densities)
        with torch.no_grad():
            for name, param in chosen.items():
                self.blocks[name] = resolve_blocks(name, param.shape[0], layouts.get(name))
                gen = make_generator(param.device, self.seed, name, "init")
                mask = draw_mask(param.shape, densities[name], gen, param.device)
                self.params[name] = param
                self.masks[name] = mask
                self.target_density[name] = densities[name]
                self.ever_active[name] = mask.clone()
                self._multiply(param, mask, optimizer_state=True)
        self._push_masks()

    def _check_momentum_groups(self, params: Mapping[str, nn.Parameter]) -> None:
        """Every masked parameter must sit in a param group with momentum (or Adam betas)."""
        group_of = {id(p): g for g in self._optimizer.param_groups for p in g["params"]}
        lacking = [n for n, p in params.items() if id(p) in group_of and not (
            float(group_of[id(p)].get("momentum", 0.0) or 0.0) > 0.0 or "betas" in group_of[id(p)])]
        if lacking:
            raise ValueError(f"growth_mode={self.growth_mode!r} / redistribution_mode={self.redistribution_mode!r} "
                             f"need momentum, but these parameters are in param groups without it: {lacking}")

    # ------------------------------------------------------------------ training-time calls
    @property
    def death_rate(self) -> float:
        """Current death rate p_t of the schedule."""
        return self.decay.get_dr()

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Clip the optimizer's gradients to total L2 norm ``max_norm``, as ``torch.nn.utils.clip_grad_norm_``.

        With a mask-aware optimizer that offers it (``SparseSGD``, ``SNTASGD``), the clip's rescale pass also
        multiplies the gradients by the masks, and the next :meth:`step` skips its own mask pass: the same
        update with one pass fewer over the weights. Not with gradient growth, which reads the dense
        ``.grad`` of the epoch's last batch (spec §3.4): then torch's clip. Returns the total norm.
        """
        clip = getattr(self._optimizer, "clip_grad_norm_", None)
        if self.mask_aware and clip is not None and not self.growth.needs_gradient:
            return clip(max_norm)
        params = [p for group in self._optimizer.param_groups for p in group["params"]]
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def step(self) -> None:
        """``optimizer.step()``, keep masked entries 0, step the decay; maybe update (``update_every``)."""
        self._optimizer.step()
        if not self.mask_aware:
            self.apply_masks()
        self.decay.step()
        self.steps += 1
        if self.update_every is not None and self.steps % self.update_every == 0:
            self.last_stats = self.update()

    @torch.no_grad()
    def apply_masks(self) -> None:
        """W *= M and the same for the optimizer's momentum/Adam buffers."""
        for name, mask in self.masks.items():
            self._multiply(self.params[name], mask, optimizer_state=True)

    def at_end_of_epoch(self) -> UpdateStats | None:
        """Prune and regrow now (once-per-epoch mode); None when ``update_every`` is set."""
        if self.update_every is not None:
            return None
        self.last_stats = self.update()
        return self.last_stats

    # ------------------------------------------------------------------ the update
    def _generator(self, name: str, purpose: str) -> torch.Generator:
        return make_generator(self.params[name].device, self.seed, name, self.update_index, purpose)

    @torch.no_grad()
    def update(self) -> UpdateStats:
        """One prune-and-regrow update of every mask (spec §3.6); returns its statistics.

        Death edits the masks, growth adds positions among the zeros of the post-death mask (so
        just-removed positions are candidates), then weights and optimizer state are kept where a weight
        was active before and after: removed weights become 0, newly grown ones start at 0, removed and
        regrown ones keep their value (spec §3.5). With a mask-aware optimizer that is its ``set_masks``
        (W *= M_new, the same thing since it keeps W = 0 off the old mask), so the update makes no pass
        over the weights of its own.
        """
        rate = self.death_rate
        names = list(self.masks)
        before = {n: self.masks[n] for n in names}
        gates_before = self._gate_counts(before)
        nonzero_before = {n: sum(g) for n, g in gates_before.items()}
        for n in names:
            self.baseline.setdefault(n, nonzero_before[n])

        momentum = {n: (lambda p=self.params[n]: self._momentum(p)) for n in names}
        raw_scores = {n: self.redistribution.score(self.params[n], before[n], momentum[n]) for n in names}
        scores = {n: float(s) for n, s in raw_scores.items() if s is not None}

        workspace = self._workspace
        after_death = {
            n: self.death.prune(self.params[n], before[n], nonzero_before[n], rate, self.blocks[n],
                                self._generator(n, "death"), workspace)
            for n in names
        }
        gates_after_death = self._gate_counts(after_death)
        counts = {n: TensorCounts(before[n].numel(), nonzero_before[n], sum(gates_after_death[n]),
                                  self.baseline[n]) for n in names}
        regrow = self.redistribution.regrow(counts, scores)

        exact = self.growth_count == "exact"
        new_masks, pending = {}, []
        for n in names:
            candidates = ~after_death[n]
            inputs = GrowthInputs(self.params[n], momentum[n], self._generator(n, "growth"), exact, workspace)
            grown = self.growth.grow(candidates, counts[n].candidates, regrow[n], self.blocks[n], inputs)
            new = after_death[n] | grown
            if not self.mask_aware:
                self._multiply(self.params[n], before[n] & new, optimizer_state=True)
            self.ever_active[n] |= new
            new_masks[n] = new
            pending.append(self._count_update(n, before[n], after_death[n], grown, new))

        values = torch.cat(pending).tolist()
        stats = self._build_stats(names, values, counts, gates_before, gates_after_death, regrow, exact, rate,
                                  new_masks)
        self.masks.update(new_masks)
        removed = sum(c.removed for c in counts.values())
        expected = sum(n_to_remove(rate, c.nonzero_before) for c in counts.values())
        self.death.end_update(removed, expected)
        self.redistribution.end_update(counts, {n: stats.tensors[n]["nonzero_after"] for n in names})
        self.update_index += 1
        self._push_masks()
        return stats

    # ------------------------------------------------------------------ counting
    def _remember_counts(self, key: str, mask: torch.Tensor, values: list) -> None:
        """Cache counts of ``mask``, valid while it is the same tensor, unmodified (``_version``)."""
        self._count_cache[key] = (mask, mask._version, values)

    def _cached_counts(self, key: str, mask: torch.Tensor) -> list | None:
        cached = self._count_cache.get(key)
        if cached is not None and cached[0] is mask and cached[1] == mask._version:
            return cached[2]
        return None

    def _block_counts(self, name: str, mask: torch.Tensor) -> torch.Tensor:
        """Nonzeros per gate block of ``mask`` as a 1-d int64 tensor (no host sync)."""
        blocks = self.blocks[name]
        if len(blocks) == 1:
            return count(mask).reshape(1)
        return torch.stack([count(mask[b.start:b.stop]) for b in blocks])

    def _gate_counts(self, masks: Mapping[str, torch.Tensor]) -> dict[str, list[int]]:
        """Nonzeros per gate block of every mask, with one host sync (current masks: cached from the
        update that made them, as long as they are unmodified)."""
        out: dict[str, list[int]] = {}
        missing = []
        for n, m in masks.items():
            cached = self._cached_counts(n, m) if self.masks.get(n) is m else None
            if cached is not None:
                out[n] = list(cached)
            else:
                missing.append(n)
        if missing:
            values = torch.cat([self._block_counts(n, masks[n]) for n in missing]).tolist()
            i = 0
            for n in missing:
                g = len(self.blocks[n])
                out[n] = values[i:i + g]
                i += g
                if self.masks.get(n) is masks[n]:
                    self._remember_counts(n, masks[n], out[n])
        return {n: out[n] for n in masks}

    def _count_update(self, name: str, before, after_death, grown, new) -> torch.Tensor:
        """Counts of one tensor's update as a 1-d tensor, gathered for one host sync: nonzeros of the new
        mask per gate, regrown-just-removed (|grown & before|), the ever-active count and, with
        ``check_invariants``, |grown| and |after death & before|. Per-gate regrowth is derived as
        new - after death (growth adds only outside the survivors: checked with |grown|)."""
        scratch = self._workspace.like(new, "bool")
        out = [self._block_counts(name, new),
               count(torch.bitwise_and(grown, before, out=scratch)).reshape(1),
               count(self.ever_active[name]).reshape(1)]
        if self.check_invariants:
            out += [count(grown).reshape(1), count(torch.bitwise_and(after_death, before, out=scratch)).reshape(1)]
        return torch.cat(out)

    def _build_stats(self, names, values, counts, gates_before, gates_after_death, regrow, exact, rate,
                     new_masks) -> UpdateStats:
        """Stats from the gathered counts; also caches the counts of the new masks and ever-active sets."""
        stats = UpdateStats(update=self.update_index + 1, step=self.steps, death_rate=rate)
        entries = []
        ever_total = 0
        i = 0
        for n in names:
            blocks = self.blocks[n]
            c = counts[n]
            new_per_gate = values[i:i + len(blocks)]
            i += len(blocks)
            jr, ever = values[i:i + 2]
            i += 2
            ad = c.nonzero_after_death
            a = sum(new_per_gate)
            g = a - ad  # growth adds only outside the survivors (checked below)
            if self.check_invariants:
                grown_count, after_within_before = values[i: i + 2]
                i += 2
                _check(after_within_before == ad, f"{n}: death added positions")
                _check(grown_count == g, f"{n}: grown positions overlap the surviving ones")
            _check(g <= c.candidates, f"{n}: grew more than the candidates")
            if exact:
                _check(g == regrow[n], f"{n}: grew {g}, asked for exactly {regrow[n]}")
            entry = tensor_entry(c.nonzero_before, ad, g, jr, a, c.numel, ever)
            stats.tensors[n] = entry
            entries.append(entry)
            ever_total += ever
            self._remember_counts(n, new_masks[n], new_per_gate)
            self._remember_counts(f"ever:{n}", self.ever_active[n], [ever])
            if len(blocks) > 1:
                width = c.numel // self.params[n].shape[0]
                stats.gates[n] = {
                    blk.name: gate_entry(b, d, na - d, na, (blk.stop - blk.start) * width)
                    for blk, b, d, na in zip(blocks, gates_before[n], gates_after_death[n], new_per_gate, strict=True)
                }
        stats.total = total_entry(entries, ever_total)
        return stats

    # ------------------------------------------------------------------ queries
    def density(self) -> float:
        """Nonzero fraction over all masked tensors."""
        nnz = sum(sum(g) for g in self._gate_counts(self.masks).values())
        numel = sum(m.numel() for m in self.masks.values())
        return nnz / numel if numel else 0.0

    def exploration_rate(self) -> float:
        """|ever active| / numel over all masked tensors (ITOP rate, spec §8)."""
        ever = sum(self._ever_count(n) for n in self.ever_active)
        numel = sum(m.numel() for m in self.ever_active.values())
        return ever / numel if numel else 0.0

    def _ever_count(self, name: str) -> int:
        """|ever active| of one tensor (cached while the set is unmodified)."""
        ever = self.ever_active[name]
        cached = self._cached_counts(f"ever:{name}", ever)
        if cached is None:
            cached = [int(count(ever))]
            self._remember_counts(f"ever:{name}", ever, cached)
        return cached[0]

    def snapshot(self) -> dict[str, Any]:
        """Current densities in the stats shape (keys ``nonzero``, ``numel``, ``density``,
        ``exploration_rate``; gates: ``nonzero``, ``numel``, ``density``)."""
        out: dict[str, Any] = {"update": self.update_index, "step": self.steps, "death_rate": self.death_rate,
                               "total": {}, "tensors": {}, "gates": {}}
        nnz_total = numel_total = ever_total = 0
        gate_counts = self._gate_counts(self.masks)
        for n, mask in self.masks.items():
            blocks = self.blocks[n]
            per_gate = gate_counts[n]
            nnz, numel, ever = sum(per_gate), mask.numel(), self._ever_count(n)
            out["tensors"][n] = {"nonzero": nnz, "numel": numel, "density": nnz / numel,
                                 "exploration_rate": ever / numel}
            if len(blocks) > 1:
                width = numel // mask.shape[0]
                out["gates"][n] = {b.name: {"nonzero": k, "numel": (b.stop - b.start) * width,
                                            "density": k / ((b.stop - b.start) * width)}
                                   for b, k in zip(blocks, per_gate, strict=True)}
            nnz_total, numel_total, ever_total = nnz_total + nnz, numel_total + numel, ever_total + ever
        out["total"] = {"nonzero": nnz_total, "numel": numel_total,
                        "density": nnz_total / numel_total if numel_total else 0.0,
                        "exploration_rate": ever_total / numel_total if numel_total else 0.0}
        return out

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Masks, ever-active union, baselines, counters, schedule and criteria state (plain values)."""
        return {
            "masks": {n: m.clone() for n, m in self.masks.items()},
            "ever_active": {n: m.clone() for n, m in self.ever_active.items()},
            "baseline": dict(self.baseline),
            "update_index": self.update_index,
            "steps": self.steps,
            "seed": self.seed,
            "decay": self.decay.state_dict(),
            "death": self.death.state_dict(),
            "redistribution": self.redistribution.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from ``state_dict()``; the same parameters must have been added with ``add_module``."""
        names = set(state["masks"])
        if names != set(self.masks):
            raise ValueError(f"mask names differ: saved {sorted(names)}, current {sorted(self.masks)}")
        for n, saved in state["masks"].items():
            if saved.shape != self.masks[n].shape:
                raise ValueError(f"mask {n!r}: saved shape {tuple(saved.shape)} != {tuple(self.masks[n].shape)}")
            device = self.params[n].device
            self.masks[n] = saved.to(device=device, dtype=torch.bool).clone()
            self.ever_active[n] = state["ever_active"][n].to(device=device, dtype=torch.bool).clone()
        self.baseline = {n: int(v) for n, v in state["baseline"].items()}
        self.update_index = int(state["update_index"])
        self.steps = int(state["steps"])
        self.seed = int(state["seed"])
        self.decay.load_state_dict(state["decay"])
        self.death.load_state_dict(state["death"])
        self.redistribution.load_state_dict(state["redistribution"])
        self._push_masks()
