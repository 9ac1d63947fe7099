"""``train.precision: bf16``: autocast forward passes; the fast recurrences follow autocast, the weights,
gradients, masks and optimizer state stay fp32, and runs stay reproducible and resumable."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfish.models import build_model
from selfish.spec import SpecError, spec_from_dict
from selfish.train import checkpoint as ckpt
from tests.test_train import ListSink, build, force_switch_at, tiny_cfg

TINY = {
    "rhn": dict(emsize=12, nhid=12, recurrence_depth=3, tied=True, couple=True, dropouth=0.25),
    "rhn_uncoupled": dict(emsize=12, nhid=12, recurrence_depth=3, tied=True, couple=False, dropouth=0.25),
    "onlstm": dict(emsize=10, nhid=20, nlayers=2, chunk_size=5, wdrop=0.2),
    "mos": dict(emsize=12, nhid=16, nhidlast=12, nlayers=2, n_experts=3, wdrop=0.2),
}


def _loss_and_grads(model, tokens, targets, fast: bool, bf16: bool):
    model.fast = fast
    model.zero_grad()
    torch.manual_seed(3)  # same dropout masks in every variant
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(tokens, model.init_hidden(tokens.size(1)))
        loss = F.cross_entropy(out.logits.float(), targets)
    loss.backward()
    return out.logits.detach().float(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


@pytest.mark.parametrize("name", list(TINY))
def test_fast_recurrence_under_bf16_autocast_matches_fp32_within_bf16_rounding(name: str):
    torch.manual_seed(0)
    model = build_model(name.split("_")[0], 40, **TINY[name]).train()
    tokens, targets = torch.randint(0, 40, (6, 3)), torch.randint(0, 40, (18,))
    ref_logits, ref_grads = _loss_and_grads(model, tokens, targets, fast=True, bf16=False)
    for fast in (True, False):
        logits, grads = _loss_and_grads(model, tokens, targets, fast=fast, bf16=True)
        assert not torch.equal(logits, ref_logits)  # bf16 really ran (not silently fp32)
        assert _relative_error(logits, ref_logits) < 0.03
        assert all(grad.dtype == torch.float32 for grad in grads.values())
        # The whole gradient (small, cancelling ones like the MoS prior's are noisier alone) and the
        # recurrent weights' gradients, which the fast paths form themselves.
        everything = torch.cat([g.flatten() for g in grads.values()])
        assert _relative_error(everything, torch.cat([g.flatten() for g in ref_grads.values()])) < 0.03
        for param_name in grads:
            if param_name.startswith(("rnns.", "rnn.cells.")):
                assert _relative_error(grads[param_name], ref_grads[param_name]) < 0.06, (fast, param_name)


def _run(cfg, tmp, precision: str):
    """Train; after every epoch, check the weights are fp32 and exactly 0 off the current masks."""
    sink, holder, checked = ListSink(), {}, []

    def check(record: dict) -> None:
        trainer = holder["trainer"]
        params = dict(trainer.model.named_parameters())
        for name, mask in trainer.masking.masks.items():
            assert params[name].dtype == torch.float32
            assert torch.count_nonzero(params[name][~mask]) == 0, (record["epoch"], name)
        checked.append(record["epoch"])

    cfg = {**cfg, "train": {**cfg["train"], "precision": precision}}
    holder["trainer"] = trainer = build(cfg, tmp, sinks=[sink], on_epoch=check)
    trainer.run()
    assert checked == [1, 2, 3]
    return trainer, sink


def test_bf16_training_keeps_fp32_sparse_weights_and_is_reproducible(tmp_path):
    cfg = tiny_cfg()
    _, fp32_sink = _run(cfg, tmp_path / "fp32", "fp32")
    _, bf16_sink = _run(cfg, tmp_path / "bf16", "bf16")
    _, again_sink = _run(cfg, tmp_path / "again", "bf16")
    epochs = bf16_sink.of("epoch")
    assert epochs[-1]["val_loss"] < epochs[0]["val_loss"]
    assert epochs[-1]["val_loss"] == pytest.approx(fp32_sink.of("epoch")[-1]["val_loss"], rel=0.05)
    assert epochs[-1]["val_loss"] != fp32_sink.of("epoch")[-1]["val_loss"]  # precision changed the numbers
    assert [r["val_loss"] for r in again_sink.of("epoch")] == [r["val_loss"] for r in epochs]


def test_bf16_resume_is_bitwise_identical(tmp_path):
    cfg = tiny_cfg(**{"train": {"epochs": 3, "max_steps_per_epoch": None, "log_interval": 20,
                                "checkpoint": True, "precision": "bf16"}})
    full_sink = ListSink()
    full = build(cfg, tmp_path / "full", sinks=[full_sink])
    force_switch_at(full, 2)
    full.run()
    first = build(cfg, tmp_path / "cut")
    force_switch_at(first, 2)
    first.settings = first.settings.__class__(**{**first.settings.__dict__, "epochs": 2})
    first.run()
    resumed_sink = ListSink()
    second = build(cfg, tmp_path / "cut", sinks=[resumed_sink])
    force_switch_at(second, 2)
    second.run(resume=True)
    assert full_sink.of("epoch")[2]["val_loss"] == resumed_sink.of("epoch")[0]["val_loss"]
    last_full, last_cut = ckpt.load(tmp_path / "full" / "last.pt"), ckpt.load(tmp_path / "cut" / "last.pt")
    for key, value in last_full["model"].items():
        assert torch.equal(value, last_cut["model"][key]), key


def test_precision_key_rejects_fp16_naming_the_allowed_values():
    with pytest.raises(SpecError, match=r"train\.precision: must be one of 'fp32' or 'bf16', got 'fp16'"):
        spec_from_dict({"name": "x", "train": {"precision": "fp16"}})
    assert spec_from_dict({"name": "x", "train": {"precision": "bf16"}}).train.precision == "bf16"


def test_device_given_as_a_string_works_with_autocast(tmp_path):
    # Sweep workers pass device="cpu" (a string): autocast needs its device type.
    from pathlib import Path

    from selfish import experiment
    from tests.test_train import tiny_corpus

    cfg = tiny_cfg(**{"train": {"epochs": 1, "max_steps_per_epoch": 3, "log_interval": 20, "checkpoint": False,
                                "precision": "bf16"}})
    trainer = experiment.build(cfg, data_dir=None, cache_dir=Path("/nonexistent"), checkpoint_dir=tmp_path,
                               corpus=tiny_corpus(), device="cpu")
    assert trainer.device == torch.device("cpu")
    assert trainer.run()["status"] == "completed"


def test_fused_lstm_under_bf16_autocast_runs_on_any_cpu():
    """oneDNN has no bf16 LSTM on AVX2-only CPUs (nn.LSTM under autocast raises there): the fused LSTM then
    runs in fp32, bitwise as without autocast; on CPUs with bf16 it runs under autocast as usual."""
    from selfish.models.recurrent import fused_lstm, onednn_has_bf16

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(6, 8, 2)
    x, state = torch.randn(5, 3, 6), (torch.zeros(2, 3, 8), torch.zeros(2, 3, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (h, c) = fused_lstm(lstm, x, state)
    out.float().sum().backward()
    assert all(p.grad is not None for p in lstm.parameters())
    if not onednn_has_bf16():
        expected, _ = lstm(x, state)
        assert out.dtype == torch.float32 and torch.equal(out, expected)
