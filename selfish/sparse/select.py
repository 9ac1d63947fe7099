"""Selection primitives on flat tensors: k smallest among candidates, Bernoulli draws, exact counts.

Everything here works on tensors of any shape (read as flat, contiguous), never loops over elements in
Python and draws randomness only from the ``torch.Generator`` it is given. These are the hot paths of a
mask update (spec §3.2, §3.4), written to read each tensor only a few times.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable

import torch

__all__ = [
    "Workspace",
    "make_generator",
    "stable_seed",
    "count",
    "kth_smallest",
    "select_smallest",
    "drop_smallest",
    "select_largest",
    "bernoulli_select",
    "sample_from",
    "fix_count",
]

_SAMPLE_SIZE = 1 << 16  # elements read (strided) to bracket a quantile


class Workspace:
    """Reusable scratch buffers (one per key, sized for the largest tensor), so large temporaries are
    allocated and page-faulted once instead of once per tensor and call."""

    def __init__(self) -> None:
        self._buffers: dict[tuple, torch.Tensor] = {}

    def like(self, t: torch.Tensor, key: str = "float") -> torch.Tensor:
        """An uninitialised tensor with the shape, dtype and device of ``t``."""
        slot = (key, t.dtype, t.device)
        buf = self._buffers.get(slot)
        if buf is None or buf.numel() < t.numel():
            buf = torch.empty(t.numel(), dtype=t.dtype, device=t.device)
            self._buffers[slot] = buf
        return buf[: t.numel()].view(t.shape)

    def release(self, key: str) -> None:
        """Free the buffers stored under ``key``."""
        for slot in [s for s in self._buffers if s[0] == key]:
            del self._buffers[slot]

    def abs(self, t: torch.Tensor) -> torch.Tensor:
        """|t| written into a scratch buffer."""
        return torch.abs(t, out=self.like(t, "abs"))

    def as_float(self, mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``mask`` cast to ``like``'s dtype in a scratch buffer (a float multiply is ~2x faster than
        multiplying by a bool tensor, which allocates its own cast)."""
        return self.like(like, "cast").copy_(mask)

    def neg_abs(self, t: torch.Tensor) -> torch.Tensor:
        """-|t| written into a scratch buffer."""
        return self.abs(t).neg_()


