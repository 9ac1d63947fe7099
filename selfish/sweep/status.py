"""``sweep_status``: the trials of a study, its best trial as a plain ``train`` command, the dashboard command."""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from selfish.sweep.spec import load_sweep
from selfish.sweep.storage import StorageConfig, StorageError, open_storage, redact_url, resolve_storage
from selfish.sweep.study import count_trials, original_trial_number, retried_numbers


def _override_text(value: Any) -> str:
    """A value as the YAML scalar ``--set`` reads back (0.35, 1.0e-05, true, cosine, null)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text[:-3].strip() if text.endswith("...") else text


def train_command(base: str | Path, overrides: Mapping[str, Any]) -> str:
    """``selfish train <base> --set k=v ...`` reproducing a trial as a plain run."""
    parts = ["selfish", "train", str(base)]
    for key, value in overrides.items():
        parts += ["--set", f"{key}={_override_text(value)}"]
    return shlex.join(parts)


def dashboard_command(config: StorageConfig) -> str:
    """``optuna-dashboard <storage>`` (redacted URL; journal files get the storage-class hint)."""
    if config.journal_path is not None:
        return shlex.join(["optuna-dashboard", str(config.journal_path), "--storage-class", "JournalFileStorage"])
    return shlex.join(["optuna-dashboard", redact_url(config.url)])


def _values(trial: FrozenTrial) -> list[float] | None:
    return None if trial.values is None else [float(v) for v in trial.values]


def _trial_row(trial: FrozenTrial, retried: set[int]) -> dict[str, Any]:
    attrs = trial.user_attrs
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    row: dict[str, Any] = {
        "number": trial.number,
        "state": trial.state.name,
        "params": dict(trial.params),
        "values": _values(trial),
        "value": _values(trial)[0] if trial.values else None,
        "epoch": attrs.get("epoch"),
        "reason": attrs.get("reason"),
        "run_dir": attrs.get("run_dir"),
        "density": attrs.get("density"),
        "train_flops": attrs.get("train_flops"),
        "duration_s": duration,
        "retry_of": original_trial_number(trial) if original_trial_number(trial) != trial.number else None,
        "retried": trial.number in retried,
    }
    return row


def resolve_status_source(source: str | Path, *, run_root: Path, study: str | None) -> tuple[StorageConfig, str | None, dict]:
    """A sweep file -> its storage and study; anything else -> a storage URL or journal file path."""
    path = Path(str(source))
    if path.suffix in (".yaml", ".yml") and path.is_file():
        sweep = load_sweep(path)
        config = resolve_storage(sweep.storage, run_root=run_root, study=sweep.study, base_dir=path.parent)
        return config, study or sweep.study, {"base": str(sweep.base), "fixed": dict(sweep.fixed)}
    config = resolve_storage(str(source), run_root=run_root, study=study or "_")
    if config.journal_path is not None and not config.journal_path.is_file():
        raise StorageError(f"storage {config.journal_path}: no such journal file (and not a sweep file)")
    return config, study, {}


def sweep_status(source: str | Path, study: str | None = None, *, run_root: Path = Path("runs")) -> dict[str, Any]:
    """Trials (number, state, params, value, epoch, reason), best trial(s) with a rerun command, dashboard command.

    ``source`` is a sweep file or a storage (URL or journal path); ``study`` is needed when the storage
    holds several studies. Raises ``SweepSpecError`` / ``StorageError`` (redacted) / ``KeyError``.
    """
    config, study_name, from_sweep = resolve_status_source(source, run_root=Path(run_root), study=study)
    if config.journal_path is not None and not config.journal_path.is_file():
        raise StorageError(f"no study yet: {config.journal_path} does not exist (run `sweep` first)")
    storage = open_storage(config)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if study_name is None:
        if len(names) != 1:
            raise KeyError(f"storage {config.display()} holds studies {names}; pick one with --study")
        study_name = names[0]
    if study_name not in names:
        raise KeyError(f"storage {config.display()} has no study {study_name!r} (studies: {names})")
    loaded = optuna.load_study(study_name=study_name, storage=storage)
    recorded = loaded.user_attrs.get("sweep") or {}
    base = recorded.get("base") or from_sweep.get("base")
    fixed = dict(recorded.get("fixed") or from_sweep.get("fixed") or {})
    trials = loaded.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    counts = count_trials(loaded)
    rows = [_trial_row(t, retried) for t in trials]
    best: list[dict[str, Any]] = []
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best_trials = [loaded.best_trial] if len(loaded.directions) == 1 else loaded.best_trials
        for trial in best_trials:
            best.append({
                "number": trial.number, "values": _values(trial), "params": dict(trial.params),
                "run_dir": trial.user_attrs.get("run_dir"),
                "command": train_command(base, {**fixed, **trial.params}) if base else None,
            })
    return {
        "study": study_name,
        "storage": config.display(),
        "directions": [d.name.lower() for d in loaded.directions],
        "metrics": recorded.get("metrics") or ["val_ppl"],
        "n_trials": recorded.get("n_trials"),
        "counts": {"done": counts.done, "complete": counts.complete, "pruned": counts.pruned,
                   "failed": counts.failed, "running": counts.running, "waiting": counts.waiting},
        "trials": rows,
        "best": best,
        "dashboard": dashboard_command(config),
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def format_status(status: Mapping[str, Any]) -> str:
    """Plain-text rendering of :func:`sweep_status` for the terminal."""
    counts = status["counts"]
    lines = [
        f"study {status['study']} on {status['storage']} ({', '.join(status['metrics'])}: "
        f"{', '.join(status['directions'])})",
        f"  {counts['done']}/{_fmt(status['n_trials'])} finished: {counts['complete']} complete, "
        f"{counts['pruned']} pruned, {counts['failed']} failed; {counts['running']} running, "
        f"{counts['waiting']} waiting",
        "",
        f"  {'#':>4}  {'state':<9} {'value':>10} {'epoch':>5}  params / reason",
    ]
    for row in status["trials"]:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in row["params"].items())
        values = row["values"]
        value = "/".join(_fmt(v) for v in values) if values else "-"
        extra = []
        if row["retry_of"] is not None:
            extra.append(f"retry of t{row['retry_of']}")
        if row["retried"]:
            extra.append("retried")
        if row["reason"] and row["state"] != "COMPLETE":
            extra.append(row["reason"])
        tail = f"  [{'; '.join(extra)}]" if extra else ""
        lines.append(f"  {row['number']:>4}  {row['state']:<9} {value:>10} {_fmt(row['epoch']):>5}  {params}{tail}")
    lines.append("")
    if status["best"]:
        title = "best trial" if len(status["best"]) == 1 else "Pareto front"
        lines.append(f"{title}:")
        for best in status["best"]:
            values = "/".join(_fmt(v) for v in best["values"] or [])
            lines.append(f"  trial {best['number']}: {values}  ({best['run_dir']})")
            if best["command"]:
                lines.append(f"    rerun: {best['command']}")
    else:
        lines.append("no complete trial yet")
    lines.append(f"dashboard: {status['dashboard']}")
    return "\n".join(lines)
