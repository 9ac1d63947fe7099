"""End to end on the real Penn Treebank files: a 2x200 sparse LSTM trains and validation ppl falls."""

from __future__ import annotations

from pathlib import Path

import torch

from selfish import experiment
from selfish.data import load_corpus
from tests.test_train import ListSink, tiny_cfg


def test_sparse_2x200_lstm_learns_ptb(shared_data: Path, tmp_path: Path):
    corpus = load_corpus("ptb", shared_data, tmp_path / "cache").slice(train=42_000, valid=8_000, test=8_000)
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
    result = trainer.run()
    epochs = sink.of("epoch")
    assert result["status"] == "completed"
    assert epochs[0]["val_ppl"] < 1000  # far below the 10,000-way uniform guess
    assert epochs[1]["val_ppl"] < epochs[0]["val_ppl"]
    assert abs(trainer.masking.density() - 0.33) < 0.01
    assert epochs[0]["mask"]["total"]["removed"] > 0 and epochs[0]["mask"]["total"]["regrown"] > 0
