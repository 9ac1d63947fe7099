"""Sweep workers: one process each, its own thread budget and device, the corpus loaded once.

A worker loops: (under the ask lock) find dead trials, count trials, stop when the study has
``n_trials`` finished or running, else ask a trial (enqueued retries first) and run it.
"""

from __future__ import annotations

import socket
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from selfish.sweep.lease import reap_expired
from selfish.sweep.objective import SinksFactory, SpecLoader, TrialContext, as_dict, finish_trial, get_path
from selfish.sweep.spec import SweepSpec
from selfish.sweep.storage import StorageConfig, StorageError, scrub
from selfish.sweep.study import ask_lock, count_trials, open_study, worker_seed


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker process needs (picklable for ``multiprocessing`` spawn).

    ``run_fn`` / ``spec_loader`` / ``sinks_fn`` / ``corpus_fn`` default (None) to the real
    experiment wiring; tests inject fakes. ``deadline`` is Unix time (s) after which no new trial
    starts. ``threads`` is this worker's ``torch.set_num_threads`` budget.
    """

    sweep: SweepSpec
    storage: StorageConfig
    n_trials: int
    run_root: Path
    data_dir: Path | None
    cache_dir: Path
    worker_index: int = 0
    threads: int = 1
    device: str | None = None
    deadline: float | None = None
    wandb_mode: str = "disabled"
    wandb_init_timeout: float = 30.0
    quiet: bool = True
    host: str | None = None
    run_fn: Callable[..., dict] | None = None
    spec_loader: SpecLoader | None = None
    sinks_fn: SinksFactory | None = None
    corpus_fn: Callable[[str, Path | None, Path], Any] | None = None
    max_trials_per_worker: int | None = None


def default_run_fn() -> Callable[..., dict]:
    from selfish.experiment import run

    return run


def default_spec_loader() -> SpecLoader:
    from selfish.sweep.experiment_glue import load_trial_spec

    return load_trial_spec


def default_sinks_fn() -> SinksFactory:
    from selfish.sweep.experiment_glue import trial_sinks

    return trial_sinks


def default_corpus_fn() -> Callable[[str, Path | None, Path], Any]:
    from selfish.data import load_corpus

    return lambda name, data_dir, cache_dir: load_corpus(name, data_dir, cache_dir)


def _logger(config: WorkerConfig) -> Callable[[str], None]:
    prefix = f"[sweep {config.sweep.study} w{config.worker_index}]"

    def log(message: str) -> None:
        if not config.quiet:
            print(f"{prefix} {scrub(message, config.storage.url)}", file=sys.stderr, flush=True)

    return log


def _pay_one_time_costs() -> None:
    """Before the worker takes trials: the lazy imports its first trial would otherwise wait for (building
    a torch optimizer imports ``torch._dynamo``, 1-3 s on a 2-core CPU), so every trial starts equally fast."""
    import torch

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def worker_loop(config: WorkerConfig) -> int:
    """Run trials until the study is done; returns an exit code (0 ok, 1 the worker could not start)."""
    import torch

    torch.set_num_threads(max(1, config.threads))
    log = _logger(config)
    host = config.host or socket.gethostname()
    sweep = config.sweep
    spec_loader = config.spec_loader or default_spec_loader()
    try:
        base = as_dict(spec_loader(sweep.base, dict(sweep.fixed)))
        study, storage = open_study(config.storage, sweep, seed=worker_seed(sweep.sampler.seed, host, config.worker_index))
    except (StorageError, ValueError, KeyError) as exc:
        log(f"cannot start: {exc}")
        print(scrub(f"sweep worker {config.worker_index}: {exc}", config.storage.url), file=sys.stderr)
        return 1
    _pay_one_time_costs()
    corpus_name = get_path(base, "data.corpus", None)
    corpus = None
    if corpus_name is not None:
        corpus_fn = config.corpus_fn or default_corpus_fn()
        try:
            corpus = corpus_fn(corpus_name, config.data_dir, config.cache_dir)
        except Exception as exc:
            print(f"sweep worker {config.worker_index}: cannot load corpus {corpus_name!r}: {exc}", file=sys.stderr)
            return 1
    ctx = TrialContext(
        sweep=sweep, base=base, spec_loader=spec_loader, run_fn=config.run_fn or default_run_fn(),
        sinks_fn=config.sinks_fn if config.sinks_fn is not None else default_sinks_fn(),
        storage=config.storage, run_root=config.run_root, data_dir=config.data_dir, cache_dir=config.cache_dir,
        corpus=corpus, corpus_name=corpus_name, device=config.device, wandb_mode=config.wandb_mode,
        wandb_init_timeout=config.wandb_init_timeout, host=host, log=log,
    )
    ran = 0
    while config.max_trials_per_worker is None or ran < config.max_trials_per_worker:
        if config.deadline is not None and time.time() >= config.deadline:
            log("timeout reached; no new trial")
            break
        with ask_lock(config.storage, storage, sweep.study):
            find_dead_trials(study, config.storage, sweep, host=host, log=log)
            counts = count_trials(study)
            if counts.waiting == 0 and counts.done + counts.running >= config.n_trials:
                log(f"study has {counts.done} finished + {counts.running} running of {config.n_trials}; stopping")
                break
            trial = study.ask()
        finish_trial(study, trial, ctx)
        ran += 1
    return 0


def find_dead_trials(study: optuna.Study, storage: StorageConfig, sweep: SweepSpec, *, host: str,
                     log: Callable[[str], None]) -> list[int]:
    """Journal: expired leases -> FAIL + retry. RDB: Optuna's stale-heartbeat check (+ RetryFailedTrialCallback)."""
    if storage.lease_dir is not None:
        return reap_expired(study, storage.lease_dir, ttl_s=sweep.retry.lease_ttl_s, host=host,
                            max_retry=sweep.retry.max_retry, log=log)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return []


def worker_main(config: WorkerConfig) -> None:
    """Entry point of a worker process (``multiprocessing`` target); exits with the worker's code."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sys.exit(worker_loop(config))
