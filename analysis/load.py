"""Load run folders, Optuna studies and W&B runs into plain tidy tables (lists of dicts).

A run folder (contracts.md, "Run folder") holds `spec.yaml`, `metrics.jsonl` and `summary.json`. Any of
them may be missing or incomplete while a run is in progress or after it failed: loaders fill what they
can from the other files and record a warning on the `Run` instead of raising.
"""

from __future__ import annotations

import glob
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_RUN_FILES = ("summary.json", "metrics.jsonl", "spec.yaml")
_TRIAL_RUN_ID = re.compile(r"^sweep-(.+)-t\d+$")
_PASSWORD_IN_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^/\s]*)@")


class AnalysisError(ValueError):
    """Bad input to the analysis (no runs found, unreadable storage, W&B unreachable); one clear message."""


def mask_url(url: str) -> str:
    """Hide the password in a storage URL: `postgresql://user:pass@host/db` -> `postgresql://user:***@host/db`
    (also every URL inside a longer text, and `?password=`); the one redaction of `selfish.sweep.storage`."""
    from selfish.sweep.storage import scrub

    return scrub(_PASSWORD_IN_URL.sub(lambda m: f"{m['scheme']}{m['user']}:***@", str(url)), None)


def driver_url(url: str) -> str:
    """`postgresql://` -> `postgresql+psycopg2://` (the installed driver), as the sweep opens it."""
    from selfish.sweep.storage import sqlalchemy_url

    return sqlalchemy_url(url)


@dataclass
class Run:
    """One training run: its resolved spec, every event record and its summary (filled from records when
    `summary.json` is missing or partial). `source` is the folder, or `wandb:<path>` for W&B runs."""

    source: str
    spec: dict[str, Any]
    records: list[dict[str, Any]]
    summary: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.summary.get("name") or self.spec.get("name") or Path(self.source).parent.name)

    @property
    def run_id(self) -> str:
        return str(self.summary.get("run_id") or Path(self.source).name)

    @property
    def key(self) -> str:
        """Unique label `name/run_id` used in every table."""
        return f"{self.name}/{self.run_id}"

    @property
    def model_type(self) -> str:
        model = self.spec.get("model") or {}
        return str(model.get("type") or "unknown") if isinstance(model, Mapping) else "unknown"

    @property
    def corpus(self) -> str:
        data = self.spec.get("data") or {}
        return str(data.get("corpus") or "unknown") if isinstance(data, Mapping) else "unknown"

    @property
    def family(self) -> str:
        """Experiment family = model type + corpus, e.g. `lstm / ptb`."""
        return f"{self.model_type} / {self.corpus}"

    @property
    def density(self) -> float | None:
        value = self.summary.get("density")
        if _is_number(value):
            return float(value)
        sparse = self.spec.get("sparse") or {}
        if isinstance(sparse, Mapping):
            if sparse.get("enabled") is False:
                return 1.0
            if _is_number(sparse.get("density")):
                return float(sparse["density"])
        return None

    @property
    def is_sparse(self) -> bool:
        """Sparse when the spec enables masks, else when the measured density is below 1."""
        sparse = self.spec.get("sparse")
        if isinstance(sparse, Mapping) and "enabled" in sparse:
            return bool(sparse["enabled"])
        density = self.density
        return density is not None and density < 1.0 - 1e-9

    @property
    def sweep(self) -> str | None:
        """Study name when this run folder belongs to a sweep trial (`<spec>/sweep-<study>-t<n>`, the
        folder name selfish.sweep gives its trials), else None."""
        match = _TRIAL_RUN_ID.match(self.run_id)
        return match.group(1) if match else None

    @property
    def status(self) -> str:
        return str(self.summary.get("status") or "unknown")

    def epoch_records(self) -> list[dict[str, Any]]:
        """`epoch` records, the last one per epoch kept (a resumed run may repeat an epoch)."""
        by_epoch: dict[int, dict[str, Any]] = {}
        for record in self.records:
            if record.get("type") == "epoch" and _is_number(record.get("epoch")):
                by_epoch[int(record["epoch"])] = record
        return [by_epoch[e] for e in sorted(by_epoch)]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: Any) -> float | None:
    return float(value) if _is_number(value) else None


