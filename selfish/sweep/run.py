"""``run_sweep``: validate the sweep, create the study once, start N worker processes, wait.

Re-running the same command resumes the study: finished trials stay, dead trials are retried from
their checkpoints, and workers stop when the study has ``n_trials`` finished trials.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna

from selfish.sweep.spec import SweepSpec, SweepSpecError, check_against_base, grid_size, load_sweep
from selfish.sweep.storage import StorageConfig, StorageError, open_storage, resolve_storage, scrub
from selfish.sweep.study import StudyMismatchError, count_trials, create_study
from selfish.sweep.worker import WorkerConfig, default_spec_loader, find_dead_trials, worker_main

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


def storage_for(sweep: SweepSpec, storage: str | None, run_root: Path) -> StorageConfig:
    """The ``--storage`` URL if given, else the sweep's ``storage``, else the journal under ``run_root``."""
    base_dir = sweep.path.parent if sweep.path is not None else None
    return resolve_storage(
        storage if storage is not None else sweep.storage,
        run_root=run_root, study=sweep.study, base_dir=base_dir if storage is None else None,
        heartbeat_interval_s=sweep.retry.heartbeat_interval_s, grace_period_s=sweep.retry.grace_period_s,
        max_retry=sweep.retry.max_retry,
    )


def validate_sweep(sweep_path: str | Path, spec_loader: Callable[..., Any] | None = None) -> SweepSpec:
    """Load the sweep and prove its key paths against the base experiment spec (raises SweepSpecError)."""
    sweep = load_sweep(sweep_path)
    if sweep.sampler.type == "cmaes" and importlib.util.find_spec("cmaes") is None:
        raise SweepSpecError(f"{sweep.path}: sampler.type: cmaes needs the 'cmaes' package, which is not "
                             "installed; use tpe, random, gp or grid, or pip install cmaes")
    loader = spec_loader or default_spec_loader()
    check_against_base(sweep, lambda base, overrides: _checked(loader, base, overrides))
    return sweep


def _checked(loader: Callable[..., Any], base: Path, overrides: dict) -> None:
    try:
        loader(base, overrides)
    except (KeyError, TypeError) as exc:
        raise ValueError(str(exc)) from None


def prepare_study(sweep: SweepSpec, config: StorageConfig, *, host: str,
                  log: Callable[[str], None]) -> optuna.Study:
    """Create (or load) the study before any worker starts, record the sweep in it, find dead trials."""
    storage = open_storage(config)
    study = create_study(sweep, storage)
    study.set_user_attr("sweep", {
        "path": str(sweep.path) if sweep.path else None,
        "base": str(sweep.base),
        "fixed": dict(sweep.fixed),
        "metrics": list(sweep.objective.metrics),
        "n_trials": sweep.n_trials,
    })
    find_dead_trials(study, config, sweep, host=host, log=log)
    return study


def _printer(quiet: bool, url: str | None) -> Callable[[str], None]:
    def log(message: str) -> None:
        if not quiet:
            print(scrub(message, url), file=sys.stderr, flush=True)

    return log


def run_sweep(
    sweep_path: str | Path,
    *,
    workers: int = 1,
    storage: str | None = None,
    trials: int | None = None,
    data_dir: Path | None,
    cache_dir: Path,
    run_root: Path,
    wandb_mode: str = "disabled",
    wandb_init_timeout: float = 30.0,
    quiet: bool = True,
    cores: int | None = None,
    devices: Sequence[str] | None = None,
    run_fn: Callable[..., dict] | None = None,
    spec_loader: Callable[..., Any] | None = None,
    sinks_fn: Callable[..., Any] | None = None,
    corpus_fn: Callable[..., Any] | None = None,
    host: str | None = None,
) -> int:
    """Run (or resume) the sweep in ``workers`` local processes; returns an exit code.

    0: the workers ended normally (the study reached its trial count, or the timeout passed);
    2: bad sweep spec or storage URL (message on stderr, naming file and key);
    1: a worker died or could not start.
    ``cores`` (default ``os.cpu_count()``) is split evenly: each worker gets ``max(1, cores // workers)``
    threads. ``devices`` (e.g. ``["cuda:0", "cuda:1"]``, decided by the CLI) are dealt round robin.
    ``run_fn`` / ``spec_loader`` / ``sinks_fn`` / ``corpus_fn`` replace the real wiring (tests).
    """
    url_for_scrub = storage
    try:
        sweep = validate_sweep(sweep_path, spec_loader)
        config = storage_for(sweep, storage, Path(run_root))
        url_for_scrub = config.url
        if workers < 1:
            raise SweepSpecError(f"--workers must be >= 1, got {workers}")
        if trials is not None and trials < 1:
            raise SweepSpecError(f"--trials must be >= 1, got {trials}")
    except (SweepSpecError, StorageError) as exc:
        print(f"error: {scrub(str(exc), url_for_scrub)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    log = _printer(quiet, config.url)
    if quiet:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    host = host or socket.gethostname()
    n_trials = trials if trials is not None else sweep.n_trials
    if sweep.sampler.type == "grid":
        n_trials = min(n_trials, grid_size(sweep))
    try:
        study = prepare_study(sweep, config, host=host, log=log)
    except (StorageError, StudyMismatchError) as exc:
        print(f"error: {scrub(str(exc), config.url)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    counts = count_trials(study)
    log(f"study {sweep.study} on {config.display()}: {counts.done}/{n_trials} finished, "
        f"{counts.running} running, {counts.waiting} waiting; starting {workers} worker(s)")
    if counts.waiting == 0 and counts.running == 0 and counts.done >= n_trials:
        log(f"study {sweep.study} already has {counts.done} finished trials (target {n_trials}); nothing to do")
        return EXIT_OK
    cores = cores or os.cpu_count() or 1
    deadline = time.time() + sweep.timeout if sweep.timeout else None
    base_config = dict(
        sweep=sweep, storage=config, n_trials=n_trials, run_root=Path(run_root), data_dir=data_dir,
        cache_dir=Path(cache_dir), threads=max(1, cores // workers), deadline=deadline, wandb_mode=wandb_mode,
        wandb_init_timeout=wandb_init_timeout,
        quiet=quiet, host=host, run_fn=run_fn, spec_loader=spec_loader, sinks_fn=sinks_fn, corpus_fn=corpus_fn,
    )
    configs = [
        WorkerConfig(worker_index=i, device=(devices[i % len(devices)] if devices else None), **base_config)
        for i in range(workers)
    ]
    codes = start_workers(configs)
    final = count_trials(study)
    log(f"study {sweep.study}: {final.complete} complete, {final.pruned} pruned, {final.failed} failed, "
        f"{final.running} running, {final.waiting} waiting")
    if any(code != 0 for code in codes):
        print(f"error: sweep worker exit codes {codes}", file=sys.stderr)
        return EXIT_FAILURE
    if final.done > 0 and final.complete + final.pruned == 0:
        print(f"error: every trial of study {sweep.study} failed; see `sweep-status`", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def start_workers(configs: Sequence[WorkerConfig]) -> list[int]:
    """Start one spawned process per config, wait for all, return their exit codes (-9 = SIGKILL)."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=worker_main, args=(c,), name=f"sweep-worker-{c.worker_index}")
                 for c in configs]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:  # they got SIGINT too; give them a moment, their trials stay resumable
            process.join(timeout=10)
        raise
    return [int(process.exitcode if process.exitcode is not None else 1) for process in processes]
