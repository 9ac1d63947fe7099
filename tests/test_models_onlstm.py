"""ON-LSTM (spec §6.3): shapes, gate order, DropConnect on the raw weight, fast == plain, names, counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfish.models import ONLSTM, build_model, repackage_hidden
from selfish.models.onlstm import onlstm_update
from tests.model_training import losses_on_repeated_batch


def _tiny(**kw) -> ONLSTM:
    torch.manual_seed(0)
    options = dict(emsize=6, nhid=8, nlayers=3, chunk_size=2, wdrop=0.3, dropoute=0.1)
    options.update(kw)
    return ONLSTM(17, **options)


def test_forward_backward_shapes_and_regularizer():
    model = _tiny()
    out = model(torch.randint(0, 17, (5, 3)), model.init_hidden(3))
    assert out.logits.shape == (15, 17)
    assert [tuple(h.shape) for h, _ in out.hidden] == [(3, 8), (3, 8), (3, 6)]
    assert [tuple(r.shape) for r in out.raw_outputs] == [(5, 3, 8), (5, 3, 8), (5, 3, 6)]
    reg = model.regularizer(out, 2.0, 1.0)
    raw = out.raw_outputs[-1]
    expected = 2.0 * raw.pow(2).mean() + 1.0 * (raw[1:] - raw[:-1]).pow(2).mean()
    torch.testing.assert_close(reg, expected)
    assert model.regularizer(out, 0.0, 0.0).item() == 0.0
    (F.cross_entropy(out.logits, torch.randint(0, 17, (15,))) + reg).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert isinstance(repackage_hidden(out.hidden), list)


def test_ar_on_dropped_output_option():
    model = _tiny(ar_on_raw_output=False)
    out = model(torch.randint(0, 17, (4, 2)), model.init_hidden(2))
    torch.testing.assert_close(model.regularizer(out, 3.0, 0.0), 3.0 * out.dropped_outputs[-1].pow(2).mean())


def test_gate_order_matches_original_split():
    """Rows: master_i | master_f | o | g | i | f. Check the update against a direct formula."""
    batch, n_chunk, chunk = 2, 3, 2
    h = n_chunk * chunk
    gates = torch.randn(batch, 4 * h + 2 * n_chunk, dtype=torch.float64)
    cx = torch.randn(batch, h, dtype=torch.float64)
    hy, cy = onlstm_update(gates, cx, n_chunk, chunk)
    mi, mf = gates[:, :n_chunk], gates[:, n_chunk : 2 * n_chunk]
    o, g, i, f = gates[:, 2 * n_chunk :].split(h, 1)
    master_i = (1 - torch.cumsum(torch.softmax(mi, 1), 1)).repeat_interleave(chunk, 1)
    master_f = torch.cumsum(torch.softmax(mf, 1), 1).repeat_interleave(chunk, 1)
    w = master_f * master_i
    f_hat = torch.sigmoid(f) * w + (master_f - w)
    i_hat = torch.sigmoid(i) * w + (master_i - w)
    c_ref = f_hat * cx + i_hat * torch.tanh(g)
    torch.testing.assert_close(cy, c_ref)
    torch.testing.assert_close(hy, torch.sigmoid(o) * torch.tanh(c_ref))
    model = _tiny()
    layout = model.gate_layout()
    assert layout["rnn.cells.0.hh.weight"] == [
        ("master_i", 4),
        ("master_f", 4),
        ("o", 8),
        ("g", 8),
        ("i", 8),
        ("f", 8),
    ]
    params = dict(model.named_parameters())
    for name, blocks in layout.items():
        assert sum(r for _, r in blocks) == params[name].shape[0]


@pytest.mark.parametrize("training", [True, False])
def test_fast_equals_plain(training: bool):
    model = _tiny().double().train(training)
    tokens, targets = torch.randint(0, 17, (5, 3)), torch.randint(0, 17, (15,))
    gen = torch.Generator().manual_seed(4)
    hidden = [
        (
            torch.randn(3, s, generator=gen, dtype=torch.float64),
            torch.randn(3, s, generator=gen, dtype=torch.float64),
        )
        for s in model.layer_sizes[1:]
    ]
    results = []
    for fast in (False, True):
        model.fast = fast
        model.zero_grad()
        torch.manual_seed(1)
        out = model(tokens, hidden)
        (F.cross_entropy(out.logits, targets) + model.regularizer(out, 2.0, 1.0)).backward()
        results.append((out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-12, atol=1e-12)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(grad, results[1][1][name], rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_dropconnect_keeps_masked_raw_weights_out(fast: bool, training: bool):
    """A zeroed column j of the raw hh weight: h_{t-1}[j] of that layer cannot reach any output."""
    model = _tiny(wdrop=0.5, fast=fast).train(training)
    with torch.no_grad():
        model.rnn.cells[0].hh.weight[:, 3] = 0.0
    tokens = torch.randint(0, 17, (4, 2))
    hidden = model.init_hidden(2)
    bumped = [tuple(t.clone() for t in state) for state in hidden]
    bumped[0][0][:, 3] = 5.0
    torch.manual_seed(2)
    base = model(tokens, hidden).logits
    torch.manual_seed(2)
    other = model(tokens, bumped).logits
    assert torch.equal(base, other)
    # control: an unmasked column does change the outputs
    bumped[0][0][:, 4] = 5.0
    torch.manual_seed(2)
    assert not torch.equal(base, model(tokens, bumped).logits)


def test_dropconnect_semantics_train_and_eval():
    cell = _tiny(wdrop=0.25).rnn.cells[1]
    cell.eval()
    torch.testing.assert_close(cell.effective_hh_weight(), cell.hh.weight * 0.75)
    cell.train()
    eff = cell.effective_hh_weight()
    kept = eff != 0
    torch.testing.assert_close(eff[kept], cell.hh.weight[kept])  # no rescaling, as the original
    assert 0 < (~kept).sum() < eff.numel()


def test_original_names_and_roundtrip():
    model = _tiny()
    names = [n for n, _ in model.named_parameters()]
    assert names[0] == "encoder.weight" and names[-1] == "decoder.bias"
    assert {"rnn.cells.2.ih.0.weight", "rnn.cells.2.hh.weight", "rnn.cells.0.hh.bias"} <= set(names)
    assert model.decoder.weight is model.encoder.weight
    other = _tiny()
    with torch.no_grad():
        for p in other.parameters():
            p.zero_()
    other.load_state_dict(model.state_dict())
    model.eval(), other.eval()
    tokens = torch.randint(0, 17, (4, 2))
    assert torch.equal(model(tokens, model.init_hidden(2)).logits, other(tokens, other.init_hidden(2)).logits)
    with pytest.raises(ValueError, match="ties"):
        _tiny(tied=False)


def test_paper_onlstm_parameter_count():
    with torch.device("meta"):
        model = build_model("onlstm", 10000, emsize=400, nhid=1150, nlayers=3, chunk_size=10)
    maskable = sum(p.numel() for n, p in model.named_parameters() if p.dim() >= 2 and "bias" not in n)
    assert maskable == 10000 * 400 + 4830 * 400 + 3 * 4830 * 1150 + 1680 * 1150 + 1680 * 400
    assert round(maskable / 1e6, 1) == 25.2


@pytest.mark.parametrize("fast", [True, False])
def test_loss_decreases_on_repeated_corpus(fast: bool):
    torch.manual_seed(0)
    model = ONLSTM(
        20, 16, 16, nlayers=2, chunk_size=4, dropout=0, dropouth=0, dropouti=0, dropoute=0, wdrop=0, fast=fast
    )
    losses = losses_on_repeated_batch(model, lr=0.1)
    assert losses[-1] < 0.8 * losses[0]
