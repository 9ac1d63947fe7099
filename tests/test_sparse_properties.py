"""Property tests of mask invariants and of the selection primitives, over shapes, densities and rates."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from selfish.sparse import Masking, select
from selfish.sparse.select import (
    bernoulli_select,
    count,
    drop_smallest,
    fix_count,
    kth_smallest,
    sample_from,
    select_smallest,
    true_indices,
)

SETTINGS = settings(max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

shapes = st.sampled_from([(7, 5), (32, 16), (64, 30), (12, 4, 3), (120, 8), (3, 200)])


def one_tensor_model(shape, seed):
    torch.manual_seed(seed)
    model = nn.Module()
    model.weight = nn.Parameter(torch.randn(shape))
    model.bias = nn.Parameter(torch.randn(shape[0]))
    return model


def perturb_active(mask: Masking, seed: int) -> None:
    """Stand-in for training between updates: active weights move, inactive stay 0."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in mask.params.items():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1 * mask.masks[n])


@SETTINGS
@given(shape=shapes, density=st.floats(0.05, 0.95), death_rate=st.floats(0.01, 0.99),
       growth_count=st.sampled_from(["bernoulli", "exact"]), seed=st.integers(0, 10_000))
def test_update_invariants(shape, density, death_rate, growth_count, seed):
    model = one_tensor_model(shape, seed)
    bias = model.bias.detach().clone()
    mask = Masking(torch.optim.SGD(model.parameters(), lr=0.0), death_rate=death_rate, death_mode="magnitude",
                   growth_mode="random", redistribution_mode="none", growth_count=growth_count, seed=seed)
    mask.add_module(model, density=density)
    assert list(mask.masks) == ["weight"]
    numel = math.prod(shape)
    for update in range(3):
        perturb_active(mask, seed + update)
        before = mask.masks["weight"].clone()
        w_old = model.weight.detach().clone()
        stats = mask.at_end_of_epoch().tensors["weight"]
        new = mask.masks["weight"]
        w = model.weight.detach()
        nnz = int(before.sum())
        k = min(nnz, math.ceil(death_rate * nnz - 1e-9))
        # masked entries exactly zero; biases untouched and dense
        assert torch.all(w[~new] == 0)
        assert torch.equal(model.bias.detach(), bias)
        # death removed exactly k, the k smallest |W|: every larger active weight survived
        assert stats["removed"] == k
        if 0 < k < nnz:
            t = torch.kthvalue(w_old[before].abs(), k).values
            assert not (before & (w_old.abs() > t) & ~new).any()
        # survivors and removed-then-regrown keep their value; newly grown start at 0
        kept = before & new
        assert torch.equal(w[kept], w_old[kept])
        assert torch.all(w[new & ~before] == 0)
        assert stats["regrown_just_removed"] <= min(stats["removed"], stats["regrown"])
        assert int((new ^ before).sum()) == stats["removed"] + stats["regrown"] - 2 * stats["regrown_just_removed"]
        # counts return to the baseline: exactly, or within 6 sigma of one Bernoulli draw (no accumulation)
        baseline = mask.baseline["weight"]
        target = max(baseline, nnz - k)  # a surplus above the baseline can only shrink by death
        if growth_count == "exact":
            assert int(new.sum()) == target == baseline
        else:
            regrow = target - (nnz - k)
            candidates = numel - (nnz - k)
            q = regrow / candidates if candidates else 0.0
            sigma = math.sqrt(candidates * q * (1 - q))
            assert abs(int(new.sum()) - target) <= 6 * sigma + 2


@SETTINGS
@given(shape=shapes, density=st.floats(0.1, 0.9), seed=st.integers(0, 10_000),
       death=st.sampled_from(["magnitude", "magnitude_rnn", "SET", "threshold"]),
       growth=st.sampled_from(["random", "random_rnn", "gradient", "momentum"]))
