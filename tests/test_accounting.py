"""Parameter and FLOPs accounting against the spec's table (spec §2.2, §8)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from selfish import accounting
from selfish.models import StackedLSTM


def paper_lstm() -> nn.Module:
    with torch.device("meta"):
        return StackedLSTM(10000, emsize=1500, nhid=1500, nlayers=2, dropout=0.65)


def maskable_density(model: nn.Module, density: float) -> dict[str, float]:
    return {n: density for n, p in model.named_parameters() if p.dim() >= 2 and "bias" not in n}


def test_paper_lstm_counts_and_flops():
    model = paper_lstm()
    counts = accounting.count_tensors(model, nominal_density=maskable_density(model, 0.33))
    summary = accounting.summarize(
        counts, method="random", update_interval=1328, train_tokens_total=929_580 * 100
    )
    assert summary["params_dense"] == 66_000_000
    assert summary["params_nonzero"] == 21_780_000
    assert summary["params_other"] == 4 * 1500 * 2 * 2 + 10000  # LSTM biases + decoder bias
    # 2 * (4*1500*3000*2 + 1500*10^4) = 102 MFLOPs per token dense (spec §8); the embedding is a lookup
    assert summary["flops"]["forward_dense_per_token"] == 102_000_000
    assert summary["flops"]["forward_sparse_per_token"] == pytest.approx(0.33 * 102_000_000, rel=1e-6)
    assert summary["flops"]["train_per_token"] == pytest.approx(3 * 0.33 * 102_000_000, rel=1e-6)


def test_training_flops_conventions():
    fd, fs = 100.0, 30.0
    assert accounting.training_flops_per_token(fd, fs, "dense", 10) == 300.0
    assert accounting.training_flops_per_token(fd, fs, "static", 10) == 90.0
    assert accounting.training_flops_per_token(fd, fs, "random", 10) == 90.0
    assert accounting.training_flops_per_token(fd, fs, "momentum", 10) == 160.0
    assert accounting.training_flops_per_token(fd, fs, "gradient", 9) == pytest.approx(
        (90 * 9 + 60 + 100) / 10
    )
    with pytest.raises(ValueError, match="allowed"):
        accounting.training_flops_per_token(fd, fs, "magic", 1)


def test_tied_weight_counts_once_but_is_used_by_the_decoder():
    model = StackedLSTM(100, emsize=8, nhid=8, nlayers=1, dropout=0.0, tied=True)
    counts = {c.name: c for c in accounting.count_tensors(model)}
    assert "decoder.weight" not in counts  # shared Parameter listed once
    assert counts["encoder.weight"].forward_uses == 1  # lookup is free, the decoder matmul is not


def test_realised_masks_are_counted():
    model = StackedLSTM(50, emsize=4, nhid=4, nlayers=1, dropout=0.0)
    masks = {"rnn.weight_hh_l0": torch.zeros(16, 4, dtype=torch.bool)}
    masks["rnn.weight_hh_l0"][:3] = True
    counts = {c.name: c for c in accounting.count_tensors(model, masks=masks)}
    assert counts["rnn.weight_hh_l0"].nonzero == 12 and counts["rnn.weight_hh_l0"].maskable
    assert not counts["rnn.weight_ih_l0"].maskable


def test_training_method_mapping():
    assert accounting.training_method(False, 0.5, "random") == "dense"
    assert accounting.training_method(True, 0.0, "gradient") == "static"
    assert accounting.training_method(True, 0.5, "gradient") == "gradient"
    assert accounting.training_method(True, 0.5, "random_rnn") == "random"
