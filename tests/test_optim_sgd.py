"""SparseSGD (selfish.optim): equals torch SGD followed by `W *= M` (spec §3.5), masks by identity."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from selfish.optim import SparseSGD


def _tiny_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 3))


def _random_masks(
    model: nn.Module, gen: torch.Generator, density: float = 0.4
) -> dict[nn.Parameter, torch.Tensor]:
    """Masks for the weight matrices only (biases stay dense)."""
    return {
        p: torch.rand(p.shape, generator=gen) < density
        for name, p in model.named_parameters()
        if "weight" in name
    }


def _set_grads(params: list[nn.Parameter], gen: torch.Generator) -> list[torch.Tensor]:
    grads = [torch.randn(p.shape, generator=gen) for p in params]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    return grads


@torch.no_grad()
def _mask_reference(ref_opt: torch.optim.SGD, ref_masks: dict[nn.Parameter, torch.Tensor]) -> None:
    """The original's `W *= M` after torch's step, momentum buffer included (spec §3.5)."""
    for p, m in ref_masks.items():
        p.mul_(m)
        buf = ref_opt.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            buf.mul_(m)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_sparse_sgd_equals_torch_sgd_then_mask(momentum: float, weight_decay: float) -> None:
    model, reference = _tiny_model(0), _tiny_model(0)
    params, ref_params = list(model.parameters()), list(reference.parameters())
    opt = SparseSGD(params, lr=0.3, weight_decay=weight_decay, momentum=momentum)
    ref_opt = torch.optim.SGD(ref_params, lr=0.3, weight_decay=weight_decay, momentum=momentum)
    gen = torch.Generator().manual_seed(1)
    for phase in range(3):  # a new topology every 3 steps
        masks = _random_masks(model, gen)
        ref_masks = {ref: masks[p] for p, ref in zip(params, ref_params, strict=True) if p in masks}
        with torch.no_grad():
            for p, m in ref_masks.items():
                p.mul_(m)
                buf = ref_opt.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    buf.mul_(m)
        opt.set_masks(masks)
        for _ in range(3):
            grads = _set_grads(params, gen)
            for p, g in zip(ref_params, grads, strict=True):
                p.grad = g.clone()
            opt.step()
            ref_opt.step()
            _mask_reference(ref_opt, ref_masks)
            for p, ref in zip(params, ref_params, strict=True):
                torch.testing.assert_close(p, ref, rtol=1e-6, atol=1e-7)
                if momentum:
                    torch.testing.assert_close(
                        opt.state[p]["momentum_buffer"],
                        ref_opt.state[ref]["momentum_buffer"],
                        rtol=1e-6,
                        atol=1e-7,
                    )
            for p, m in masks.items():  # masked entries exactly 0, every step (phase {phase})
                assert torch.all(p[~m] == 0), phase
                if momentum:
                    assert torch.all(opt.state[p]["momentum_buffer"][~m] == 0)


def test_dense_params_follow_torch_sgd_bitwise() -> None:
    model, reference = _tiny_model(3), _tiny_model(3)
    opt = SparseSGD(model.parameters(), lr=0.2, weight_decay=0.01)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.2, weight_decay=0.01, foreach=True)
    gen = torch.Generator().manual_seed(4)
    for _ in range(4):
        grads = _set_grads(list(model.parameters()), gen)
        for p, g in zip(reference.parameters(), grads, strict=True):
            p.grad = g.clone()
        opt.step()
        ref_opt.step()
    for p, ref in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, ref)


def test_set_masks_checks_its_input() -> None:
    model, other = _tiny_model(0), _tiny_model(1)
    opt = SparseSGD(model.parameters(), lr=0.1)
    weight = model[0].weight
    with pytest.raises(ValueError, match="does not manage"):
        opt.set_masks({other[0].weight: torch.ones_like(weight, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        opt.set_masks({weight: torch.ones(3, 3, dtype=torch.bool)})
    with pytest.raises(TypeError, match="bool"):
        opt.set_masks({weight: torch.ones_like(weight)})


def test_param_dropped_from_masks_becomes_dense() -> None:
    model = _tiny_model(0)
    weight = model[0].weight
    opt = SparseSGD(model.parameters(), lr=0.1)
    mask = torch.zeros_like(weight, dtype=torch.bool)
    mask[0] = True
    opt.set_masks({weight: mask})
    assert torch.all(weight[1:] == 0)
    opt.set_masks({})
    weight.grad = torch.ones_like(weight)
    opt.step()
    assert torch.all(weight[1:] == -0.1)


def test_state_dict_round_trip_then_identical_steps() -> None:
    model, copy = _tiny_model(0), _tiny_model(9)
    opt = SparseSGD(model.parameters(), lr=0.1, weight_decay=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(2)
    masks = _random_masks(model, gen)
    opt.set_masks(masks)
    for _ in range(3):
        _set_grads(list(model.parameters()), gen)
        opt.step()
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    copy.load_state_dict(saved["model"])
    opt2 = SparseSGD(copy.parameters(), lr=0.5)  # hyper-parameters come from the state dict
    opt2.load_state_dict(saved["opt"])
    for p, p2 in zip(model.parameters(), copy.parameters(), strict=True):
        if p in masks:
            assert opt2.state[p2]["mask"].dtype == torch.bool
            assert torch.equal(opt2.state[p2]["mask"], masks[p])
    opt2.set_masks(
        {p2: masks[p] for p, p2 in zip(model.parameters(), copy.parameters(), strict=True) if p in masks}
    )
    for _ in range(3):
        grads = _set_grads(list(model.parameters()), gen)
        for p2, g in zip(copy.parameters(), grads, strict=True):
            p2.grad = g.clone()
        opt.step()
        opt2.step()
    for p, p2 in zip(model.parameters(), copy.parameters(), strict=True):
        assert torch.equal(p, p2)
        assert torch.equal(opt.state[p]["momentum_buffer"], opt2.state[p2]["momentum_buffer"])


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_clip_grad_norm_with_masks_equals_torch_clip_then_sgd_then_mask(momentum: float) -> None:
    """`clip_grad_norm_` masks the gradients in the clip's rescale: the same norm, the same kept gradients
    bitwise, exact +0 elsewhere; the following step equals torch clip + torch SGD + W *= M (spec §1, §3.5)."""
    model, reference = _tiny_model(5), _tiny_model(5)
    params, ref_params = list(model.parameters()), list(reference.parameters())
    opt = SparseSGD(params, lr=0.3, weight_decay=0.05, momentum=momentum)
    ref_opt = torch.optim.SGD(ref_params, lr=0.3, weight_decay=0.05, momentum=momentum, foreach=True)
    gen = torch.Generator().manual_seed(6)
    masks = _random_masks(model, gen)
    ref_masks = {ref: masks[p] for p, ref in zip(params, ref_params, strict=True) if p in masks}
    opt.set_masks(masks)
    with torch.no_grad():
        for p, m in ref_masks.items():
            p.mul_(m)
    for _ in range(4):
        grads = _set_grads(params, gen)
        for p, g in zip(ref_params, grads, strict=True):
            p.grad = 3.0 * g  # large enough that the clip scales
        for p in params:
            p.grad.mul_(3.0)
        norm = opt.clip_grad_norm_(0.5)
        ref_norm = torch.nn.utils.clip_grad_norm_(ref_params, 0.5)
        assert torch.equal(norm, ref_norm) and float(norm) > 0.5
        for p, ref in zip(params, ref_params, strict=True):
            mask = masks.get(p, torch.ones(p.shape, dtype=torch.bool))
            assert torch.equal(p.grad[mask], ref.grad[mask])
            assert torch.all(p.grad[~mask] == 0) and not torch.any(torch.signbit(p.grad[~mask]))
        opt.step()
        ref_opt.step()
        _mask_reference(ref_opt, ref_masks)
        for p, ref in zip(params, ref_params, strict=True):
            torch.testing.assert_close(p, ref, rtol=1e-6, atol=1e-7)
        for p, m in masks.items():
            assert torch.all(p[~m] == 0)
            if momentum:
                assert torch.all(opt.state[p]["momentum_buffer"][~m] == 0)


def test_set_masks_between_clip_and_step_keeps_the_new_masks() -> None:
    """Gradients masked by the clip with the old masks are not trusted after `set_masks`: the step masks."""
    model = _tiny_model(7)
    params = list(model.parameters())
    opt = SparseSGD(params, lr=0.5)
    gen = torch.Generator().manual_seed(8)
    opt.set_masks(_random_masks(model, gen))
    _set_grads(params, gen)
    opt.clip_grad_norm_(100.0)
    new_masks = _random_masks(model, gen)
    opt.set_masks(new_masks)
    opt.step()
    for p, m in new_masks.items():
        assert torch.all(p[~m] == 0)


def test_clip_without_gradients_returns_zero_and_changes_nothing() -> None:
    model = _tiny_model(9)
    opt = SparseSGD(model.parameters(), lr=0.5)
    before = [p.detach().clone() for p in model.parameters()]
    assert float(opt.clip_grad_norm_(1.0)) == 0.0
    opt.step()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