# --------------------------------------------------------------------------------------------- run folders


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Records of a `metrics.jsonl`; a torn (half-written) last line is skipped, as is any other bad line,
    each with a warning."""
    records: list[dict[str, Any]] = []
    warnings: list[str] = []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            where = "torn last line" if number == len(lines) else f"unreadable line {number}"
            warnings.append(f"{path}: skipped {where}")
            continue
        if isinstance(record, dict):
            records.append(record)
    return records, warnings


def summary_from_records(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The summary fields that can be derived from event records (used when summary.json is missing)."""
    summary: dict[str, Any] = {}
    epochs = [r for r in records if r.get("type") == "epoch"]
    for record in records:
        kind = record.get("type")
        if kind == "start":
            for key in ("params_dense", "params_nonzero", "density", "flops"):
                if key in record:
                    summary[key] = record[key]
        elif kind == "test":
            summary["test_ppl"] = record.get("test_ppl")
            if record.get("best_epoch") is not None:
                summary["best_epoch"] = record["best_epoch"]
        elif kind == "end":
            summary["status"] = record.get("status")
            summary["reason"] = record.get("reason")
    scored = [r for r in epochs if _is_number(r.get("val_ppl"))]
    if scored:
        best = min(scored, key=lambda r: r["val_ppl"])
        summary["best_val_ppl"] = best["val_ppl"]
        summary.setdefault("best_epoch", best.get("epoch"))
    if epochs:
        summary["epochs_done"] = max(int(r.get("epoch", 0)) for r in epochs)
        times = [r["epoch_time_s"] for r in epochs if _is_number(r.get("epoch_time_s"))]
        if times:
            summary["wall_time_s"] = float(sum(times))
    summary.setdefault("status", "running" if records else "unknown")
    return summary


def load_run(folder: Path) -> Run:
    """One run folder -> `Run`. Missing files are warnings, not errors."""
    folder = Path(folder)
    warnings: list[str] = []
    spec: dict[str, Any] = {}
    spec_path = folder / "spec.yaml"
    if spec_path.exists():
        try:
            loaded = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
            spec = loaded if isinstance(loaded, dict) else {}
        except yaml.YAMLError as err:
            warnings.append(f"{spec_path}: unreadable YAML ({err.__class__.__name__})")
    else:
        warnings.append(f"{folder}: no spec.yaml")
    records: list[dict[str, Any]] = []
    metrics_path = folder / "metrics.jsonl"
    if metrics_path.exists():
        records, bad = read_metrics(metrics_path)
        warnings.extend(bad)
    summary = summary_from_records(records)
    summary_path = folder / "summary.json"
    if summary_path.exists():
        try:
            stored = json.loads(summary_path.read_text(encoding="utf-8"))
            if isinstance(stored, dict):
                summary.update({k: v for k, v in stored.items() if v is not None or k not in summary})
        except json.JSONDecodeError:
            warnings.append(f"{summary_path}: unreadable JSON")
    else:
        warnings.append(f"{folder}: no summary.json (run in progress or crashed)")
    summary.setdefault("name", spec.get("name") or folder.parent.name)
    summary.setdefault("run_id", folder.name)
    return Run(source=str(folder), spec=spec, records=records, summary=summary, warnings=warnings)


def _is_run_folder(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in ("summary.json", "metrics.jsonl"))


def find_run_folders(paths_or_globs: Iterable[str | Path]) -> list[Path]:
    """Run folders named by the arguments: a run folder itself, any folder above run folders (searched
    recursively), or a glob of either (`**` allowed). Sorted, without duplicates."""
    found: dict[Path, None] = {}
    for item in paths_or_globs:
        text = str(item)
        matches = [Path(p) for p in sorted(glob.glob(text, recursive=True))] if glob.has_magic(text) else [Path(text)]
        for path in matches:
            if _is_run_folder(path):
                found[path.resolve()] = None
            elif path.is_dir():
                for marker in sorted(path.rglob("*")):
                    if marker.name in ("summary.json", "metrics.jsonl"):
                        found[marker.parent.resolve()] = None
            elif path.name in _RUN_FILES and path.parent.is_dir():
                found[path.parent.resolve()] = None
    return sorted(found)


def load_runs(paths_or_globs: Iterable[str | Path]) -> list[Run]:
    """Every run folder under the given paths or globs, loaded (see `find_run_folders`)."""
    return [load_run(folder) for folder in find_run_folders(paths_or_globs)]


# ----------------------------------------------------------------------------------------------- tables


