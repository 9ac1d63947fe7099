"""Wiring: a resolved spec -> corpus, model, masks, optimizer, trainer (contracts.md).

Used by ``runner.py`` and by sweep workers, so both take the same path. Functions here take a spec (the
pydantic object from :mod:`selfish.spec` or its ``to_dict()``) and explicit paths; nothing reads the
environment.
"""

from __future__ import annotations

import inspect
import math
import platform
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from selfish import accounting
from selfish.data import Corpus, load_corpus
from selfish.models import MODEL_REGISTRY, build_model
from selfish.train import SparseSettings, StopTraining, Trainer, TrainSettings
from selfish.train import checkpoint as ckpt
from selfish.train.loop import Sink

__all__ = ["StopTraining", "build_model_from_spec", "describe", "evaluate", "resolve_device", "run"]


def spec_dict(spec: Any) -> dict:
    """The resolved spec as a plain dict (accepts a Spec object or a dict)."""
    if isinstance(spec, Mapping):
        return dict(spec)
    return spec.to_dict()


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def corpus_for(cfg: dict, data_dir: Path | None, cache_dir: Path, corpus: Corpus | None = None) -> Corpus:
    """Load (or take) the corpus and apply the spec's token limits."""
    data = cfg["data"]
    if corpus is None:
        corpus = load_corpus(data["corpus"], data_dir, cache_dir)
    limits = {k: data.get(f"max_{k}_tokens") for k in ("train", "valid", "test")}
    if any(v is not None for v in limits.values()):
        corpus = corpus.slice(**limits)
    return corpus


def build_model_from_spec(cfg: dict, vocab_size: int) -> nn.Module:
    """Build the spec's model; only the options its constructor takes are passed (the spec rejects
    options a model type does not use, so nothing set by the user is dropped here)."""
    model_cfg = dict(cfg["model"])
    kind = model_cfg.pop("type")
    cls = MODEL_REGISTRY.get(kind)
    if cls is None:
        return build_model(kind, vocab_size, **model_cfg)  # raises the registry's clear error
    accepted = inspect.signature(cls).parameters
    options = {k: v for k, v in model_cfg.items() if k in accepted and v is not None}
    return build_model(kind, vocab_size, **options)


def train_settings(cfg: dict) -> TrainSettings:
    data, optim, train = cfg["data"], cfg["optim"], cfg["train"]
    return TrainSettings(
        epochs=train["epochs"],
        lr=optim["lr"],
        clip=optim["clip"],
        wdecay=optim["wdecay"],
        optimizer=optim["name"],
        momentum=optim.get("momentum", 0.0),
        asgd=optim.get("asgd", True),
        nonmono=optim["nonmono"],
        when=tuple(optim.get("when") or ()),
        finetuning=tuple(optim.get("finetuning") or ()),
        batch_size=data["batch_size"],
        eval_batch_size=data["eval_batch_size"],
        test_batch_size=data.get("test_batch_size") or data["eval_batch_size"],
        bptt=data["bptt"],
        variable_bptt=data.get("variable_bptt", False),
        max_seq_len_delta=data.get("max_seq_len_delta"),
        alpha=optim.get("alpha", 0.0),
        beta=optim.get("beta", 0.0),
        log_interval=train["log_interval"],
        max_steps_per_epoch=train.get("max_steps_per_epoch"),
        checkpoint=train.get("checkpoint", True),
        precision=train.get("precision", "fp32"),
        seed=cfg["seed"],
    )


def sparse_settings(cfg: dict) -> SparseSettings | None:
    sp = cfg["sparse"]
    if not sp.get("enabled", False):
        return None
    update_every = sp.get("update_every", "epoch")
    return SparseSettings(
        density=sp["density"],
        init=sp["init"],
        death=sp["death"],
        growth=sp["growth"],
        redistribution=sp["redistribution"],
        death_rate=sp["death_rate"],
        death_rate_min=sp.get("death_rate_min", 0.005),
        decay=sp["decay"],
        update_every=None if update_every in (None, "epoch") else int(update_every),
        growth_count=sp.get("growth_count", "bernoulli"),
        include=tuple(sp.get("include") or ()),
        exclude=tuple(sp.get("exclude") or ()),
        update_in_switch_epoch=sp.get("update_in_switch_epoch", False),
    )


def build(
    spec: Any,
    *,
    data_dir: Path | None,
    cache_dir: Path,
    sinks: Sequence[Sink] = (),
    checkpoint_dir: Path | None = None,
    corpus: Corpus | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    device: torch.device | None = None,
    fault_hook: Callable[[str], None] | None = None,
) -> Trainer:
    """Build a ready-to-run :class:`Trainer` from a spec (seeded: same spec, same numbers)."""
    cfg = spec_dict(spec)
    corpus = corpus_for(cfg, data_dir, cache_dir, corpus)
    device = device or resolve_device(cfg.get("device", "auto"))
    torch.manual_seed(cfg["seed"])
    model = build_model_from_spec(cfg, corpus.vocab_size)
    settings = train_settings(cfg)
    trainer = Trainer(
        model,
        corpus,
        settings,
        sparse_settings(cfg),
        device=device,
        sinks=sinks,
        checkpoint_dir=checkpoint_dir,
        spec=cfg,
        on_epoch=on_epoch,
        fault_hook=fault_hook,
    )
    trainer.start_info = {**accounting_summary(cfg, trainer), "device": str(device)}
    return trainer


