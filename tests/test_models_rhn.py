"""RHN (spec §6.2): shapes, fast == plain (outputs and grads), original names, dropout semantics, counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfish.models import RHN, build_model
from tests.model_training import losses_on_repeated_batch


def _tiny(**kw) -> RHN:
    torch.manual_seed(0)
    options = dict(emsize=6, nhid=6, recurrence_depth=3, nlayers=1, tied=True, couple=True)
    options.update(kw)
    return RHN(17, **options)


def test_forward_backward_shapes():
    model = _tiny()
    out = model(torch.randint(0, 17, (5, 3)), model.init_hidden(3))
    assert out.logits.shape == (15, 17)
    assert out.hidden.shape == (1, 3, 6)
    assert out.raw_outputs[0].shape == out.dropped_outputs[0].shape == (5, 3, 6)
    F.cross_entropy(out.logits, torch.randint(0, 17, (15,))).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.regularizer(out, 2.0, 1.0).item() == 0.0


def _run(model: RHN, fast: bool, tokens, targets, seed: int = 1):
    model.fast = fast
    model.zero_grad()
    h0 = torch.randn(model.nlayers, tokens.size(1), model.nhid, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(seed)  # same dropout masks for both implementations
    out = model(tokens, h0)
    (F.cross_entropy(out.logits, targets) + out.hidden.pow(2).sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return out.logits.detach(), out.hidden.detach(), grads, h0.grad


@pytest.mark.parametrize("couple", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_fast_equals_plain(couple: bool, training: bool):
    model = _tiny(couple=couple, nlayers=2, dropouth=0.3, dropoute=0.1).double()
    model.train(training)
    tokens, targets = torch.randint(0, 17, (5, 3)), torch.randint(0, 17, (15,))
    torch.manual_seed(5)
    plain = _run(model, False, tokens, targets)
    torch.manual_seed(5)
    fast = _run(model, True, tokens, targets)
    for a, b in zip(plain[:2], fast[:2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert plain[2].keys() == fast[2].keys()
    for name in plain[2]:
        torch.testing.assert_close(plain[2][name], fast[2][name], rtol=1e-10, atol=1e-12, msg=name)
    torch.testing.assert_close(plain[3], fast[3], rtol=1e-10, atol=1e-12)


def test_original_names_tied_and_roundtrip():
    model = _tiny(recurrence_depth=3)
    names = [n for n, _ in model.named_parameters()]
    assert names == [
        "embedding.weight",
        "rnns.0.highways.0.W.weight",
        "rnns.0.highways.0.W.bias",
        "rnns.0.highways.0.R.weight",
        "rnns.0.highways.0.R.bias",
        "rnns.0.highways.1.R.weight",
        "rnns.0.highways.1.R.bias",
        "rnns.0.highways.2.R.weight",
        "rnns.0.highways.2.R.bias",
        "fc1.bias",
    ]
    assert model.fc1.weight is model.embedding.weight
    state = model.state_dict()
    assert "fc1.weight" in state  # as in the original checkpoints
    other = _tiny(recurrence_depth=3)
    with torch.no_grad():
        for p in other.parameters():
            p.zero_()
    other.load_state_dict(state)
    model.eval(), other.eval()
    tokens = torch.randint(0, 17, (4, 2))
    assert torch.equal(model(tokens, model.init_hidden(2)).logits, other(tokens, other.init_hidden(2)).logits)
    uncoupled = {n for n, _ in _tiny(couple=False).named_parameters()}
    assert {"rnns.0.highways.0.W_C.weight", "rnns.0.highways.2.R_C.weight"} <= uncoupled


def test_gate_layout():
    model = _tiny(couple=False)
    params = dict(model.named_parameters())
    layout = model.gate_layout()
    assert layout["rnns.0.highways.0.W.weight"] == [("H", 6), ("T", 6)]
    assert layout["rnns.0.highways.1.R.weight"] == [("H", 6), ("T", 6)]
    assert layout["rnns.0.highways.1.R_C.weight"] == [("C", 6)]
    for name, blocks in layout.items():
        assert sum(r for _, r in blocks) == params[name].shape[0]
    assert set(layout) == {n for n in params if n.startswith("rnns.") and n.endswith("weight")}


def test_state_dropout_mask_shared_across_steps_and_layers():
    """dropouth: a zeroed unit of s never reaches R, at any step or micro-layer (spec §6.2)."""
    model = _tiny(dropout=0.0, dropouti=0.0, dropoute=0.0, dropouth=0.5, recurrence_depth=2)
    model.train()
    seen = []
    for block in model.rnns[0].highways:
        block.R.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    model.fast = False
    torch.manual_seed(3)
    model(torch.randint(0, 17, (4, 5)), torch.randn(1, 5, 6))
    zero_pattern = seen[0] == 0
    assert zero_pattern.any()
    for sm in seen[1:]:
        assert torch.equal(sm == 0, zero_pattern)


def test_eval_is_deterministic_and_tied_check():
    model = _tiny(dropoute=0.5, dropouth=0.5, dropouti=0.5, dropout=0.5).eval()
    tokens = torch.randint(0, 17, (4, 2))
    assert torch.equal(model(tokens, model.init_hidden(2)).logits, model(tokens, model.init_hidden(2)).logits)
    with pytest.raises(ValueError, match="emsize == nhid"):
        RHN(10, 4, 6, tied=True)


def test_paper_rhn_parameter_count():
    with torch.device("meta"):
        model = build_model("rhn", 10000, emsize=830, nhid=830, recurrence_depth=10, tied=True, couple=True)
    maskable = sum(p.numel() for n, p in model.named_parameters() if p.dim() >= 2 and "bias" not in n)
    assert maskable == 10000 * 830 + 1660 * 830 + 10 * 1660 * 830
    assert round(maskable / 1e6, 2) == 23.46


@pytest.mark.parametrize("fast", [True, False])
def test_loss_decreases_on_repeated_corpus(fast: bool):
    torch.manual_seed(0)
    model = RHN(20, 16, 16, recurrence_depth=2, dropout=0, dropouth=0, dropouti=0, dropoute=0, fast=fast)
    losses = losses_on_repeated_batch(model)
    assert losses[-1] < 0.8 * losses[0]
