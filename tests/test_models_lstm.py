"""Stacked LSTM (spec §6.1): shapes, init, fused-kernel compatibility with in-place masks, names, counts."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from selfish.models import LMOutput, StackedLSTM, build_model, repackage_hidden
from tests.model_training import losses_on_repeated_batch


def _tiny(tied: bool = False) -> StackedLSTM:
    torch.manual_seed(0)
    return StackedLSTM(vocab_size=23, emsize=8, nhid=8, nlayers=2, dropout=0.2, tied=tied)


def test_forward_backward_shapes():
    model = _tiny()
    tokens = torch.randint(0, 23, (5, 3))
    out = model(tokens, model.init_hidden(3))
    assert isinstance(out, LMOutput)
    assert out.logits.shape == (15, 23)
    h, c = out.hidden
    assert h.shape == c.shape == (2, 3, 8)
    assert out.raw_outputs[-1].shape == out.dropped_outputs[-1].shape == (5, 3, 8)
    F.cross_entropy(out.logits, torch.randint(0, 23, (15,))).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.regularizer(out, 2.0, 1.0).item() == 0.0


def test_init_ranges_and_tied_check():
    model = _tiny()
    assert model.encoder.weight.abs().max() <= 0.1 and model.decoder.weight.abs().max() <= 0.1
    assert torch.all(model.decoder.bias == 0)
    tied = _tiny(tied=True)
    assert tied.decoder.weight is tied.encoder.weight
    with pytest.raises(ValueError, match="emsize == nhid"):
        StackedLSTM(10, 4, 6, 1, tied=True)


def test_original_parameter_names_and_roundtrip():
    model = _tiny()
    names = {n for n, _ in model.named_parameters()}
    expected = {"encoder.weight", "decoder.weight", "decoder.bias"} | {
        f"rnn.{kind}_{io}_l{k}" for kind in ("weight", "bias") for io in ("ih", "hh") for k in (0, 1)
    }
    assert names == expected
    other = StackedLSTM(23, 8, 8, 2, 0.2)
    other.load_state_dict(model.state_dict())
    model.eval(), other.eval()
    tokens = torch.randint(0, 23, (4, 2))
    torch.testing.assert_close(
        model(tokens, model.init_hidden(2)).logits, other(tokens, other.init_hidden(2)).logits, rtol=0, atol=0
    )


def test_in_place_masks_keep_fused_kernel_without_warnings():
    model = _tiny()
    gen = torch.Generator().manual_seed(1)
    masks = {}
    with torch.no_grad():
        for name, w in model.rnn.named_parameters():
            if name.startswith("weight"):
                masks[name] = torch.rand(w.shape, generator=gen) < 0.5
                w.mul_(masks[name])
    params = dict(model.rnn.named_parameters())
    for name, flat in zip(model.rnn._flat_weights_names, model.rnn._flat_weights, strict=True):
        assert flat is params[name]
    tokens = torch.randint(0, 23, (6, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = model(tokens, model.init_hidden(3))
        F.cross_entropy(out.logits, torch.randint(0, 23, (18,))).backward()
    assert [str(w.message) for w in caught] == []
    for name, mask in masks.items():  # masked weights stay exactly 0 in the forward
        assert torch.all(params[name][~mask] == 0)


def test_gate_layout_covers_lstm_weights():
    model = _tiny()
    layout = model.gate_layout()
    params = dict(model.named_parameters())
    for name, blocks in layout.items():
        assert [g for g, _ in blocks] == ["i", "f", "g", "o"]
        assert sum(r for _, r in blocks) == params[name].shape[0]
    assert set(layout) == {n for n in params if n.startswith("rnn.weight")}


def test_repackage_hidden_detaches():
    model = _tiny()
    out = model(torch.randint(0, 23, (3, 2)), model.init_hidden(2))
    h = repackage_hidden(out.hidden)
    assert all(not t.requires_grad for t in h) and isinstance(h, tuple)


def test_build_model_registry():
    model = build_model("lstm", 11, emsize=4, nhid=4, nlayers=1, dropout=0.0)
    assert isinstance(model, StackedLSTM)
    with pytest.raises(ValueError, match="unknown model type 'gru'"):
        build_model("gru", 11)
    with pytest.raises(ValueError, match="bad options"):
        build_model("lstm", 11, emsize=4, nhid=4, nlayers=1, nonsense=3)


def _maskable(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if p.dim() >= 2 and "bias" not in n)


def test_paper_lstm_parameter_count():
    with torch.device("meta"):
        model = StackedLSTM(10000, 1500, 1500, 2, 0.65)
    # enc 10000x1500 + 4 x (6000x1500) + dec 10000x1500 (spec §2.2)
    assert _maskable(model) == 10000 * 1500 * 2 + 4 * 6000 * 1500
    assert round(_maskable(model) / 1e6, 1) == 66.0


def test_loss_decreases_on_repeated_corpus():
    torch.manual_seed(0)
    model = StackedLSTM(20, 16, 16, 2, dropout=0.0)
    losses = losses_on_repeated_batch(model)
    assert losses[-1] < 0.8 * losses[0]