def test_masked_entries_zero_after_every_step_and_update(shape, density, seed, death, growth):
    model = one_tensor_model(shape, seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    mask = Masking(opt, death_rate=0.5, death_mode=death, growth_mode=growth, seed=seed,
                   gate_layout={"weight": 1 if shape[0] % 2 else 2})
    mask.add_module(model, density=density)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(2):
        for _ in range(2):
            opt.zero_grad()
            (model.weight * torch.randn(shape, generator=gen)).sum().add(model.bias.sum()).backward()
            mask.step()
            m = mask.masks["weight"]
            assert torch.all(model.weight.detach()[~m] == 0)
            assert torch.all(opt.state[model.weight]["momentum_buffer"][~m] == 0)
        mask.at_end_of_epoch()
        m = mask.masks["weight"]
        assert torch.all(model.weight.detach()[~m] == 0)
        assert torch.all(opt.state[model.weight]["momentum_buffer"][~m] == 0)
        assert torch.count_nonzero(model.bias) == shape[0]


@SETTINGS
@given(n=st.integers(1, 400), levels=st.integers(1, 50), frac=st.floats(0, 1), p_cand=st.floats(0.05, 1),
       seed=st.integers(0, 10_000))
def test_select_smallest_is_exact_with_ties(n, levels, frac, p_cand, seed):
    gen = torch.Generator().manual_seed(seed)
    values = torch.randint(0, levels, (n,), generator=gen).float()  # many ties
    candidates = torch.rand(n, generator=gen) < p_cand
    n_cand = int(candidates.sum())
    k = int(frac * n_cand)
    chosen = select_smallest(values, candidates, k, gen)
    assert int(chosen.sum()) == k
    assert not (chosen & ~candidates).any()
    rest = candidates & ~chosen
    if k and rest.any():
        assert values[chosen].max() <= values[rest].min()


@pytest.mark.parametrize("k_frac", [0.0, 1e-6, 0.2, 0.8, 0.999999, 1.0])
def test_kth_smallest_bracket_matches_kthvalue(k_frac):
    gen = torch.Generator().manual_seed(1)
    values = torch.randn(600, 1000, generator=gen)
    values[:100] *= 50  # uneven rows so the strided sample is not trivially representative
    candidates = torch.rand(600, 1000, generator=gen) < 0.6
    n = int(candidates.sum())
    k = min(n, max(1, round(k_frac * n)))
    expected = torch.kthvalue(values[candidates], k).values
    assert kth_smallest(values, candidates, k, n) == expected


def test_bernoulli_select_rate_and_subset():
    gen = torch.Generator().manual_seed(0)
    candidates = torch.rand(1000, 1000, generator=gen) < 0.7
    n = int(candidates.sum())
    for p in (0.001, 0.28, 0.5, 0.93):
        chosen = bernoulli_select(candidates, p, gen)
        assert not (chosen & ~candidates).any()
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(int(chosen.sum()) - n * p) < 6 * sigma + 20  # +20: one 16-bit rounding coin
    assert not bernoulli_select(candidates, 0.0, gen).any()
    assert torch.equal(bernoulli_select(candidates, 1.0, gen), candidates)


@pytest.mark.parametrize("pool_density,m_frac", [(0.001, 0.5), (0.5, 0.01), (0.5, 0.6), (0.9, 1.0)])
def test_sample_from_and_fix_count_are_exact(pool_density, m_frac):
    gen = torch.Generator().manual_seed(0)
    pool = torch.rand(700, 500, generator=gen) < pool_density
    n = int(pool.sum())
    m = int(m_frac * n)
    chosen = sample_from(pool, m, gen)
    assert int(chosen.sum()) == m and not (chosen & ~pool).any()
    rough = bernoulli_select(pool, m_frac, gen)
    fixed = fix_count(rough, pool, m, gen)
    assert int(fixed.sum()) == m and not (fixed & ~pool).any()


def test_sample_from_is_uniform():
    gen = torch.Generator().manual_seed(0)
    pool = torch.zeros(400_000, dtype=torch.bool)
    pool[::2] = True  # 200k pool: the random-index path
    hits = torch.zeros(400_000)
    for _ in range(40):
        hits += sample_from(pool, 5000, gen).float()
    lo, hi = hits[:200_000].sum(), hits[200_000:].sum()  # halves of the pool are hit equally often
    assert abs(float(lo - hi)) < 6 * math.sqrt(float(lo + hi))


# ---------------------------------------------------------------- large tensors: the sampled-bracket path
def _check_split(values, candidates, k, seed):
    """select_smallest takes exactly k candidates, none larger than any left; drop_smallest with the same
    draws is its complement within the candidates."""
    n = int(candidates.sum())
    chosen = select_smallest(values, candidates, k, torch.Generator().manual_seed(seed), n)
    kept = drop_smallest(values, candidates, k, torch.Generator().manual_seed(seed), n)
    assert int(chosen.sum()) == k and not (chosen & ~candidates).any()
    assert torch.equal(kept, candidates & ~chosen)
    if 0 < k < n:
        assert values[chosen].max() <= values[kept].min()
        assert values[chosen].max() == torch.kthvalue(values[candidates], k).values


@pytest.mark.parametrize("k_frac", [1e-6, 0.05, 0.5, 0.8, 0.999])
def test_split_on_large_tensor_is_exact(k_frac):
    gen = torch.Generator().manual_seed(3)
    values = torch.randn(600, 1000, generator=gen)
    values[:100] *= 50
    candidates = torch.rand(600, 1000, generator=gen) < 0.6
    n = int(candidates.sum())
    assert select._bracket(values.reshape(-1), candidates.reshape(-1), 1, n) is not None  # the sampled path
    _check_split(values, candidates, max(1, round(k_frac * n)), seed=5)


def _tied_values(gen):
    """30% of the candidates in (-1, 0), 40% exactly 0, 30% in (0, 1): a long run of ties in the middle."""
    u = torch.rand(700, 1000, generator=gen)
    values = torch.where(u < 0.3, -torch.rand(700, 1000, generator=gen),
                         torch.where(u < 0.7, torch.zeros(()), torch.rand(700, 1000, generator=gen)))
    candidates = torch.rand(700, 1000, generator=gen) < 0.8
    return values, candidates


@pytest.mark.parametrize("where", ["below the run", "inside the run", "above the run"])
def test_split_with_a_run_of_ties_is_exact_and_takes_the_tie_path(where):
    gen = torch.Generator().manual_seed(11)
    values, candidates = _tied_values(gen)
    v, c = values.reshape(-1), candidates.reshape(-1)
    n = int(c.sum())
    n_neg, n_zero = int((c & (v < 0)).sum()), int((c & (v == 0)).sum())
    k = {"below the run": n_neg - 30, "inside the run": n_neg + n_zero // 2,
         "above the run": n_neg + n_zero + 30}[where]
    found = select._bracketed(v, c, k, n)
    assert found is not None
    if where == "inside the run":  # no kthvalue over the repeated value: it is sampled among
        assert found.tied is not None and float(found.t) == 0.0
    else:
        assert found.index is not None and found.index.numel() < 20_000  # a small search, not the run
    _check_split(values, candidates, k, seed=7)


def test_ties_in_a_run_are_drawn_uniformly():
    gen = torch.Generator().manual_seed(2)
    values, candidates = _tied_values(gen)
    n = int(candidates.sum())
    zeros = candidates & (values == 0)
    k = int((candidates & (values < 0)).sum()) + int(zeros.sum()) // 4
    hits = torch.zeros(700, 1000)
    for seed in range(8):
        hits += select_smallest(values, candidates, k, torch.Generator().manual_seed(seed), n).float()
    top, bottom = hits[:350][zeros[:350]].sum(), hits[350:][zeros[350:]].sum()
    per_zero_top, per_zero_bottom = top / zeros[:350].sum(), bottom / zeros[350:].sum()
    assert abs(float(per_zero_top - per_zero_bottom)) < 0.02  # each about 8 x 1/4 = 2 hits per tied zero
    assert abs(float(per_zero_top) - 2.0) < 0.05


@pytest.mark.parametrize("numel,start", [(100, 0), (70_001, 0), (300_017, 3), (1_000_000, 5), (262_144, 8)])
def test_fast_count_and_true_indices_match_torch(numel, start):
    gen = torch.Generator().manual_seed(numel)
    for density in (0.0, 0.004, 0.3, 1.0):
        base = torch.rand(numel + start + 11, generator=gen) < density
        mask = base[start:start + numel]  # odd storage offsets and lengths
        assert int(count(mask)) == int(torch.count_nonzero(mask))
        assert torch.equal(true_indices(mask), torch.nonzero(mask).squeeze(1))
    grid = torch.rand(900, 700, generator=gen) < 0.01
    assert int(count(grid[:, 3:500])) == int(torch.count_nonzero(grid[:, 3:500]))  # not contiguous
    assert torch.equal(true_indices(grid[1:]), torch.nonzero(grid[1:].reshape(-1)).squeeze(1))
