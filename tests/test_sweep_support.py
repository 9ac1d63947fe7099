"""Fakes for the sweep tests (module-level so spawned worker processes can unpickle them).

``fake_run`` has the signature of ``selfish.experiment.run``: it "trains" for ``train.epochs`` epochs
with a val_ppl curve set by the spec (density and death_rate), writes ``last.pt`` (JSON here) every
epoch, resumes from it, calls ``on_epoch`` and honours ``StopTraining``; ``optim.lr >= 100``
diverges (NaN at epoch 2). Each call is appended to ``run_dir/calls.jsonl``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from selfish.sweep.objective import as_dict, stop_training_class

TINY_SPEC = """\
name: tiny
seed: 1
device: cpu
data: {corpus: ptb, batch_size: 4, eval_batch_size: 4, bptt: 5, max_train_tokens: 2000, max_valid_tokens: 500, max_test_tokens: 500}
model: {type: lstm, emsize: 8, nhid: 8, nlayers: 1, dropout: 0.0}
sparse: {enabled: true, density: 0.5, death_rate: 0.5}
optim: {name: sgd, lr: 20}
train: {epochs: 4, log_interval: 1000}
"""


def fake_run(spec: Any, *, run_dir: Path, data_dir: Path | None, cache_dir: Path, sinks=(), resume: bool = False,
             corpus: Any = None, on_epoch=None, epoch_s: float = 0.0, device: Any = None) -> dict:
    cfg = as_dict(spec)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = run_dir / "last.pt"
    start = json.loads(checkpoint.read_text())["epoch"] if resume and checkpoint.exists() else 0
    with open(run_dir / "calls.jsonl", "a") as handle:
        handle.write(json.dumps({"resume": resume, "start_epoch": start, "pid": os.getpid(),
                                 "corpus": corpus, "sinks": len(list(sinks)), "t": time.time()}) + "\n")
    sparse, epochs, lr = cfg["sparse"], cfg["train"]["epochs"], cfg["optim"]["lr"]
    floor = 60 + 200 * abs(sparse["density"] - 0.4) + 30 * abs(sparse["death_rate"] - 0.3)
    best, status, reason, done = math.inf, "completed", None, start
    stop = stop_training_class()
    for epoch in range(start + 1, epochs + 1):
        time.sleep(epoch_s)
        val_ppl = math.nan if lr >= 100 and epoch >= 2 else floor + 400.0 / epoch
        if not math.isfinite(val_ppl):
            status, reason = "diverged", f"loss is nan at epoch {epoch}"
            break
        best = min(best, val_ppl)
        done = epoch
        checkpoint.write_text(json.dumps({"epoch": epoch}))
        if on_epoch is not None:
            try:
                on_epoch({"type": "epoch", "epoch": epoch, "val_ppl": val_ppl, "step": epoch * 10})
            except stop as exc:
                status, reason = "stopped", str(exc)
                break
    return {"status": status, "reason": reason, "best_val_ppl": best if math.isfinite(best) else None,
            "epochs_done": done, "density": sparse["density"], "params_nonzero": int(1000 * sparse["density"]),
            "flops": {"train_total": 1e9 * sparse["density"] * done}}


def fake_corpus(name: str, data_dir: Path | None, cache_dir: Path) -> str:
    return f"corpus:{name}"


def no_sinks(spec: Any, run_dir: Path, wandb: Any) -> list:
    return []