def summary_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per run: the results table (perplexities, densities, parameter counts, FLOPs, wall time)."""
    rows = []
    for run in runs:
        s = run.summary
        flops = s.get("flops") if isinstance(s.get("flops"), Mapping) else {}
        wandb_info = s.get("wandb") if isinstance(s.get("wandb"), Mapping) else {}
        rows.append({
            "run": run.key,
            "experiment": run.name,
            "run_id": run.run_id,
            "family": run.family,
            "kind": "sparse" if run.is_sparse else "dense",
            "status": run.status,
            "reason": s.get("reason"),
            "density": run.density,
            "params_dense": s.get("params_dense"),
            "params_nonzero": s.get("params_nonzero"),
            "best_val_ppl": _num(s.get("best_val_ppl")),
            "test_ppl": _num(s.get("test_ppl")),
            "best_epoch": s.get("best_epoch"),
            "epochs_done": s.get("epochs_done"),
            "train_flops": _num(flops.get("train_total")),
            "wall_time_s": _num(s.get("wall_time_s")),
            "wandb_url": wandb_info.get("url") or None,
            "sweep": run.sweep,
            "source": run.source,
        })
    return rows


def epoch_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per (run, epoch): train/val perplexity, lr, phase, density, and the mask update totals."""
    rows = []
    for run in runs:
        for record in run.epoch_records():
            total = (record.get("mask") or {}).get("total") or {}
            rows.append({
                "run": run.key,
                "epoch": int(record["epoch"]),
                "step": record.get("step"),
                "train_ppl": _num(record.get("train_ppl")),
                "val_ppl": _num(record.get("val_ppl")),
                "lr": _num(record.get("lr")),
                "phase": record.get("phase"),
                "switched": record.get("switched"),
                "death_rate": _num(record.get("death_rate")),
                "density": _num(record.get("density")),
                "exploration_rate": _num(record.get("exploration_rate", total.get("exploration_rate"))),
                "turnover": _num(total.get("turnover")),
                "removed": total.get("removed"),
                "regrown": total.get("regrown"),
                "epoch_time_s": _num(record.get("epoch_time_s")),
            })
    return rows


def test_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per `test` record: test perplexity and the epoch it belongs to (`best_epoch`)."""
    rows = []
    for run in runs:
        for record in run.records:
            if record.get("type") == "test":
                rows.append({"run": run.key, "epoch": record.get("epoch"), "best_epoch": record.get("best_epoch"),
                             "test_ppl": _num(record.get("test_ppl")), "val_ppl": _num(record.get("val_ppl"))})
    return rows


def gate_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per (run, epoch, tensor, gate) from `mask.gates` of epoch records: density after the update,
    nonzeros, removed and regrown (spec §8)."""
    rows = []
    for run in runs:
        for record in run.epoch_records():
            gates = (record.get("mask") or {}).get("gates") or {}
            for tensor, per_gate in gates.items():
                for gate, stats in (per_gate or {}).items():
                    numel = stats.get("numel")
                    density = _num(stats.get("density"))
                    if density is None and _is_number(stats.get("nonzero_after")) and numel:
                        density = stats["nonzero_after"] / numel
                    rows.append({
                        "run": run.key, "epoch": int(record["epoch"]), "tensor": tensor, "gate": str(gate),
                        "density": density, "nonzero_before": stats.get("nonzero_before"),
                        "nonzero_after": stats.get("nonzero_after"), "removed": stats.get("removed"),
                        "regrown": stats.get("regrown"), "numel": numel,
                    })
    return rows


