"""AWD-LSTM-MoS (spec §6.4): log-probabilities, mixture formula, DropConnect on the raw weight, names."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfish.models import MoS, build_model
from tests.model_training import losses_on_repeated_batch


def _tiny(**kw) -> MoS:
    torch.manual_seed(0)
    options = dict(emsize=4, nhid=7, nhidlast=5, nlayers=3, n_experts=3, wdrop=0.3)
    options.update(kw)
    return MoS(19, **options)


def test_forward_backward_shapes_and_log_probs():
    model = _tiny()
    out = model(torch.randint(0, 19, (5, 3)), model.init_hidden(3))
    assert out.logits.shape == (15, 19)
    assert [tuple(h.shape) for h, _ in out.hidden] == [(1, 3, 7), (1, 3, 7), (1, 3, 5)]
    torch.testing.assert_close(out.logits.logsumexp(-1), torch.zeros(15), atol=1e-5, rtol=0)
    targets = torch.randint(0, 19, (15,))
    torch.testing.assert_close(F.cross_entropy(out.logits, targets), F.nll_loss(out.logits, targets))
    reg = model.regularizer(out, 2.0, 1.0)
    raw = out.raw_outputs[-1]
    expected = 2.0 * out.dropped_outputs[-1].pow(2).mean() + (raw[1:] - raw[:-1]).pow(2).mean()
    torch.testing.assert_close(reg, expected)
    (F.cross_entropy(out.logits, targets) + reg).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_mixture_matches_original_formula_in_eval():
    model = _tiny().eval()
    tokens = torch.randint(0, 19, (4, 2))
    out = model(tokens, model.init_hidden(2))
    # the original: prob = sum_k prior_k softmax(decoder(latent_k)); log(prob + 1e-8)
    h = [(torch.zeros(1, 2, s), torch.zeros(1, 2, s)) for s in model.hidden_sizes]
    x = model.encoder(tokens)
    for k, rnn in enumerate(model.rnns):
        lstm = torch.nn.LSTM(x.size(2), model.hidden_sizes[k])
        with torch.no_grad():
            lstm.weight_ih_l0.copy_(rnn.module.weight_ih_l0)
            lstm.weight_hh_l0.copy_(rnn.module.weight_hh_l0_raw)
            lstm.bias_ih_l0.copy_(rnn.module.bias_ih_l0)
            lstm.bias_hh_l0.copy_(rnn.module.bias_hh_l0)
        x, _ = lstm(x, h[k])
    prior = F.softmax(model.prior(x).view(-1, 3), -1)
    logit = model.decoder(model.latent(x).view(-1, 4))
    prob = (F.softmax(logit, -1).view(-1, 3, 19) * prior.unsqueeze(2)).sum(1)
    torch.testing.assert_close(out.logits, torch.log(prob + 1e-8), atol=1e-5, rtol=1e-5)


def test_dropconnect_keeps_masked_raw_weights_out():
    """A zeroed column j of a raw hh weight: h_{t-1}[j] of that layer cannot reach any output."""
    for training in (True, False):
        model = _tiny(wdrop=0.5).train(training)
        with torch.no_grad():
            model.rnns[1].module.weight_hh_l0_raw[:, 2] = 0.0
        tokens = torch.randint(0, 19, (4, 2))
        hidden = model.init_hidden(2)
        bumped = [tuple(t.clone() for t in state) for state in hidden]
        bumped[1][0][0, :, 2] = 5.0
        torch.manual_seed(2)
        base = model(tokens, hidden).logits
        torch.manual_seed(2)
        assert torch.equal(base, model(tokens, bumped).logits)
        bumped[1][0][0, :, 3] = 5.0  # control: an unmasked column matters
        torch.manual_seed(2)
        assert not torch.equal(base, model(tokens, bumped).logits)


def test_dropconnect_uses_weightdrop_semantics(monkeypatch):
    model = _tiny(wdrop=0.5, dropout=0, dropouth=0, dropouti=0, dropoute=0, dropoutl=0)
    seen = []
    real_lstm = torch.lstm

    def spy(inputs, state, weights, *args):
        seen.append(weights[1].detach().clone())
        return real_lstm(inputs, state, weights, *args)

    monkeypatch.setattr(torch, "lstm", spy)
    model.train()(torch.randint(0, 19, (3, 2)), model.init_hidden(2))
    model.eval()(torch.randint(0, 19, (3, 2)), model.init_hidden(2))
    raw = model.rnns[0].module.weight_hh_l0_raw.detach()
    kept = seen[0] != 0
    torch.testing.assert_close(seen[0][kept], raw[kept] * 2.0)  # F.dropout scaling 1/(1-p)
    assert 0 < (~kept).sum() < raw.numel()
    assert torch.equal(seen[3], raw)  # evaluation: the raw weight


def test_original_names_and_roundtrip():
    model = _tiny()
    names = {n for n, _ in model.named_parameters()}
    expected = {"encoder.weight", "prior.weight", "latent.0.weight", "latent.0.bias", "decoder.bias"}
    for k in range(3):
        expected |= {
            f"rnns.{k}.module.{p}" for p in ("weight_ih_l0", "weight_hh_l0_raw", "bias_ih_l0", "bias_hh_l0")
        }
    assert names == expected
    assert model.decoder.weight is model.encoder.weight
    layout = model.gate_layout()
    assert layout["rnns.2.module.weight_hh_l0_raw"] == [("i", 5), ("f", 5), ("g", 5), ("o", 5)]
    other = _tiny()
    with torch.no_grad():
        for p in other.parameters():
            p.zero_()
    other.load_state_dict(model.state_dict())
    model.eval(), other.eval()
    tokens = torch.randint(0, 19, (4, 2))
    assert torch.equal(model(tokens, model.init_hidden(2)).logits, other(tokens, other.init_hidden(2)).logits)


def test_wt2_parameter_count():
    with torch.device("meta"):
        model = build_model("mos", 33278)
    maskable = sum(p.numel() for n, p in model.named_parameters() if p.dim() >= 2 and "bias" not in n)
    lstm = 4600 * 300 + 4600 * 1150 + 2 * 4600 * 1150 + 2600 * 1150 + 2600 * 650
    assert maskable == 33278 * 300 + lstm + 15 * 650 + 4500 * 650


def test_loss_decreases_on_repeated_corpus():
    torch.manual_seed(0)
    model = MoS(
        20,
        8,
        16,
        12,
        nlayers=2,
        n_experts=2,
        dropout=0,
        dropouth=0,
        dropouti=0,
        dropoute=0,
        dropoutl=0,
        wdrop=0,
    )
    losses = losses_on_repeated_batch(model, lr=0.1)
    assert losses[-1] < 0.8 * losses[0]


def test_mixture_function_matches_autograd_reference():
    """The hand-written mixture backward: gradcheck, and equal to logsumexp(log_softmax + log prior)."""
    from selfish.models.mos import _MixtureLogProb

    gen = torch.Generator().manual_seed(0)
    z = (5 * torch.randn(6, 3, 11, generator=gen, dtype=torch.float64)).requires_grad_()
    log_prior = F.log_softmax(torch.randn(6, 3, generator=gen, dtype=torch.float64), -1).requires_grad_()
    assert torch.autograd.gradcheck(_MixtureLogProb.apply, (z, log_prior))
    reference = torch.logsumexp(F.log_softmax(z, -1) + log_prior.unsqueeze(2), 1)
    torch.testing.assert_close(_MixtureLogProb.apply(z, log_prior), reference, rtol=1e-12, atol=1e-12)