def _abs(t: torch.Tensor, workspace: Workspace | None) -> torch.Tensor:
    return t.abs() if workspace is None else workspace.abs(t)


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` via crc32 (stable across processes, unlike ``hash()``)."""
    text = "\x1f".join(str(p) for p in parts).encode()
    hi = zlib.crc32(text)
    lo = zlib.crc32(text[::-1] + b"\x00")
    return ((hi << 31) ^ lo) & ((1 << 63) - 1)


def make_generator(device: torch.device, *parts: object) -> torch.Generator:
    """A generator on ``device`` seeded with ``stable_seed(*parts)``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(stable_seed(*parts))
    return gen


def count(mask: torch.Tensor) -> torch.Tensor:
    """Number of True entries as a 0-d int64 tensor (no host sync)."""
    return torch.count_nonzero(mask)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1)


def kth_smallest(values: torch.Tensor, candidates: torch.Tensor, k: int, n_candidates: int) -> torch.Tensor:
    """The k-th smallest (1-based) of ``values[candidates]`` as a 0-d tensor (see ``_kth_and_rank``)."""
    return _kth_and_rank(values, candidates, k, n_candidates)[0]


def _kth_and_rank(values: torch.Tensor, candidates: torch.Tensor, k: int, n_candidates: int
                  ) -> tuple[torch.Tensor, int, torch.Tensor | None]:
    """(t, n, ties) with t the k-th smallest of ``values[candidates]``, n = #candidates with value <= t and
    ``ties`` the sorted flat indices of the candidates equal to t (None when not at hand).

    Brackets the quantile from a strided sample of about 65k elements, then runs ``kthvalue`` only on
    the candidates inside the bracket (a few percent of them); falls back to the full ``kthvalue`` when
    the bracket misses. Six passes over the tensor (two compares, two ands, one xor, one nonzero) plus
    two counts; the ties come from the bracket for free. ``1 <= k <= n_candidates`` (= ``count(candidates)``).
    """
    v, c = _flat(values), _flat(candidates)
    numel = v.numel()
    stride = max(1, numel // _SAMPLE_SIZE)
    if stride > 1 and n_candidates > 4 * _SAMPLE_SIZE:
        sample = v[::stride][c[::stride]]
        m = sample.numel()
        if m >= 256:
            sample = torch.sort(sample).values
            q = (k - 0.5) / n_candidates
            delta = 6.0 * math.sqrt(max(q * (1.0 - q), 1.0 / m) / m) + 2.0 / m
            i_lo, i_hi = math.floor((q - delta) * m), math.ceil((q + delta) * m)
            lo = sample[i_lo] if i_lo >= 0 else None
            hi = sample[i_hi] if i_hi < m else None
            inside = c.clone() if hi is None else torch.le(v, hi).bitwise_and_(c)
            n_at_most_hi = n_candidates if hi is None else int(count(inside))
            n_below = 0
            if lo is not None:
                below = torch.lt(v, lo).bitwise_and_(c)  # subset of inside since lo <= hi
                n_below = int(count(below))
                inside.bitwise_xor_(below)
            if n_below < k <= n_at_most_hi:
                index = torch.nonzero(inside).squeeze(1)
                bracket = v[index]
                t = torch.kthvalue(bracket, k - n_below).values
                at_most_t = bracket <= t
                return t, n_below + int(count(at_most_t)), index[bracket == t]
    active = v[c]
    t = torch.kthvalue(active, k).values
    return t, int(count(active <= t)), None


def _surplus_ties(values: torch.Tensor, candidates: torch.Tensor, t: torch.Tensor, ties: torch.Tensor | None,
                  surplus: int, generator: torch.Generator) -> torch.Tensor:
    """``surplus`` positions drawn uniformly from the candidates equal to ``t``: flat indices when the
    ties are at hand and few (the same draw ``sample_from`` makes on such a pool), else a bool tensor."""
    if ties is not None and ties.numel() <= (1 << 16):
        order = torch.randperm(ties.numel(), generator=generator, device=ties.device)
        return ties[order[:surplus]]
    return sample_from(candidates & (values == t), surplus, generator)


def _set(mask: torch.Tensor, positions: torch.Tensor, value: bool) -> torch.Tensor:
    """``mask`` with ``positions`` (flat indices or a bool tensor like ``mask``) set to ``value``."""
    if positions.dtype == torch.bool:
        return mask | positions if value else mask & ~positions
    mask.view(-1)[positions] = value
    return mask


def select_smallest(
    values: torch.Tensor, candidates: torch.Tensor, k: int, generator: torch.Generator,
    n_candidates: int | None = None,
) -> torch.Tensor:
    """Exactly ``k`` candidate positions with the smallest ``values`` (ties broken at random).

    Returns a bool tensor shaped like ``values``. ``k`` is clamped to [0, #candidates].
    """
    n = int(count(candidates)) if n_candidates is None else n_candidates
    k = max(0, min(int(k), n))
    if k == 0:
        return torch.zeros_like(candidates)
    if k == n:
        return candidates.clone()
    t, n_at_most_t, ties = _kth_and_rank(values, candidates, k, n)
    chosen = torch.le(values, t).bitwise_and_(candidates).view(candidates.shape)
    surplus = n_at_most_t - k
    if surplus > 0:  # ties at t: drop `surplus` of them at random
        chosen = _set(chosen, _surplus_ties(values, candidates, t, ties, surplus, generator), False)
    return chosen


def drop_smallest(
    values: torch.Tensor, candidates: torch.Tensor, k: int, generator: torch.Generator,
    n_candidates: int | None = None,
) -> torch.Tensor:
    """``candidates`` without the ``k`` positions ``select_smallest`` would choose (same draws, same
    result as ``candidates ^ select_smallest(...)``, one pass less)."""
    n = int(count(candidates)) if n_candidates is None else n_candidates
    k = max(0, min(int(k), n))
    if k == 0:
        return candidates.clone()
    if k == n:
        return torch.zeros_like(candidates)
    t, n_at_most_t, ties = _kth_and_rank(values, candidates, k, n)
    kept = torch.gt(values, t).bitwise_and_(candidates).view(candidates.shape)
    surplus = n_at_most_t - k
    if surplus > 0:  # ties at t: `surplus` of them stay
        kept = _set(kept, _surplus_ties(values, candidates, t, ties, surplus, generator), True)
    return kept


def select_largest(
    values: torch.Tensor, candidates: torch.Tensor, k: int, generator: torch.Generator,
    n_candidates: int | None = None,
) -> torch.Tensor:
    """Exactly ``k`` candidate positions with the largest ``values`` (ties broken at random)."""
    return select_smallest(values.neg(), candidates, k, generator, n_candidates)


def bernoulli_select(candidates: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """Each candidate independently True with probability ``probability`` (marginally exact).

    Uses 16 random bits per element (one int64 draw per four elements). The 16-bit threshold is
    rounded up or down at random once per call so that the marginal probability is exactly
    ``probability``; this correlates the draws within one call only through that single coin.
    """
    if probability <= 0.0:
        return torch.zeros_like(candidates)
    if probability >= 1.0:
        return candidates.clone()
    numel = candidates.numel()
    n64 = (numel + 3) // 4
    bits = torch.empty(n64, dtype=torch.int64, device=candidates.device)
    bits.random_(-(2**63), None, generator=generator)
    r16 = bits.view(torch.int16)[:numel].view(candidates.shape)
    scaled = probability * 65536.0
    level = math.floor(scaled)
    coin = torch.rand((), generator=generator, device=candidates.device).item()
    if coin < scaled - level:
        level += 1
    if level >= 65536:
        return candidates.clone()
    return candidates & (r16 < (level - 32768))


def sample_from(pool: torch.Tensor, m: int, generator: torch.Generator) -> torch.Tensor:
    """``m`` positions drawn uniformly without replacement from the True entries of ``pool``.

    Small pools use ``nonzero``; a small ``m`` from a large pool draws random flat indices and keeps
    the hits; a large ``m`` is a Bernoulli draw corrected by ``fix_count``. Returns a bool tensor shaped
    like ``pool``.
    """
    flat = _flat(pool)
    n_pool = int(count(flat))
    m = max(0, min(int(m), n_pool))
    if m == n_pool:
        return pool.clone()
    if n_pool > (1 << 16) and m > n_pool // 8:
        return fix_count(bernoulli_select(pool, m / n_pool, generator), pool, m, generator, n_pool)
    out = torch.zeros_like(flat)
    if m:
        out[_draw_indices(lambda idx: flat[idx], flat, n_pool, m, generator)] = True
    return out.view(pool.shape)


def _draw_indices(member: Callable[[torch.Tensor], torch.Tensor], pool_flat: torch.Tensor, n_pool: int, m: int,
                  generator: torch.Generator) -> torch.Tensor:
    """``m`` distinct flat indices drawn uniformly from a pool of ``n_pool`` (``member(idx)`` tests
    membership; ``pool_flat`` is the materialised pool, only read for small pools)."""
    numel = pool_flat.numel()
    device = pool_flat.device
    if n_pool <= (1 << 16) or m > n_pool // 8:
        idx = torch.nonzero(pool_flat).squeeze(1)
    else:  # rejection: random flat indices, keep the members (about 2 m / density draws per round)
        draws = int(2 * m * numel / n_pool) + 64
        idx = torch.empty(0, dtype=torch.int64, device=device)
        while idx.numel() < m:
            raw = torch.randint(0, numel, (draws,), generator=generator, device=device)
            idx = torch.unique(torch.cat([idx, raw[member(raw)]]))
    return idx[torch.randperm(idx.numel(), generator=generator, device=device)[:m]]


def fix_count(chosen: torch.Tensor, candidates: torch.Tensor, k: int, generator: torch.Generator,
              n_candidates: int | None = None) -> torch.Tensor:
    """Make a random subset ``chosen`` of ``candidates`` have exactly ``k`` elements (in place when
    possible; returns the result).

    Drops a uniform subset of the surplus or adds a uniform subset of the missing from the unchosen
    candidates; a Bernoulli draw corrected this way is a uniform k-subset. A small correction (the
    usual case: about sqrt(k)) touches only the drawn positions, never the whole tensor.
    """
    have = int(count(chosen))
    if have == k:
        return chosen
    chosen = chosen.contiguous()
    flat, cand = chosen.view(-1), _flat(candidates)
    n_cand = int(count(cand)) if n_candidates is None else n_candidates
    if have > k:
        if have > (1 << 16) and have - k <= have // 8:
            flat[_draw_indices(lambda idx: flat[idx], flat, have, have - k, generator)] = False
            return chosen
        return chosen & ~sample_from(chosen, have - k, generator)
    n_free = n_cand - have
    if n_free > (1 << 16) and k - have <= n_free // 8:
        added = _draw_indices(lambda idx: cand[idx] & ~flat[idx], flat, n_free, k - have, generator)
        flat[added] = True
        return chosen
    return chosen | sample_from(candidates & ~chosen, k - have, generator)
