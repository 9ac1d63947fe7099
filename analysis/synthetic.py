"""Synthetic run folders and Optuna studies in the formats of contracts.md, for tests and for previewing
the report before real runs exist. Nothing is trained: curves are smooth functions plus seeded noise."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

LSTM_GATES = ("i", "f", "g", "o")


def _spec(name: str, model: str, corpus: str, density: float | None, nhid: int) -> dict[str, Any]:
    return {"name": name, "seed": 1111, "device": "cpu",
            "data": {"corpus": corpus, "batch_size": 20, "bptt": 35},
            "model": {"type": model, "emsize": nhid, "nhid": nhid, "nlayers": 2, "dropout": 0.5},
            "sparse": {"enabled": density is not None, "density": density if density is not None else 1.0,
                       "death": "magnitude", "growth": "random", "redistribution": "none", "death_rate": 0.8,
                       "decay": "cosine"},
            "optim": {"name": "sgd", "lr": 40, "nonmono": 5}, "train": {"epochs": 8}}


def _gate_stats(nhid: int, ninp: int, density: float, epoch: int, n_epochs: int, removed_frac: float,
                tilt: float) -> dict[str, dict[str, Any]]:
    """Per-gate stats of one [4*nhid, ninp] tensor: redistribution moves weights from `g` to `i`/`f`
    as training goes on (`tilt` sets how much); totals keep the tensor density."""
    numel = nhid * ninp
    shift = tilt * epoch / max(1, n_epochs)
    gate_density = {"i": density * (1 + shift), "f": density * (1 + 0.5 * shift), "g": density * (1 - 1.2 * shift),
                    "o": density * (1 - 0.3 * shift)}
    stats = {}
    for gate in LSTM_GATES:
        after = int(round(min(1.0, gate_density[gate]) * numel))
        removed = int(round(removed_frac * after))
        stats[gate] = {"nonzero_before": after, "nonzero_after": after, "removed": removed, "regrown": removed,
                       "numel": numel, "density": after / numel}
    return stats


def _sum(parts: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("nonzero_before", "nonzero_after", "removed", "regrown", "numel")
    total = {k: int(sum(p[k] for p in parts)) for k in keys}
    total["density"] = total["nonzero_after"] / total["numel"]
    return total


def write_run(root: Path, name: str, run_id: str, *, model: str = "lstm", corpus: str = "ptb",
              density: float | None = 0.33, n_epochs: int = 8, status: str = "completed", seed: int = 0,
              nhid: int = 40, start_ppl: float = 900.0, floor_ppl: float = 140.0, test: bool = True,
              summary: bool = True, torn_tail: bool = False, wandb_url: str | None = None,
              reason: str | None = None) -> dict[str, Any]:
    """Write `root/name/run_id/` with spec.yaml, metrics.jsonl and (optionally) summary.json; return
    {"dir", "records", "summary"} so tests can compare what the report shows with what was written.
    `density=None` makes a dense run (no mask stats)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / name / run_id
    folder.mkdir(parents=True, exist_ok=True)
    spec = _spec(name, model, corpus, density, nhid)
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    vocab = 200
    tensor_names = [f"rnn.weight_{kind}_l{layer}" for layer in range(2) for kind in ("ih", "hh")]
    params_dense = 2 * vocab * nhid + 2 * (2 * 4 * nhid * nhid + 8 * nhid) + vocab
    sparse_numel = len(tensor_names) * 4 * nhid * nhid + 2 * vocab * nhid
    params_nonzero = params_dense if density is None else int(params_dense - (1 - density) * sparse_numel)
    flops_dense = 2 * params_dense
    flops_sparse = flops_dense if density is None else int(2 * params_nonzero)
    steps_per_epoch = 50
    records: list[dict[str, Any]] = [{
        "type": "start", "step": 0, "epoch": 0, "params_dense": params_dense, "params_nonzero": params_nonzero,
        "density": 1.0 if density is None else density, "steps_per_epoch": steps_per_epoch, "device": "cpu",
        "resumed": False, "flops": {"forward_dense_per_token": flops_dense, "forward_sparse_per_token": flops_sparse}}]
    best = math.inf
    best_epoch = 0
    explored = density or 1.0
    total_time = 0.0
    last_epoch = n_epochs if status == "completed" else max(1, n_epochs // 3)
    for epoch in range(1, last_epoch + 1):
        decay = math.exp(-0.55 * epoch)
        train_ppl = floor_ppl * 0.8 + (start_ppl - floor_ppl) * decay * 1.1 + rng.normal(0, 2)
        val_ppl = round(floor_ppl + (start_ppl - floor_ppl) * decay + rng.normal(0, 1.5), 3)
        if val_ppl < best:
            best, best_epoch = val_ppl, epoch
        death_rate = 0.005 + 0.5 * (0.8 - 0.005) * (1 + math.cos(math.pi * epoch / n_epochs))
        epoch_time = round(30.0 + rng.normal(0, 1.0), 2)
        total_time += epoch_time
        mask = None
        if density is not None:
            removed_frac = death_rate * (0.4 + 0.4 * density)
            gates = {t: _gate_stats(nhid, nhid, density, epoch, n_epochs, removed_frac,
                                    (0.25 if "hh" in t else 0.1) * (1.4 if t.endswith("l1") else 1.0))
                     for t in tensor_names}
            tensors = {t: _sum(list(g.values())) for t, g in gates.items()}
            explored = min(1.0, explored + removed_frac * density * 0.8)
            for t in tensors:
                tensors[t].update({"regrown_just_removed": tensors[t]["removed"] // 50,
                                   "turnover": tensors[t]["removed"] / tensors[t]["nonzero_after"],
                                   "exploration_rate": explored})
            total = _sum(list(tensors.values()))
            total.update({"regrown_just_removed": sum(t["regrown_just_removed"] for t in tensors.values()),
                          "turnover": total["removed"] / total["nonzero_after"], "exploration_rate": explored})
            mask = {"update": epoch, "step": epoch * steps_per_epoch, "death_rate": death_rate, "total": total,
                    "tensors": tensors, "gates": gates}
        records.append({
            "type": "epoch", "step": epoch * steps_per_epoch, "epoch": epoch, "train_loss": math.log(train_ppl),
            "train_ppl": train_ppl, "val_loss": math.log(val_ppl), "val_ppl": val_ppl, "best_val_ppl": best,
            "lr": 40.0, "phase": "sgd" if epoch < 6 else "asgd", "switched": epoch == 6,
            "death_rate": death_rate if density is not None else 0.0, "density": density or 1.0,
            "exploration_rate": explored if density is not None else 1.0, "epoch_time_s": epoch_time,
            "tokens_per_s": 5000.0, "mask": mask})
    test_ppl = None
    if status == "completed" and test:
        test_ppl = round(best * 0.965, 3)
        records.append({"type": "test", "step": last_epoch * steps_per_epoch, "epoch": last_epoch,
                        "test_loss": math.log(test_ppl), "test_ppl": test_ppl, "val_loss": math.log(best),
                        "val_ppl": best, "best_epoch": best_epoch})
    if status != "running":
        records.append({"type": "end", "step": last_epoch * steps_per_epoch, "epoch": last_epoch,
                        "status": status, "reason": reason})
    lines = [json.dumps(r) for r in records]
    text = "\n".join(lines) + "\n"
    if torn_tail:
        text += json.dumps({"type": "step", "step": 9999, "epoch": last_epoch, "loss": 5.0})[:25]
    (folder / "metrics.jsonl").write_text(text, encoding="utf-8")
    summary_data = {
        "name": name, "run_id": run_id, "status": status, "reason": reason, "best_val_ppl": best,
        "best_epoch": best_epoch, "test_ppl": test_ppl, "epochs_done": last_epoch, "params_dense": params_dense,
        "params_nonzero": params_nonzero, "density": 1.0 if density is None else density,
        "flops": {"forward_dense_per_token": flops_dense, "forward_sparse_per_token": flops_sparse,
                  "train_total": float(3 * flops_sparse * 35 * 20 * steps_per_epoch * last_epoch),
                  "test_per_token": flops_sparse},
        "wall_time_s": round(total_time, 2), "started_at": "2026-11-25T00:00:00+00:00",
        "finished_at": "2026-11-25T01:00:00+00:00", "git_commit": "0" * 40, "versions": {"torch": "2.13.0"},
        "wandb": {"id": run_id, "mode": "online" if wandb_url else "offline", "url": wandb_url,
                  "project": "selfish-rnn", "group": None}}
    if summary:
        (folder / "summary.json").write_text(json.dumps(summary_data, indent=1), encoding="utf-8")
    return {"dir": folder, "records": records, "summary": summary_data if summary else None}


def write_study(storage_url: Any, study_name: str, trials: list[dict[str, Any]]) -> None:
    """Create a study (`storage_url`: an Optuna URL or storage object) and add finished trials: each `{"params": {...}, "state": "complete"|"pruned"|"fail",
    "value": float | None, "user_attrs": {...}, "epochs": int}`; params are floats in [0, 1]."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage_url, study_name=study_name, direction="minimize")
    for spec in trials:
        params = spec["params"]
        distributions = {k: optuna.distributions.FloatDistribution(0.0, 1.0) for k in params}
        state = getattr(optuna.trial.TrialState, spec.get("state", "complete").upper())
        epochs = spec.get("epochs", 1)
        value = spec.get("value") if state == optuna.trial.TrialState.COMPLETE else None
        intermediate = {e: float(spec.get("value") or 500.0) + 10 * (epochs - e) for e in range(1, epochs + 1)}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=distributions, value=value, state=state,
            user_attrs=spec.get("user_attrs", {}), intermediate_values=intermediate))


def write_demo(root: Path, storage_url: Any = None, *, trial_runs: bool = False) -> dict[str, Any]:
    """A small realistic set: dense + two sparse LSTM runs, a failed run, an in-progress run (torn tail,
    no summary), and optionally a density sweep (`trial_runs`: completed trials get run folders
    `cpu_lstm_sweep/sweep-lstm_density-t<n>` linked through the `run_dir` user attr, as selfish.sweep
    does). Returns what `write_run` returned, by run key (and the trial specs under "trials")."""
    root = Path(root)
    written = {
        "dense": write_run(root, "cpu_lstm_dense", "r001", density=None, floor_ppl=128.0, seed=1,
                           wandb_url="https://wandb.ai/demo/selfish-rnn/runs/r001"),
        "sparse33": write_run(root, "cpu_lstm", "r002", density=0.33, floor_ppl=136.0, seed=2),
        "sparse10": write_run(root, "cpu_lstm_d010", "r003", density=0.10, floor_ppl=161.0, seed=3),
        "failed": write_run(root, "cpu_lstm_d005", "r004", density=0.05, status="failed", seed=4,
                            reason="RuntimeError: out of memory", test=False),
        "running": write_run(root, "cpu_lstm_d050", "r005", density=0.5, status="running", seed=5,
                             summary=False, torn_tail=True),
    }
    if storage_url:
        rng = np.random.default_rng(7)
        trials = []
        for number, d in enumerate((0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 0.05, 0.15)):
            rate = float(rng.uniform(0.3, 0.9))
            value = 128.0 + 4.0 / d + 6 * (rate - 0.6) ** 2 + float(rng.normal(0, 1))
            state = "pruned" if number == 6 else "fail" if number == 7 else "complete"
            attrs: dict[str, Any] = {"density": d, "reason": "pruned at epoch 3" if state == "pruned" else ""}
            if trial_runs and state == "complete":
                run = write_run(root, "cpu_lstm_sweep", f"sweep-lstm_density-t{number}", density=d, n_epochs=4,
                                seed=100 + number, floor_ppl=value, start_ppl=700.0)
                value = run["summary"]["best_val_ppl"]
                attrs.update(run_dir=str(run["dir"]), params_nonzero=run["summary"]["params_nonzero"],
                             train_flops=run["summary"]["flops"]["train_total"])
                written[f"trial{number}"] = run
            trials.append({"params": {"sparse.density": d, "sparse.death_rate": rate}, "state": state,
                           "value": round(value, 3), "epochs": 3 if state == "pruned" else 8,
                           "user_attrs": attrs})
        write_study(storage_url, "lstm_density", trials)
        written["trials"] = trials
    return written
