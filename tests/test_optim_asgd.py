"""SNTASGD (selfish.optim, spec §5.2): per-element averages that follow the masks; dense = torch ASGD."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from selfish.optim import SNTASGD


def _grads(params: list[nn.Parameter], gen: torch.Generator) -> list[torch.Tensor]:
    grads = [torch.randn(p.shape, generator=gen) for p in params]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    return grads


def _row(values: list[float]) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.float32)


def test_hand_computed_averages_with_mask_changes() -> None:
    """1x4 weight, lr 1, integer gradients. Element stories: 0 kept then removed; 1 removed then regrown;
    2 kept throughout (in the second update "removed and regrown in the same update" = active in both
    masks); 3 inactive, grown, kept."""
    weight = nn.Parameter(_row([1.0, 2.0, 3.0, 4.0]))
    opt = SNTASGD([weight], lr=1.0)

    def step(grad: list[float], expected_weight: list[float], expected_average: list[float]) -> None:
        weight.grad = _row(grad)
        opt.step()
        assert torch.equal(weight.detach(), _row(expected_weight))
        torch.testing.assert_close(opt.averages()[weight], _row(expected_average))

    opt.set_masks({weight: torch.tensor([[True, True, True, False]])})
    assert torch.equal(weight.detach(), _row([1, 2, 3, 0]))
    step([1, 1, 1, 1], [0, 1, 2, 0], [0, 1, 2, 0])  # 1st step: average = current value
    step([1, 2, 3, 1], [-1, -1, -1, 0], [-1, -1, -1, 0])  # 2nd step: average starts here
    step([2, 2, 2, 2], [-3, -3, -3, 0], [-2, -2, -2, 0])

    # update 1: element 1 removed, element 3 grown, elements 0 and 2 stay
    opt.set_masks({weight: torch.tensor([[True, False, True, True]])})
    assert torch.equal(weight.detach(), _row([-3, 0, -3, 0]))
    torch.testing.assert_close(opt.averages()[weight], _row([-2, 0, -2, 0]))
    step([1, 1, 1, 1], [-4, 0, -4, -1], [-8 / 3, 0, -8 / 3, -1])
    step([1, 1, 1, 2], [-5, 0, -5, -3], [-13 / 4, 0, -13 / 4, -3])
    step([0, 0, 0, 1], [-5, 0, -5, -4], [-18 / 5, 0, -18 / 5, -3.5])

    # update 2: element 0 removed, element 1 regrown (its average restarts), 2 and 3 stay
    opt.set_masks({weight: torch.tensor([[False, True, True, True]])})
    step([1, 1, 1, 1], [0, -1, -6, -5], [0, -1, -24 / 6, -4])
    step([0, 1, 0, 0], [0, -2, -6, -5], [0, -2, -30 / 7, -17 / 4])
    assert opt.state[weight]["sum"][0, 0] == 0  # removed element: sum 0


def _literal_reference_step(
    weight: torch.Tensor,
    grad: torch.Tensor,
    mask: torch.Tensor,
    counters: torch.Tensor,
    ax: torch.Tensor,
    lr: float,
    weight_decay: float,
) -> None:
    """Spec §5.2 steps 1-5 transcribed literally (per-element counters and running mean), then W *= M."""
    counters[~mask] = 0
    counters[mask] += 1
    weight -= lr * (grad + weight_decay * weight)
    mu = torch.where(
        counters <= 2, torch.ones_like(weight), 1.0 / (counters - 1).clamp(min=1).to(weight.dtype)
    )
    ax.copy_(torch.where(mu == 1, weight, ax + mu * (weight - ax)))
    ax.mul_(mask)
    weight.mul_(mask)


def test_matches_literal_per_element_counter_algorithm() -> None:
    """Random topology changes (incl. a masked param turning dense) against the spec's literal algorithm."""
    gen = torch.Generator().manual_seed(0)
    lr, weight_decay = 0.05, 0.01
    shapes = [(7, 5), (6,), (4, 4)]
    params = [nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64)) for s in shapes]
    ref_weights = [p.detach().clone() for p in params]
    counters = [torch.zeros(s, dtype=torch.long) for s in shapes]
    axs = [torch.zeros(s, dtype=torch.float64) for s in shapes]
    opt = SNTASGD(params, lr=lr, weight_decay=weight_decay)
    masked = [0, 2]  # params[1] is a dense "bias"
    for update in range(6):
        masks = {i: torch.rand(shapes[i], generator=gen) < 0.5 for i in masked}
        if update == 4:
            del masks[2]  # params[2] becomes dense: its inactive elements are newly active
        ref_masks = [masks.get(i, torch.ones(s, dtype=torch.bool)) for i, s in enumerate(shapes)]
        for w, m in zip(ref_weights, ref_masks, strict=True):
            w.mul_(m)
        opt.set_masks({params[i]: m for i, m in masks.items()})
        for _ in range(update % 3 + 1):  # 1, 2 or 3 steps between updates
            grads = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            opt.step()
            for w, g, m, c, ax in zip(ref_weights, grads, ref_masks, counters, axs, strict=True):
                _literal_reference_step(w, g, m, c, ax, lr, weight_decay)
            averages = opt.averages()
            for i, p in enumerate(params):
                torch.testing.assert_close(p.detach(), ref_weights[i], rtol=1e-12, atol=1e-12)
                torch.testing.assert_close(averages[p], axs[i], rtol=1e-12, atol=1e-12)
                assert torch.all(p[~ref_masks[i]] == 0) and torch.all(averages[p][~ref_masks[i]] == 0)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_dense_path_equals_torch_asgd(weight_decay: float) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    reference = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    reference.load_state_dict(model.state_dict())
    opt = SNTASGD(model.parameters(), lr=0.1, weight_decay=weight_decay)
    ref_opt = torch.optim.ASGD(reference.parameters(), lr=0.1, t0=0, lambd=0.0, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(1)
    for _ in range(12):
        inputs, targets = torch.randn(8, 5, generator=gen), torch.randn(8, 3, generator=gen)
        for net, optimizer in ((model, opt), (reference, ref_opt)):
            optimizer.zero_grad()
            nn.functional.mse_loss(net(inputs), targets).backward()
            optimizer.step()
        averages = opt.averages()
        for p, ref in zip(model.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(p, ref, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(averages[p], ref_opt.state[ref]["ax"], rtol=1e-5, atol=1e-6)


def _stepped_optimizer(seed: int = 0) -> tuple[list[nn.Parameter], SNTASGD, dict[nn.Parameter, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(6, 4, generator=gen)), nn.Parameter(torch.randn(4, generator=gen))]
    opt = SNTASGD(params, lr=0.1, weight_decay=1e-3)
    masks = {params[0]: torch.rand(6, 4, generator=gen) < 0.5}
    opt.set_masks(masks)
    for _ in range(3):
        _grads(params, gen)
        opt.step()
    masks = {params[0]: torch.rand(6, 4, generator=gen) < 0.5}
    opt.set_masks(masks)
    _grads(params, gen)
    opt.step()
    return params, opt, masks


def test_averaged_swaps_in_averages_and_restores_bitwise() -> None:
    params, opt, _ = _stepped_optimizer()
    raw = [p.detach().clone() for p in params]
    averages = opt.averages()
    assert not torch.equal(averages[params[0]], raw[0])
    with opt.averaged():
        for p in params:
            assert torch.equal(p.detach(), averages[p])
    for p, r in zip(params, raw, strict=True):
        assert torch.equal(p.detach(), r)
    with pytest.raises(RuntimeError, match="boom"), opt.averaged():
        raise RuntimeError("boom")
    for p, r in zip(params, raw, strict=True):
        assert torch.equal(p.detach(), r)


def _continue(
    params: list[nn.Parameter], opt: SNTASGD, masks: dict, gen: torch.Generator, steps: int
) -> None:
    for _ in range(steps):
        _grads(params, gen)
        opt.step()


@pytest.mark.parametrize("after_set_masks", [False, True])
def test_state_dict_round_trip_then_identical_steps(after_set_masks: bool) -> None:
    params, opt, masks = _stepped_optimizer()
    if after_set_masks:  # save while the first step after an activation is still pending
        gen = torch.Generator().manual_seed(5)
        masks = {params[0]: torch.rand(6, 4, generator=gen) < 0.5}
        opt.set_masks(masks)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    copies = [nn.Parameter(p.detach().clone()) for p in params]
    opt2 = SNTASGD(copies, lr=1.0)
    opt2.load_state_dict(torch.load(buffer, weights_only=True))
    opt2.set_masks({copies[0]: masks[params[0]].clone()})  # same masks again: nothing changes
    for p, c in zip(params, copies, strict=True):
        state, state2 = opt.state[p], opt2.state[c]
        assert state.keys() == state2.keys()
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                assert value.dtype == state2[key].dtype and torch.equal(value, state2[key]), key
            else:
                assert value == state2[key], key
    gen1, gen2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    _continue(params, opt, masks, gen1, 2)
    _continue(copies, opt2, masks, gen2, 2)
    new_masks = torch.rand(6, 4, generator=torch.Generator().manual_seed(8)) < 0.5
    opt.set_masks({params[0]: new_masks})
    opt2.set_masks({copies[0]: new_masks.clone()})
    _continue(params, opt, masks, gen1, 3)
    _continue(copies, opt2, masks, gen2, 3)
    averages, averages2 = opt.averages(), opt2.averages()
    for p, c in zip(params, copies, strict=True):
        assert torch.equal(p.detach(), c.detach())
        assert torch.equal(averages[p], averages2[c])


def test_restart_is_like_a_new_optimizer() -> None:
    params, opt, masks = _stepped_optimizer()
    copies = [nn.Parameter(p.detach().clone()) for p in params]
    fresh = SNTASGD(copies, lr=0.1, weight_decay=1e-3)
    fresh.set_masks({copies[0]: masks[params[0]].clone()})
    opt.restart()
    torch.testing.assert_close(opt.averages(), {p: p.detach() for p in params})
    gen1, gen2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for steps in (1, 1, 2):
        _continue(params, opt, masks, gen1, steps)
        _continue(copies, fresh, masks, gen2, steps)
        averages, fresh_averages = opt.averages(), fresh.averages()
        for p, c in zip(params, copies, strict=True):
            assert torch.equal(p.detach(), c.detach())
            assert torch.equal(averages[p], fresh_averages[c])


def test_param_without_grad_is_skipped() -> None:
    params, opt, _ = _stepped_optimizer()
    before = params[1].detach().clone()
    steps = opt.state[params[1]]["step"]
    params[0].grad = torch.ones_like(params[0])
    params[1].grad = None
    opt.step()
    assert torch.equal(params[1].detach(), before) and opt.state[params[1]]["step"] == steps


def test_clip_grad_norm_with_masks_gives_the_same_weights_and_averages() -> None:
    """SNT-ASGD after its fused clip (masks applied to the gradients) = torch's clip then the masked step."""
    gen = torch.Generator().manual_seed(3)
    shapes = [(9, 6), (9,), (5, 9)]
    start = [torch.randn(s, generator=gen) for s in shapes]
    fused = [nn.Parameter(t.clone()) for t in start]
    plain = [nn.Parameter(t.clone()) for t in start]
    opt_fused, opt_plain = SNTASGD(fused, lr=0.1, weight_decay=0.01), SNTASGD(plain, lr=0.1, weight_decay=0.01)
    for update in range(3):
        masks = {i: torch.rand(shapes[i], generator=gen) < 0.4 for i in (0, 2)}
        opt_fused.set_masks({fused[i]: m for i, m in masks.items()})
        opt_plain.set_masks({plain[i]: m for i, m in masks.items()})
        for _ in range(3):
            grads = [2.0 * torch.randn(s, generator=gen) for s in shapes]
            for f, p, g in zip(fused, plain, grads, strict=True):
                f.grad, p.grad = g.clone(), g.clone()
            norm = opt_fused.clip_grad_norm_(0.25)
            assert torch.equal(norm, torch.nn.utils.clip_grad_norm_(plain, 0.25))
            opt_fused.step()
            opt_plain.step()
            for f, p in zip(fused, plain, strict=True):
                torch.testing.assert_close(f, p, rtol=1e-6, atol=1e-7)
            averages_fused, averages_plain = opt_fused.averages(), opt_plain.averages()
            for f, p in zip(fused, plain, strict=True):
                torch.testing.assert_close(averages_fused[f], averages_plain[p], rtol=1e-6, atol=1e-7)
            for i, m in masks.items():
                assert torch.all(fused[i][~m] == 0) and torch.all(averages_fused[fused[i]][~m] == 0), update
