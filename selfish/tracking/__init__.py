"""Event sinks (contracts.md, "Sinks"): the run folder, W&B and the terminal.

Every sink has `write(record)` and `close(status)`; sinks never feed back into training. `build_sinks`
assembles the usual three for a training run; `trial_sinks` the quiet pair a sweep worker uses.
Nothing here reads the environment: the caller passes paths, the resolved W&B mode and metadata.
"""

from __future__ import annotations

import platform
import secrets
import subprocess
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from selfish.tracking.run_folder import RunFolderSink, read_metrics, to_jsonable, write_json_atomic
from selfish.tracking.terminal import TerminalSink
from selfish.tracking.wandb_sink import WANDB_STATE, WandbSink

__all__ = [
    "Sink", "RunFolderSink", "WandbSink", "TerminalSink", "build_sinks", "trial_sinks", "new_run_id",
    "git_commit", "versions", "read_metrics", "to_jsonable", "write_json_atomic", "WANDB_STATE",
]


class Sink(Protocol):
    def write(self, record: dict) -> None: ...

    def close(self, status: str) -> None: ...


def new_run_id(now: datetime | None = None, suffix: str | None = None) -> str:
    """UTC timestamp plus a short random suffix, e.g. `20261125-023342-7f3a`; sorts by start time."""
    now = now or datetime.now(timezone.utc)
    return f"{now.strftime('%Y%m%d-%H%M%S')}-{suffix or secrets.token_hex(2)}"


def git_commit(repo_dir: Path) -> str | None:
    """HEAD of the git work tree at `repo_dir` (with `+dirty` when it has local changes), or None."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_dir, capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo_dir,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "") if head else None


def versions() -> dict[str, str]:
    """Versions of Python and the packages a result depends on."""
    found = {"python": platform.python_version()}
    for package in ("selfish-rnn", "torch", "numpy", "wandb", "pydantic"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def build_sinks(spec: Any, run_dir: Path, *, wandb_mode: str, console: Any = None, quiet: bool = False,
                git: str | None = None, run_id: str | None = None, wandb_init_timeout: float = 30.0) -> list:
    """The sinks of one training run: W&B first (so its id reaches the summary), run folder, terminal.

    `spec` is a `selfish.spec.Spec`; `wandb_mode` is already resolved (online/offline/disabled);
    `wandb_init_timeout` (seconds) bounds what an unreachable W&B server can cost at the start.
    """
    run_dir = Path(run_dir)
    config = spec.to_dict()
    wandb_sink = WandbSink(config, spec.tracking.wandb, run_dir, name=spec.name, mode=wandb_mode,
                           init_timeout=wandb_init_timeout)
    static = {"name": spec.name, "run_id": run_id or run_dir.name, "git_commit": git, "versions": versions(),
              "wandb": wandb_sink.info()}
    return [RunFolderSink(run_dir, static), wandb_sink, TerminalSink(console, quiet=quiet, title=spec.name)]


def trial_sinks(spec: Any, run_dir: Path, wandb: Any) -> list:
    """Sinks of one sweep trial: its run folder and a W&B run (`wandb` is a `selfish.sweep` WandbTrial:
    mode, project, group, name, config, tags, resume_id). No terminal output."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / WANDB_STATE
    if getattr(wandb, "resume_id", None) and not state_path.exists():
        write_json_atomic(state_path, {"id": wandb.resume_id})
    settings: Mapping[str, Any] = {"mode": wandb.mode, "project": wandb.project, "group": wandb.group,
                                   "tags": list(getattr(wandb, "tags", ()) or ()), "entity": None}
    config = dict(getattr(wandb, "config", None) or spec.to_dict())
    wandb_sink = WandbSink(config, settings, run_dir, name=wandb.name, mode=wandb.mode, job_type="sweep-trial",
                           init_timeout=getattr(wandb, "init_timeout", 30.0))
    static = {"name": spec.name, "run_id": run_dir.name, "versions": versions(), "wandb": wandb_sink.info()}
    return [RunFolderSink(run_dir, static), wandb_sink]
