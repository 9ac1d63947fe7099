"""Optuna objects from a sweep spec: sampler, pruner, study creation, trial counting, the ask lock."""

from __future__ import annotations

import contextlib
import fcntl
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from selfish.sweep.spec import SweepSpec, grid_values
from selfish.sweep.storage import StorageConfig, open_storage


class StudyMismatchError(ValueError):
    """The storage already holds a study of this name with other objectives."""


def worker_seed(seed: int | None, host: str, worker_index: int) -> int | None:
    """Distinct, stable sampler seed per worker (same seed in every worker would repeat params)."""
    if seed is None:
        return None
    return zlib.crc32(f"{seed}:{host}:{worker_index}".encode()) & 0x7FFFFFFF


def build_sampler(sweep: SweepSpec, seed: int | None) -> optuna.samplers.BaseSampler:
    """The sampler named by ``sweep.sampler`` (TPE, random, CMA-ES, GP or grid) with ``seed``."""
    spec = sweep.sampler
    startup: dict[str, Any] = {} if spec.n_startup_trials is None else {"n_startup_trials": spec.n_startup_trials}
    if spec.type == "tpe":
        # constant_liar: running trials count as pessimistic results, so parallel workers spread out
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, **startup)
    if spec.type == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.type == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise ValueError("sampler.type: cmaes needs the 'cmaes' package (pip install cmaes)") from None
        return optuna.samplers.CmaEsSampler(seed=seed, **startup)
    if spec.type == "gp":
        return optuna.samplers.GPSampler(seed=seed, **startup)
    return optuna.samplers.GridSampler(grid_values(sweep), seed=seed)


def build_pruner(sweep: SweepSpec) -> optuna.pruners.BasePruner:
    """The pruner of ``sweep`` (steps are epochs, values validation perplexity)."""
    spec = sweep.resolved_pruner
    if spec.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec.n_startup_trials, n_warmup_steps=spec.n_warmup_steps)
    if spec.type == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=spec.min_resource, max_resource=spec.max_resource, reduction_factor=spec.reduction_factor
        )
    if spec.type == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=spec.min_resource, reduction_factor=spec.reduction_factor
        )
    return optuna.pruners.NopPruner()


def create_study(sweep: SweepSpec, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Create the study once (``load_if_exists``) before any worker starts; check its directions match."""
    directions = sweep.objective.resolved_directions
    study = optuna.create_study(
        storage=storage, study_name=sweep.study, directions=directions, load_if_exists=True,
        sampler=optuna.samplers.RandomSampler(seed=0), pruner=optuna.pruners.NopPruner(),
    )
    existing = [d.name.lower() for d in study.directions]
    if existing != directions:
        raise StudyMismatchError(
            f"study {sweep.study!r} already exists with directions {existing}, but the sweep asks for "
            f"{directions} ({sweep.objective.metrics}); use another study name"
        )
    return study


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of FAILED trials that were re-enqueued (our leases or Optuna's RetryFailedTrialCallback)."""
    numbers = {t.number for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("retried")}
    for t in trials:  # what RetryFailedTrialCallback.retry_history() reads, without its experimental warning
        numbers.update(int(n) for n in t.system_attrs.get("retry_history", ()))
    return numbers


@dataclass(frozen=True)
class TrialCounts:
    """``done`` = COMPLETE + PRUNED + FAILED that will not be retried; ``running``; ``waiting`` (enqueued)."""

    done: int
    running: int
    waiting: int
    complete: int
    pruned: int
    failed: int


def count_trials(study: optuna.Study) -> TrialCounts:
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    by_state = {s: sum(1 for t in trials if t.state == s) for s in TrialState}
    failed_final = sum(1 for t in trials if t.state == TrialState.FAIL and t.number not in retried)
    return TrialCounts(
        done=by_state[TrialState.COMPLETE] + by_state[TrialState.PRUNED] + failed_final,
        running=by_state[TrialState.RUNNING],
        waiting=by_state[TrialState.WAITING],
        complete=by_state[TrialState.COMPLETE],
        pruned=by_state[TrialState.PRUNED],
        failed=failed_final,
    )


def original_trial_number(trial: FrozenTrial | optuna.Trial) -> int:
    """The first trial of a chain of retries (``retry_of`` user attr, or Optuna's ``failed_trial``)."""
    attrs = trial.user_attrs
    if "retry_of" in attrs:
        return int(attrs["retry_of"])
    system = trial.system_attrs if isinstance(trial, FrozenTrial) else trial.storage.get_trial_system_attrs(trial._trial_id)
    if "failed_trial" in system:
        return int(system["failed_trial"])
    return trial.number


@contextlib.contextmanager
def ask_lock(config: StorageConfig, storage: optuna.storages.BaseStorage, study_name: str) -> Iterator[None]:
    """Serialise "count trials, then ask" among workers so they do not overshoot ``n_trials``.

    Journal: an ``flock`` on ``sweep.lock`` next to the journal. PostgreSQL: a session advisory lock
    keyed by the study name. Other RDBs: no lock (a few trials of overshoot are possible).
    """
    if config.journal_path is not None:
        lock_file = config.journal_path.parent / "sweep.lock"
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_file, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    engine = getattr(storage, "engine", None)
    if config.url is not None and config.url.startswith(("postgresql", "postgres")) and engine is not None:
        from sqlalchemy import text

        key = zlib.crc32(f"selfish-sweep:{study_name}".encode()) & 0x7FFFFFFF
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        return
    yield


def open_study(config: StorageConfig, sweep: SweepSpec, *, seed: int | None) -> tuple[optuna.Study, Any]:
    """Load the (already created) study with this worker's sampler and the sweep's pruner."""
    storage = open_storage(config)
    study = optuna.load_study(
        study_name=sweep.study, storage=storage, sampler=build_sampler(sweep, seed), pruner=build_pruner(sweep)
    )
    return study, storage
