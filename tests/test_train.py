"""The training loop: events, SNT-ASGD switch, masks through training, bitwise resume, stop and divergence."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from selfish import experiment
from selfish.optim import SNTASGD
from selfish.train import checkpoint as ckpt


class ListSink:
    def __init__(self):
        self.records: list[dict] = []
        self.closed: str | None = None

    def write(self, record: dict) -> None:
        self.records.append(copy.deepcopy(record))

    def close(self, status: str) -> None:
        self.closed = status

    def of(self, kind: str) -> list[dict]:
        return [r for r in self.records if r["type"] == kind]


def tiny_corpus(vocab: int = 50, n_train: int = 4000, seed: int = 0) -> SimpleNamespace:
    """A synthetic corpus with learnable structure: token t+1 = (t * 7 + 3) mod vocab, with noise."""
    g = torch.Generator().manual_seed(seed)

    def stream(n: int) -> torch.Tensor:
        out = torch.empty(n, dtype=torch.long)
        out[0] = 0
        noise = torch.rand(n, generator=g) < 0.1
        rand = torch.randint(0, vocab, (n,), generator=g)
        for i in range(1, n):
            out[i] = rand[i] if noise[i] else (out[i - 1] * 7 + 3) % vocab
        return out

    return SimpleNamespace(train=stream(n_train), valid=stream(800), test=stream(800), vocab_size=vocab)


def tiny_cfg(**over) -> dict:
    cfg = {
        "name": "tiny",
        "seed": 7,
        "device": "cpu",
        "data": {
            "corpus": "ptb",
            "batch_size": 4,
            "eval_batch_size": 4,
            "test_batch_size": None,
            "bptt": 10,
            "variable_bptt": False,
            "max_seq_len_delta": None,
        },
        "model": {"type": "lstm", "emsize": 16, "nhid": 16, "nlayers": 2, "dropout": 0.1, "tied": False},
        "sparse": {
            "enabled": True,
            "init": "uniform",
            "density": 0.4,
            "death": "magnitude",
            "growth": "random",
            "redistribution": "none",
            "death_rate": 0.5,
            "death_rate_min": 0.005,
            "decay": "cosine",
            "update_every": "epoch",
            "growth_count": "bernoulli",
            "include": [],
            "exclude": [],
            "update_in_switch_epoch": False,
        },
        "optim": {
            "name": "sgd",
            "lr": 5.0,
            "clip": 0.25,
            "wdecay": 1.2e-6,
            "nonmono": 5,
            "momentum": 0.0,
            "asgd": True,
            "alpha": 0.0,
            "beta": 0.0,
            "finetuning": [],
            "when": [],
        },
        "train": {"epochs": 3, "max_steps_per_epoch": None, "log_interval": 20, "checkpoint": True},
    }
    for key, value in over.items():
        section, _, leaf = key.partition(".")
        if leaf:
            cfg[section][leaf] = value
        else:
            cfg[section] = value
    return cfg


def build(cfg: dict, tmp: Path | None, sinks=(), corpus=None, on_epoch=None):
    return experiment.build(
        cfg,
        data_dir=None,
        cache_dir=Path("/nonexistent"),
        sinks=sinks,
        checkpoint_dir=tmp,
        corpus=corpus or tiny_corpus(),
        on_epoch=on_epoch,
        device=torch.device("cpu"),
    )


def force_switch_at(trainer, epoch: int) -> None:
    """Make the NT trigger fire at ``epoch`` (the real rule is tested in test_optim)."""
    real = trainer.trigger.should_switch

    def fake(val_loss: float) -> bool:
        real(val_loss)
        return trainer.state.epoch == epoch

    trainer.trigger.should_switch = fake


def test_events_masks_and_switch(tmp_path):
    sink = ListSink()
    checked: list[int] = []

    def check_masks(record):
        masking = trainer.masking
        averages = trainer.optimizer.averages() if isinstance(trainer.optimizer, SNTASGD) else {}
        for name, mask in masking.masks.items():
            param = masking.params[name]
            assert torch.all(param.detach()[~mask] == 0), name
            if param in averages:
                assert torch.all(averages[param][~mask] == 0), f"average of a pruned weight: {name}"
        checked.append(record["epoch"])

    trainer = build(tiny_cfg(), tmp_path, sinks=[sink], on_epoch=check_masks)
    force_switch_at(trainer, 2)
    result = trainer.run()
    assert result["status"] == "completed" and sink.closed == "completed"
    assert [r["type"] for r in sink.records][0] == "start"
    assert [r["type"] for r in sink.records][-2:] == ["test", "end"]
    epochs = sink.of("epoch")
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert [r["phase"] for r in epochs] == ["sgd", "asgd", "asgd"]
    assert [r["switched"] for r in epochs] == [False, True, False]
    # the original skips the topology update in the switch epoch (spec §10.7)
    assert epochs[0]["mask"] is not None and epochs[1]["mask"] is None and epochs[2]["mask"] is not None
    assert isinstance(trainer.optimizer, SNTASGD)
    steps = [r["step"] for r in sink.records if r["type"] in ("step", "epoch")]
    assert steps == sorted(steps)
    # masked weights were exactly zero at every epoch end, in raw and averaged weights
    assert checked == [1, 2, 3]
    start = sink.of("start")[0]
    assert start["params_dense"] > start["params_nonzero"] > 0
    assert 0.35 < start["density"] < 0.45
    assert math.isfinite(sink.of("test")[0]["test_ppl"])


def test_update_in_switch_epoch_option(tmp_path):
    sink = ListSink()
    trainer = build(tiny_cfg(**{"sparse.update_in_switch_epoch": True}), tmp_path, sinks=[sink])
    force_switch_at(trainer, 2)
    trainer.run()
    assert all(r["mask"] is not None for r in sink.of("epoch"))


def test_dense_run_trains_through_the_switch(tmp_path):
    cfg = tiny_cfg(**{"sparse.enabled": False})
    sink = ListSink()
    trainer = build(cfg, tmp_path, sinks=[sink])
    force_switch_at(trainer, 1)
    result = trainer.run()
    assert result["status"] == "completed"
    assert trainer.masking is None and isinstance(trainer.optimizer, SNTASGD)
    epochs = sink.of("epoch")
    assert epochs[-1]["val_loss"] < epochs[0]["val_loss"] + 0.5


def _final_weights(trainer) -> dict:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("switch_epoch", [2, 99])
def test_resume_is_bitwise_identical(tmp_path, switch_epoch):
    cfg = tiny_cfg(
        **{"train": {"epochs": 4, "max_steps_per_epoch": None, "log_interval": 20, "checkpoint": True}}
    )
    full_sink = ListSink()
    full = build(cfg, tmp_path / "full", sinks=[full_sink])
    force_switch_at(full, switch_epoch)
    full.run()

    # a run that stops after epoch 2 (as if killed after its checkpoint), then resumes in a new Trainer
    cut_dir = tmp_path / "cut"
    first = build(cfg, cut_dir)
    force_switch_at(first, switch_epoch)
    first.settings = first.settings.__class__(**{**first.settings.__dict__, "epochs": 2})
    first.run()
    resumed_sink = ListSink()
    second = build(cfg, cut_dir, sinks=[resumed_sink])
    force_switch_at(second, switch_epoch)
    second.run(resume=True)

    a, b = full_sink.of("epoch")[2:], resumed_sink.of("epoch")
    assert [r["epoch"] for r in b] == [3, 4]
    for ra, rb in zip(a, b, strict=True):
        assert ra["val_loss"] == rb["val_loss"] and ra["train_loss"] == rb["train_loss"]
    assert full_sink.of("test")[0]["test_loss"] == resumed_sink.of("test")[0]["test_loss"]
    last_full = ckpt.load(tmp_path / "full" / "last.pt")
    last_cut = ckpt.load(cut_dir / "last.pt")
    for key, value in last_full["model"].items():
        assert torch.equal(value, last_cut["model"][key]), key


def test_stop_from_on_epoch_is_clean(tmp_path):
    sink = ListSink()

    def stop(record):
        if record["epoch"] == 2:
            raise experiment.StopTraining("pruned at epoch 2")

    trainer = build(tiny_cfg(), tmp_path, sinks=[sink], on_epoch=stop)
    result = trainer.run()
    assert result["status"] == "stopped" and result["reason"] == "pruned at epoch 2"
    assert sink.of("end")[0]["status"] == "stopped"
    assert ckpt.load(tmp_path / "last.pt")["loop"]["epoch"] == 2


def test_divergence_keeps_last_good_checkpoint(tmp_path):
    sink = ListSink()

    def poison(record):
        if record["epoch"] == 1:
            with torch.no_grad():
                trainer.model.decoder.bias.fill_(float("nan"))

    trainer = build(tiny_cfg(), tmp_path, sinks=[sink], on_epoch=poison)
    result = trainer.run()
    assert result["status"] == "diverged" and "nan" in result["reason"].lower()
    assert ckpt.load(tmp_path / "last.pt")["loop"]["epoch"] == 1
    assert sink.of("end")[0]["status"] == "diverged"


def test_a_failing_sink_does_not_stop_training(tmp_path):
    class Broken:
        def write(self, record):
            raise OSError("disk full")

        def close(self, status):
            raise OSError("disk full")

    good = ListSink()
    with pytest.warns(UserWarning, match="switched off"):
        result = build(tiny_cfg(), tmp_path, sinks=[Broken(), good]).run()
    assert result["status"] == "completed" and good.closed == "completed"


def test_corrupt_last_checkpoint_falls_back_to_previous(tmp_path):
    build(tiny_cfg(), tmp_path).run()
    (tmp_path / "last.pt").write_bytes(b"truncated")
    state, used, problems = ckpt.load_latest(tmp_path / "last.pt")
    assert used.name == "last.prev.pt" and state["loop"]["epoch"] == 2
    assert problems and "last.pt" in problems[0]


def test_snfs_keeps_the_overall_density_through_updates(tmp_path):
    # Momentum growth + momentum redistribution with momentum SGD (the SNFS baseline): the decoder's
    # momentum dominates the scores, so its share is capped; the total must stay at the target.
    cfg = tiny_cfg(**{"train": {"epochs": 4, "max_steps_per_epoch": None, "log_interval": 20, "checkpoint": False}})
    cfg["sparse"].update(growth="momentum", redistribution="momentum", density=0.33, death_rate=0.8)
    cfg["optim"].update(momentum=0.9, asgd=False, lr=0.5)
    sink = ListSink()
    build(cfg, tmp_path, sinks=[sink]).run()
    densities = [r["density"] for r in sink.of("epoch")]
    assert len(densities) == 4
    assert all(abs(d - 0.33) < 0.01 for d in densities), densities
