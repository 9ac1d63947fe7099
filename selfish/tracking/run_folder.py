"""The run folder sink: `metrics.jsonl` (one event per line) and `summary.json` (contracts.md, "Run folder").

The run folder is the source of truth that dashboards read. `metrics.jsonl` is append-only and flushed
after every line, so a crash can at most leave a partial last line (readers skip it). `summary.json` is
rewritten atomically (temp file, then rename) after every event that changes it.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["RunFolderSink", "read_metrics", "write_json_atomic", "to_jsonable", "utc_now"]

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
FLOPS_KEYS = ("forward_dense_per_token", "forward_sparse_per_token", "train_total", "test_per_token")


def utc_now() -> str:
    """ISO 8601 UTC timestamp with seconds, e.g. 2026-11-25T02:33:42Z."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_jsonable(value: Any) -> Any:
    """Plain JSON data: tensors and numpy scalars become numbers/lists, NaN and inf become null."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # torch.Tensor, numpy array or scalar
        return to_jsonable(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return str(value)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to `path` via a temp file in the same folder and an atomic rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(to_jsonable(data), handle, indent=2, sort_keys=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_metrics(path: Path) -> list[dict]:
    """Records of a metrics.jsonl; a partial (crash-truncated) or garbled line is skipped."""
    records: list[dict] = []
    if not path.exists():
        return records
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


class RunFolderSink:
    """Writes `metrics.jsonl` and keeps `summary.json` current in `run_dir`.

    `static_summary` holds the fields not derived from events: `name`, `run_id`, `git_commit`,
    `versions`, `wandb` ({id, mode, url, project, group}). When the folder already holds a run (resume),
    its metrics and summary are read back so best-so-far values and wall time carry over.
    """

    def __init__(self, run_dir: Path, static_summary: Mapping[str, Any]):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / METRICS
        self.summary_path = self.run_dir / SUMMARY
        self._session_start = time.monotonic()
        self._closed = False
        previous = self._read_summary()
        self._wall_before = float(previous.get("wall_time_s") or 0.0)
        self.summary: dict[str, Any] = {
            "name": None, "run_id": None, "status": "running", "reason": None,
            "best_val_ppl": None, "best_epoch": None, "test_ppl": None, "epochs_done": 0, "steps": 0,
            "params_dense": None, "params_nonzero": None, "density": None,
            "flops": {key: None for key in FLOPS_KEYS},
            "wall_time_s": self._wall_before, "started_at": previous.get("started_at") or utc_now(),
            "finished_at": None, "git_commit": None, "versions": {}, "wandb": None,
        }
        self.summary.update(to_jsonable(dict(static_summary)))
        self._rebuild(read_metrics(self.metrics_path))
        self._handle = open(self.metrics_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._write_summary()

    # -- Sink protocol ----------------------------------------------------------------------------
    def write(self, record: dict) -> None:
        """Append one event; on a resumed `start`, first drop what the checkpoint does not cover."""
        if self._closed:
            return
        record = to_jsonable(record)
        if record.get("type") == "start" and record.get("resumed"):
            self._truncate_after(int(record.get("step", 0)))
        self._handle.write(json.dumps(record, allow_nan=False) + "\n")
        self._handle.flush()
        if self._apply(record):
            self._write_summary()

    def close(self, status: str) -> None:
        """Finish the summary (status, finished_at, wall time) and close the metrics file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._handle.close()
        if self.summary.get("status") in (None, "running"):
            self.summary["status"] = status
        self.summary["finished_at"] = utc_now()
        self._write_summary()

    # -- internals --------------------------------------------------------------------------------
    def _read_summary(self) -> dict:
        try:
            data = json.loads(self.summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _truncate_after(self, step: int) -> None:
        """Keep only records a resumed run does not replay: step <= S and not test/end (atomic rewrite)."""
        self._handle.close()
        kept = [r for r in read_metrics(self.metrics_path)
                if int(r.get("step", 0)) <= step and r.get("type") not in ("test", "end")]
        tmp = self.metrics_path.with_name(f".{METRICS}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            for record in kept:
                handle.write(json.dumps(record, allow_nan=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.metrics_path)
        self._handle = open(self.metrics_path, "a", encoding="utf-8")  # noqa: SIM115
        for key in ("best_val_ppl", "best_epoch", "test_ppl", "reason", "finished_at"):
            self.summary[key] = None
        self.summary.update(status="running", epochs_done=0, steps=0)
        self._rebuild(kept)

    def _rebuild(self, records: Iterable[dict]) -> None:
        for record in records:
            self._apply(record)

    def _apply(self, record: dict) -> bool:
        """Fold one event into the summary; True when the summary changed in a way worth writing."""
        kind = record.get("type")
        summary = self.summary
        if "step" in record and isinstance(record["step"], int):
            summary["steps"] = max(summary.get("steps") or 0, record["step"])
        if kind == "start":
            for key in ("params_dense", "params_nonzero", "density"):
                if record.get(key) is not None:
                    summary[key] = record[key]
            flops = record.get("flops") or {}
            summary["flops"] = {key: flops.get(key) for key in FLOPS_KEYS}
            summary["status"] = "running"
            return True
        if kind == "epoch":
            summary["epochs_done"] = max(summary.get("epochs_done") or 0, int(record.get("epoch", 0)))
            val = record.get("val_ppl")
            if val is not None and (summary["best_val_ppl"] is None or val < summary["best_val_ppl"]):
                summary["best_val_ppl"] = val
                summary["best_epoch"] = record.get("epoch")
            if record.get("density") is not None:
                summary["density"] = record["density"]
            return True
        if kind == "test":
            summary["test_ppl"] = record.get("test_ppl")
            if record.get("best_epoch") is not None:
                summary["best_epoch"] = record["best_epoch"]
            return True
        if kind == "end":
            summary["status"] = record.get("status") or "completed"
            summary["reason"] = record.get("reason")
            return True
        return False

    def _write_summary(self) -> None:
        self.summary["wall_time_s"] = round(self._wall_before + time.monotonic() - self._session_start, 3)
        write_json_atomic(self.summary_path, self.summary)