def accounting_summary(cfg: dict, trainer: Trainer) -> dict:
    """Parameter counts and FLOPs of a built trainer (realised masks when sparse)."""
    masks = trainer.masking.masks if trainer.masking is not None else None
    counts = accounting.count_tensors(trainer.model, masks=masks)
    if masks is None:  # dense: count the tensors a mask would cover, all kept
        counts = [
            accounting.TensorCount(
                c.name, c.shape, c.numel, c.numel, len(c.shape) >= 2 and "bias" not in c.name, c.forward_uses
            )
            for c in counts
        ]
    sp = cfg["sparse"]
    steps = trainer._steps_per_epoch()
    method = accounting.training_method(
        bool(sp.get("enabled")), float(sp.get("death_rate", 0.0)), sp.get("growth", "random")
    )
    update_every = sp.get("update_every", "epoch")
    interval = steps if update_every in (None, "epoch") else int(update_every)
    tokens_per_epoch = steps * trainer.settings.bptt * trainer.settings.batch_size
    summary = accounting.summarize(
        counts,
        method=method,
        update_interval=interval,
        train_tokens_total=tokens_per_epoch * trainer.settings.epochs,
    )
    summary["steps_per_epoch"] = steps
    return summary


def run(
    spec: Any,
    *,
    run_dir: Path,
    data_dir: Path | None,
    cache_dir: Path,
    sinks: Sequence[Sink] = (),
    resume: bool = False,
    corpus: Corpus | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    device: torch.device | None = None,
    fault_hook: Callable[[str], None] | None = None,
) -> dict:
    """Train one spec into ``run_dir`` (checkpoints there) and return the result fields.

    ``on_epoch`` gets every epoch record and may raise :class:`StopTraining` to end the run cleanly.
    ``fault_hook`` (tests only) is called at named points of the loop and the checkpoint write.
    """
    trainer = build(
        spec,
        data_dir=data_dir,
        cache_dir=cache_dir,
        sinks=sinks,
        checkpoint_dir=Path(run_dir),
        corpus=corpus,
        on_epoch=on_epoch,
        device=device,
        fault_hook=fault_hook,
    )
    result = trainer.run(resume=resume)
    info = trainer.start_info
    result.update({k: info[k] for k in ("params_dense", "params_nonzero", "density", "flops")})
    return result


def describe(spec: Any, *, data_dir: Path | None, cache_dir: Path, corpus: Corpus | None = None) -> dict:
    """Resolved spec, parameter counts (dense and non-zero, per tensor and in total), FLOPs and steps per
    epoch, with masks built as the run would build them and nothing trained."""
    cfg = spec_dict(spec)
    trainer = build(spec, data_dir=data_dir, cache_dir=cache_dir, corpus=corpus, device=torch.device("cpu"))
    info = dict(trainer.start_info)
    info["spec"] = cfg
    info["nominal_params_nonzero"] = _nominal_nonzero(cfg, info)
    return info


def _nominal_nonzero(cfg: dict, info: dict) -> int:
    """density x maskable weights, the paper's way of quoting size (spec §2.2)."""
    sp = cfg["sparse"]
    if not sp.get("enabled"):
        return info["params_dense"]
    return round(sp["density"] * info["params_dense"])


def _original_state_dict(state: dict) -> dict:
    """Accept the original code's checkpoints: a plain ``state_dict`` (maybe saved whole-model-free)."""
    if "format" in state and "model" in state:
        return state["model"]
    if all(isinstance(v, torch.Tensor) for v in state.values()):
        return state
    raise ckpt.CheckpointError(
        "not a model checkpoint: expected a selfish-rnn checkpoint or a plain state_dict"
    )


def evaluate(
    spec: Any,
    checkpoint: Path,
    *,
    data_dir: Path | None,
    cache_dir: Path,
    device: torch.device | None = None,
    corpus: Corpus | None = None,
) -> dict:
    """Score a checkpoint (ours, or the original code's plain state_dict) on validation and test."""
    trainer = build(spec, data_dir=data_dir, cache_dir=cache_dir, corpus=corpus, device=device)
    state = ckpt.load(Path(checkpoint))
    weights = _original_state_dict(state)
    try:
        missing, unexpected = trainer.model.load_state_dict(weights, strict=False)
    except RuntimeError as exc:  # shape mismatches: a checkpoint of another model size
        detail = " ".join(str(exc).split("\n", 1)[-1].split())
        raise ckpt.CheckpointError(f"{checkpoint}: does not fit the spec's model ({detail})") from None
    if missing or unexpected:
        raise ckpt.CheckpointError(
            f"{checkpoint}: parameters do not match the spec's model "
            f"(missing: {', '.join(missing) or '-'}; unexpected: {', '.join(unexpected) or '-'})"
        )
    s = trainer.settings
    val_loss = trainer.evaluate(trainer.val_data, s.eval_batch_size)
    test_loss = trainer.evaluate(trainer.test_data, s.test_batch_size)
    nonzero = sum(int((p != 0).sum()) for n, p in trainer.model.named_parameters() if p.dim() >= 2)
    return {
        "checkpoint": str(checkpoint),
        "val_loss": val_loss,
        "val_ppl": math.exp(val_loss),
        "test_loss": test_loss,
        "test_ppl": math.exp(test_loss),
        "nonzero_weights": nonzero,
        "device": str(trainer.device),
        "python": platform.python_version(),
    }
