"""End to end on the real Penn Treebank files: a 2x200 sparse LSTM trains and validation ppl falls."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from selfish import experiment
from selfish.data import load_corpus
from tests.test_train import ListSink, tiny_cfg


def test_sparse_2x200_lstm_learns_ptb(shared_data: Path, tmp_path: Path):
    corpus = load_corpus("ptb", shared_data, tmp_path / "cache").slice(train=84_000, valid=8_000, test=8_000)
    cfg = tiny_cfg(
        model={"type": "lstm", "emsize": 200, "nhid": 200, "nlayers": 2, "dropout": 0.2, "tied": False},
        data={"corpus": "ptb", "batch_size": 20, "eval_batch_size": 20, "test_batch_size": None, "bptt": 35,
              "variable_bptt": False, "max_seq_len_delta": None},
        train={"epochs": 2, "max_steps_per_epoch": None, "log_interval": 20, "checkpoint": True},
    )
    cfg["sparse"]["density"] = 0.33
    cfg["optim"]["lr"] = 20.0
    sink = ListSink()
    trainer = experiment.build(cfg, data_dir=None, cache_dir=tmp_path, sinks=[sink], checkpoint_dir=tmp_path,
                               corpus=corpus, device=torch.device("cpu"))
    untrained_ppl = math.exp(trainer.evaluate(trainer.val_data, 20))
    result = trainer.run()
    epochs, windows = sink.of("epoch"), sink.of("step")
    assert result["status"] == "completed"
    # Validation perplexity falls from the untrained model's (about the 10,000-way uniform guess) by more
    # than 10x in each epoch. (After 120 steps the model is near the unigram plateau, where epoch-to-epoch
    # changes are float-rounding noise that differs between CPUs, so the epochs are not compared.)
    assert untrained_ppl > 5000
    assert all(e["val_ppl"] < untrained_ppl / 10 for e in epochs), (untrained_ppl, [e["val_ppl"] for e in epochs])
    assert windows[-1]["loss"] < windows[0]["loss"] - 1.0  # training loss: more than a nat lower at the end
    assert abs(trainer.masking.density() - 0.33) < 0.01
    assert epochs[0]["mask"]["total"]["removed"] > 0 and epochs[0]["mask"]["total"]["regrown"] > 0
