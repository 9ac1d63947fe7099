"""Shared pieces of selfish.models: registry, regularisers, the common interface of every model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfish.models import MODEL_REGISTRY, LockedDropout, build_model, embedded_dropout, repackage_hidden
from selfish.models.recurrent import TimeBatchedLinear

TINY = {
    "lstm": dict(emsize=6, nhid=6, nlayers=2, dropout=0.1),
    "rhn": dict(emsize=6, nhid=6, recurrence_depth=2),
    "onlstm": dict(emsize=6, nhid=8, nlayers=2, chunk_size=2),
    "mos": dict(emsize=6, nhid=8, nhidlast=5, nlayers=2, n_experts=2),
}


def test_registry_names():
    assert set(MODEL_REGISTRY) == {"lstm", "rhn", "onlstm", "mos"}
    with pytest.raises(ValueError, match="known types: lstm, mos, onlstm, rhn"):
        build_model("transformer", 10)


@pytest.mark.parametrize("kind", sorted(TINY))
def test_common_interface(kind: str):
    torch.manual_seed(0)
    model = build_model(kind, 13, **TINY[kind])
    tokens = torch.randint(0, 13, (4, 3))
    hidden = model.init_hidden(3)
    out = model(tokens, hidden)
    assert out.logits.shape == (12, 13)
    reg = model.regularizer(out, 2.0, 1.0)
    assert reg.dim() == 0
    loss = F.cross_entropy(out.logits, torch.randint(0, 13, (12,))) + reg
    loss.backward()
    # the next call takes the detached hidden state
    out2 = model(tokens, repackage_hidden(out.hidden))
    assert out2.logits.shape == (12, 13)
    params = dict(model.named_parameters())
    for name, blocks in model.gate_layout().items():
        rows = blocks if isinstance(blocks, int) else sum(r for _, r in blocks)
        assert isinstance(blocks, int) or rows == params[name].shape[0], name
    model_double = build_model(kind, 13, **TINY[kind]).double()
    assert all(t.dtype == torch.float64 and t.shape[-2] == 2 for t in _tensors(model_double.init_hidden(2)))


def _tensors(hidden) -> list[torch.Tensor]:
    """The tensors of a (nested) hidden state."""
    if isinstance(hidden, torch.Tensor):
        return [hidden]
    return [t for part in hidden for t in _tensors(part)]


def test_embedded_dropout_drops_whole_word_types():
    torch.manual_seed(0)
    embed = torch.nn.Embedding(50, 4)
    words = torch.arange(50).repeat(3).view(6, 25)
    out = embedded_dropout(embed, words, dropout=0.5)
    zero_rows = out.abs().sum(-1) == 0  # [6, 25]
    per_type = zero_rows.view(3, 50)
    assert torch.equal(per_type[0], per_type[1]) and torch.equal(per_type[0], per_type[2])
    assert 0 < per_type[0].sum() < 50
    kept = ~zero_rows
    torch.testing.assert_close(out[kept], embed(words)[kept] * 2.0)
    assert torch.equal(embedded_dropout(embed, words, dropout=0.0), embed(words))


def test_locked_dropout_same_mask_at_every_step():
    torch.manual_seed(0)
    drop = LockedDropout()
    x = torch.ones(7, 3, 20)
    y = drop(x, 0.5)
    assert torch.equal(y[0], y[6]) and torch.equal(y[2], y[4])
    assert set(y.unique().tolist()) == {0.0, 2.0}
    assert torch.equal(drop.eval()(x, 0.5), x)


def test_time_batched_linear_gradients_match_autograd():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    xs = torch.randn(5, 3, 6, generator=gen, dtype=torch.float64)
    h0 = torch.randn(3, 4, generator=gen, dtype=torch.float64, requires_grad=True)

    def unroll(step):
        h, total = h0, 0
        for x in xs:
            h = torch.tanh((x + step(h))[:, :4])
            total = total + h.pow(2).sum()
        return total

    unroll(lambda h: h @ weight.t()).backward()
    expected = weight.grad.clone(), h0.grad.clone()
    weight.grad, h0.grad = None, None
    batched = TimeBatchedLinear(weight * 1.0)  # also through a non-leaf weight
    unroll(batched.step).backward()
    torch.testing.assert_close(weight.grad, expected[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h0.grad, expected[1], rtol=1e-12, atol=1e-12)