def update_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per (run, epoch, tensor) mask update, plus tensor `"(total)"`: the `UpdateStats` counts."""
    keys = ("nonzero_before", "nonzero_after", "removed", "regrown", "regrown_just_removed", "numel",
            "density", "turnover", "exploration_rate")
    rows = []
    for run in runs:
        for record in run.epoch_records():
            mask = record.get("mask")
            if not mask:
                continue
            parts = [("(total)", mask.get("total") or {})] + list((mask.get("tensors") or {}).items())
            for tensor, stats in parts:
                row = {"run": run.key, "epoch": int(record["epoch"]), "update": mask.get("update"),
                       "step": mask.get("step"), "death_rate": _num(mask.get("death_rate")), "tensor": tensor}
                row.update({k: stats.get(k) for k in keys})
                rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------- Optuna


@dataclass
class StudyData:
    """An Optuna study flattened: `trials` rows hold number, state, value(s), params and user attrs."""

    name: str
    storage: str  # masked: never holds a password
    directions: list[str]
    trials: list[dict[str, Any]]
    importances: dict[str, float] | None = None
    warnings: list[str] = field(default_factory=list)


def _open_storage(storage_url: str | Path) -> Any:
    """An Optuna storage for an RDB URL (`sqlite:///`, `postgresql://`), a SQLite file or a journal file."""
    import optuna

    text = str(storage_url)
    if "://" in text:
        return optuna.storages.RDBStorage(driver_url(text), skip_table_creation=True)
    path = Path(text)
    if not path.exists():
        raise AnalysisError(f"sweep storage not found: {mask_url(text)}")
    with path.open("rb") as handle:
        head = handle.read(16)
    if head.startswith(b"SQLite format 3"):
        return optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}", skip_table_creation=True)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def trial_density(row: Mapping[str, Any]) -> float | None:
    """Density of a trial: user attr `density`, else a searched param whose name ends in `density`."""
    attrs = row.get("user_attrs") or {}
    if _is_number(attrs.get("density")):
        return float(attrs["density"])
    for name, value in (row.get("params") or {}).items():
        if name.split(".")[-1] == "density" and _is_number(value):
            return float(value)
    return None


def check_storage(storage_url: str | Path) -> list[str]:
    """Open a sweep storage and list its studies; `AnalysisError` (password masked) when it cannot be read."""
    import optuna

    try:
        storage = _open_storage(storage_url)
        return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    except AnalysisError:
        raise
    except Exception as err:  # noqa: BLE001 - any driver error becomes one clear message
        raise AnalysisError(f"cannot read sweep storage {mask_url(str(storage_url))}: "
                            f"{mask_url(str(err)).splitlines()[0]}") from None


def load_study(storage_url: str | Path, study_name: str | None = None) -> StudyData:
    """Read an Optuna study (any storage Optuna reads) into `StudyData`. With no `study_name`, the storage
    must hold exactly one study. Errors never show the storage password."""
    import optuna

    masked = mask_url(str(storage_url))
    names = check_storage(storage_url)
    storage = _open_storage(storage_url)
    if study_name is None:
        if len(names) != 1:
            raise AnalysisError(f"storage {masked} holds {len(names)} studies ({', '.join(names) or 'none'}); "
                                "name one with --study")
        study_name = names[0]
    elif study_name not in names:
        raise AnalysisError(f"no study {study_name!r} in {masked} (found: {', '.join(names) or 'none'})")
    study = optuna.load_study(study_name=study_name, storage=storage)
    directions = [d.name.lower() for d in study.directions]
    trials = []
    for trial in study.get_trials(deepcopy=False):
        values = list(trial.values) if trial.values is not None else None
        row = {
            "number": trial.number,
            "state": trial.state.name.lower(),
            "value": values[0] if values else None,
            "values": values,
            "params": dict(trial.params),
            "user_attrs": dict(trial.user_attrs),
            "last_epoch": max(trial.intermediate_values) if trial.intermediate_values else None,
            "last_value": (trial.intermediate_values[max(trial.intermediate_values)]
                           if trial.intermediate_values else None),
            "duration_s": trial.duration.total_seconds() if trial.duration else None,
        }
        row["density"] = trial_density(row)
        trials.append(row)
    data = StudyData(name=study_name, storage=masked, directions=directions, trials=trials)
    complete = [t for t in trials if t["state"] == "complete"]
    n_params = len({name for t in complete for name in t["params"]})
    if len(complete) >= 2 and n_params > 1:
        try:
            target = None if len(directions) == 1 else (lambda t: t.values[0])
            importances = optuna.importance.get_param_importances(study, target=target)
            data.importances = {k: float(v) for k, v in importances.items()}
        except Exception as err:  # noqa: BLE001 - importances are optional decoration
            data.warnings.append(f"parameter importances unavailable: {err}")
    return data


# ------------------------------------------------------------------------------------------------ W&B


# W&B keys written by selfish.tracking.wandb_sink -> epoch record keys
_WANDB_EPOCH_KEYS = {"val/ppl": "val_ppl", "val/loss": "val_loss", "val/best_ppl": "best_val_ppl",
                     "epoch/train_ppl": "train_ppl", "epoch/train_loss": "train_loss", "epoch/lr": "lr",
                     "epoch/death_rate": "death_rate", "density/total": "density",
                     "mask/exploration_rate": "exploration_rate", "epoch/time_s": "epoch_time_s",
                     "epoch/tokens_per_s": "tokens_per_s", "epoch/phase": "phase"}
_WANDB_TOTAL_KEYS = ("removed", "regrown", "regrown_just_removed", "turnover", "exploration_rate")


def _wandb_mask(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """Rebuild the `UpdateStats`-shaped `mask` dict from flat keys `mask/<k>`, `<stat>/<tensor>` and
    `<stat>/<tensor>/<gate>` (stat: density, removed, regrown)."""
    total = {k: row[f"mask/{k}"] for k in _WANDB_TOTAL_KEYS if f"mask/{k}" in row and k != "exploration_rate"}
    tensors: dict[str, dict[str, Any]] = {}
    gates: dict[str, dict[str, dict[str, Any]]] = {}
    for key, value in row.items():
        parts = key.split("/")
        if parts[0] not in ("density", "removed", "regrown") or len(parts) not in (2, 3) or key == "density/total":
            continue
        if len(parts) == 2:
            tensors.setdefault(parts[1], {})[parts[0]] = value
        else:
            gates.setdefault(parts[1], {}).setdefault(parts[2], {})[parts[0]] = value
    if not (total or tensors or gates):
        return None
    if "mask/exploration_rate" in row:
        total["exploration_rate"] = row["mask/exploration_rate"]
    return {"update": None, "step": row.get("_step"), "death_rate": row.get("epoch/death_rate"),
            "total": total, "tensors": tensors, "gates": gates}


def _history_records(history: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """W&B history rows logged per epoch by the tracking sink -> `epoch` records (with `mask`)."""
    records = []
    for row in history:
        if not _is_number(row.get("epoch")) or row.get("val/ppl") is None:
            continue  # a per-step row
        record: dict[str, Any] = {"type": "epoch", "epoch": int(row["epoch"]), "step": row.get("_step")}
        record.update({name: row[key] for key, name in _WANDB_EPOCH_KEYS.items() if key in row})
        record["switched"] = bool(row.get("epoch/switched"))
        record["mask"] = _wandb_mask(row)
        records.append(record)
    return records


def _wandb_summary(raw: Mapping[str, Any]) -> dict[str, Any]:
    """W&B run summary (as written by the tracking sink) -> summary.json keys."""
    summary: dict[str, Any] = {}
    flops = {}
    for key, value in raw.items():
        if key.startswith("_"):
            continue
        if key.startswith("flops/"):
            flops[key.split("/", 1)[1]] = value
        elif key in ("params_dense", "params_nonzero", "density", "best_epoch", "status", "reason"):
            summary[key] = value
    if flops:
        summary["flops"] = flops
    test = raw.get("test/ppl", raw.get("test_ppl"))
    if test is not None:
        summary["test_ppl"] = test
    best = raw.get("val/ppl")
    if isinstance(best, Mapping):  # define_metric(summary="min") stores {"min": x}
        best = best.get("min")
    best = raw.get("val/best_ppl", best)
    if _is_number(best):
        summary["best_val_ppl"] = best
    return summary


def wandb_run_to_run(api_run: Any) -> Run:
    """A `wandb.apis.public.Run` -> `Run` with the same row shapes as a run folder."""
    config = dict(api_run.config or {})
    raw_summary = dict(getattr(api_run.summary, "_json_dict", None) or api_run.summary or {})
    records = _history_records(api_run.scan_history())
    summary = summary_from_records(records)
    summary.pop("status", None)
    summary.update(_wandb_summary(raw_summary))
    summary.setdefault("name", config.get("name") or api_run.name)
    summary["run_id"] = api_run.id
    summary.setdefault("status", {"finished": "completed", "crashed": "failed"}.get(
        getattr(api_run, "state", None), getattr(api_run, "state", None) or "unknown"))
    summary["wandb"] = {"id": api_run.id, "url": api_run.url, "project": api_run.project,
                        "group": getattr(api_run, "group", None), "mode": "online"}
    return Run(source=f"wandb:{'/'.join(api_run.path)}", spec=config, records=records, summary=summary)


def load_wandb_runs(project: str, entity: str | None = None, filters: Mapping[str, Any] | None = None,
                    *, api: Any = None) -> list[Run]:
    """Runs of a W&B project through the public API, in the row shapes of run folders. Needs a network
    and a login; otherwise raises `AnalysisError` with one clear message. `api` replaces `wandb.Api()`
    (tests)."""
    path = f"{entity}/{project}" if entity else project
    try:
        if api is None:
            import wandb

            api = wandb.Api(timeout=20)
        return [wandb_run_to_run(r) for r in api.runs(path, filters=dict(filters or {}))]
    except Exception as err:  # noqa: BLE001 - offline, no key, unknown project: all the same to the user
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise AnalysisError(f"cannot read W&B runs from {path!r} (offline or not logged in? "
                            f"run `wandb login`, or report from local run folders instead): {first}") from None
