"""`experiment.evaluate`: our checkpoints and the original code's plain state_dicts score the same model."""

from __future__ import annotations

import math

import pytest
import torch

from selfish import experiment
from selfish.models import StackedLSTM
from selfish.train import CheckpointError
from tests.test_train import build, tiny_cfg, tiny_corpus


def _evaluate(cfg, path, corpus):
    return experiment.evaluate(cfg, path, data_dir=None, cache_dir=path.parent, device=torch.device("cpu"),
                               corpus=corpus)


def test_original_plain_state_dict_is_scored(tmp_path):
    corpus = tiny_corpus()
    cfg = tiny_cfg(**{"sparse.enabled": False})
    torch.manual_seed(3)
    original = StackedLSTM(corpus.vocab_size, emsize=16, nhid=16, nlayers=2, dropout=0.1)
    with torch.no_grad():  # a "trained" sparse model as the original code would save it
        original.rnn.weight_hh_l0.mul_(torch.rand_like(original.rnn.weight_hh_l0) < 0.33)
    torch.save(original.state_dict(), tmp_path / "original.pt")  # SR main.py: a plain state_dict

    result = _evaluate(cfg, tmp_path / "original.pt", corpus)
    trainer = build(cfg, None, corpus=corpus)
    trainer.model.load_state_dict(original.state_dict())
    expected = trainer.evaluate(trainer.test_data, trainer.settings.test_batch_size)
    assert result["test_loss"] == pytest.approx(expected, rel=1e-6)
    assert result["test_ppl"] == pytest.approx(math.exp(expected), rel=1e-6)
    nonzero = sum(int((p != 0).sum()) for p in original.parameters() if p.dim() >= 2)
    assert result["nonzero_weights"] == nonzero


def test_our_best_checkpoint_is_scored(tmp_path):
    corpus = tiny_corpus()
    cfg = tiny_cfg(**{"train": {"epochs": 1, "max_steps_per_epoch": None, "log_interval": 20, "checkpoint": True}})
    trainer = build(cfg, tmp_path, corpus=corpus)
    run = trainer.run()
    result = _evaluate(cfg, tmp_path / "best.pt", corpus)
    assert result["test_loss"] == pytest.approx(run["test_loss"], rel=1e-6)


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
    corpus = tiny_corpus()
    other = StackedLSTM(corpus.vocab_size, emsize=8, nhid=8, nlayers=1, dropout=0.0)
    torch.save(other.state_dict(), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt"):
        _evaluate(tiny_cfg(**{"sparse.enabled": False}), tmp_path / "other.pt", corpus)
