"""The trial objective: sample the (conditional) space, build the trial's spec, train it with pruning.

Style rule 8: report once per epoch and check pruning in the same place (``on_epoch``), store the
reason, and return only the final metric(s).
"""

from __future__ import annotations

import copy
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from selfish.sweep.lease import LeaseKeeper
from selfish.sweep.spec import ParamSpec, SweepSpec, order_space
from selfish.sweep.storage import StorageConfig
from selfish.sweep.study import original_trial_number

MISSING = object()

SpecLoader = Callable[[Path, Mapping[str, Any]], Any]
"""(base spec path, overrides {key path: value}) -> validated experiment spec (a Spec or a dict)."""
SinksFactory = Callable[[Any, Path, "WandbTrial"], Sequence[Any]]
"""(spec, run_dir, W&B settings of this trial) -> sinks for ``run``."""


class LeaseLost(RuntimeError):
    """Another worker declared this trial dead and took it over; this worker must not tell it."""


class StopTrainingLike(Exception):
    """Stand-in used only when ``selfish.experiment`` is not importable (fake runs in tests)."""


def stop_training_class() -> type[Exception]:
    """``selfish.experiment.StopTraining`` (what ``run`` catches to end training cleanly)."""
    try:
        from selfish.experiment import StopTraining
    except ImportError:  # the experiment wiring is not there (tests with a fake run)
        return StopTrainingLike
    return StopTraining


def as_dict(spec: Any) -> dict:
    """A spec object (``to_dict()``) or mapping as a plain dict."""
    return dict(spec) if isinstance(spec, Mapping) else spec.to_dict()


def get_path(tree: Mapping[str, Any], key: str, default: Any = MISSING) -> Any:
    """``tree["sparse"]["density"]`` for ``key="sparse.density"``."""
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is MISSING:
                raise KeyError(key)
            return default
        node = node[part]
    return node


def set_path(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` (dotted) in ``tree`` in place, creating intermediate mappings."""
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def apply_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep copy of ``base`` with every ``key path: value`` of ``overrides`` set."""
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        set_path(out, key, value)
    return out


def condition_holds(param: ParamSpec, sampled: Mapping[str, Any], base: Mapping[str, Any]) -> bool:
    """All ``condition`` keys equal their required value (sampled value first, else the base spec's)."""
    for key, wanted in (param.condition or {}).items():
        value = sampled[key] if key in sampled else get_path(base, key, None)
        if value != wanted:
            return False
    return True


def suggest_one(trial: optuna.Trial, key: str, param: ParamSpec) -> Any:
    if param.type == "categorical":
        return trial.suggest_categorical(key, list(param.choices or []))
    if param.type == "int":
        return trial.suggest_int(key, int(param.low), int(param.high), step=int(param.step or 1), log=param.log)  # type: ignore[arg-type]
    return trial.suggest_float(key, float(param.low), float(param.high), step=param.step, log=param.log)  # type: ignore[arg-type]


def suggest_params(trial: optuna.Trial, sweep: SweepSpec, base: Mapping[str, Any]) -> dict[str, Any]:
    """Sample the active keys of the space in dependency order; inactive conditional keys are skipped."""
    sampled: dict[str, Any] = {}
    for key in order_space(sweep.space):
        param = sweep.space[key]
        if param.condition and not condition_holds(param, sampled, base):
            continue
        sampled[key] = suggest_one(trial, key, param)
    return sampled


def trial_run_dir(run_root: Path, spec_name: str, study: str, number: int) -> Path:
    """``<run_root>/<spec name>/sweep-<study>-t<number>`` -- a normal run folder per trial."""
    return Path(run_root) / spec_name / f"sweep-{study}-t{number}"


@dataclass(frozen=True)
class WandbTrial:
    """W&B settings for one trial: one run per trial, grouped by study, resumed by a retried trial.

    ``resume_id`` is the W&B run id kept in the run folder by the tracking sink (None = new run).
    """

    mode: str
    project: str | None
    group: str
    name: str
    config: dict[str, Any]
    tags: tuple[str, ...] = ()
    resume_id: str | None = None
    init_timeout: float = 30.0  # seconds an unreachable W&B server may cost at the trial's start


@dataclass
class TrialContext:
    """Everything a worker keeps between trials (the corpus is loaded once per worker)."""

    sweep: SweepSpec
    base: dict[str, Any]
    spec_loader: SpecLoader
    run_fn: Callable[..., dict]
    sinks_fn: SinksFactory | None
    storage: StorageConfig
    run_root: Path
    data_dir: Path | None
    cache_dir: Path
    corpus: Any = None
    corpus_name: str | None = None
    device: Any = None
    wandb_mode: str = "disabled"
    wandb_init_timeout: float = 30.0
    host: str = "localhost"
    pid: int = field(default_factory=os.getpid)
    log: Callable[[str], None] = lambda message: None
    held_lease: LeaseKeeper | None = None  # the finished trial's lease, dropped once its result is told


def spec_name(spec: Mapping[str, Any], base_path: Path) -> str:
    """The experiment's ``name`` (else the base file's stem)."""
    name = spec.get("name")
    return str(name) if name else base_path.stem


def read_wandb_id(run_dir: Path) -> str | None:
    """W&B run id kept in the run folder by ``selfish.tracking`` (``wandb.json``, else ``summary.json``)."""
    import json

    for candidate, key in ((run_dir / "wandb.json", "id"), (run_dir / "summary.json", "wandb")):
        if not candidate.is_file():
            continue
        try:
            value = json.loads(candidate.read_text()).get(key)
        except (json.JSONDecodeError, AttributeError):
            continue
        if isinstance(value, dict):
            value = value.get("id")
        if value:
            return str(value)
    return None


class _Heartbeat:
    """RDB storage: record Optuna heartbeats for a trial from a daemon thread."""

    def __init__(self, storage: Any, trial_id: int, interval_s: float) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{trial_id}", daemon=True)

    def start(self) -> _Heartbeat:
        self._storage.record_heartbeat(self._trial_id)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception:  # a dropped connection; the pool reconnects on the next beat
                continue

    def beat(self) -> None:
        self._storage.record_heartbeat(self._trial_id)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _train_flops(summary: Mapping[str, Any]) -> float | None:
    flops = summary.get("flops")
    if isinstance(flops, Mapping):
        value = flops.get("train_total")
        return float(value) if value is not None else None
    return summary.get("train_flops")


def objective_values(sweep: SweepSpec, summary: Mapping[str, Any]) -> list[float]:
    """[best val ppl] or [best val ppl, density | train FLOPs] from a run summary."""
    values: list[float] = []
    for metric in sweep.objective.metrics:
        if metric == "val_ppl":
            value = summary.get("best_val_ppl")
        elif metric == "density":
            value = summary.get("density")
        else:
            value = _train_flops(summary)
        if value is None:
            raise RuntimeError(f"run summary has no {metric!r} (keys: {sorted(summary)})")
        values.append(float(value))
    return values


def _inherit_intermediate_values(trial: optuna.Trial, study: optuna.Study, retried_trial: int | None) -> None:
    """Journal retries: copy the dead trial's per-epoch val_ppl so the pruner sees the whole curve."""
    if retried_trial is None:
        return
    frozen = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in frozen}
    dead = by_number.get(int(retried_trial))
    if dead is None:
        return
    mine = by_number.get(trial.number)
    have = set(mine.intermediate_values) if mine is not None else set()
    for step, value in sorted(dead.intermediate_values.items()):
        if step not in have:
            trial.report(value, step)


def run_trial(trial: optuna.Trial, study: optuna.Study, ctx: TrialContext) -> list[float]:
    """Run one trial to its end; returns the objective values.

    Raises ``optuna.TrialPruned`` (pruned or diverged; reason in user attr ``reason``),
    :class:`LeaseLost` (another worker took the trial over) or any training error (-> FAILED).
    """
    sweep = ctx.sweep
    params = suggest_params(trial, sweep, apply_overrides(ctx.base, sweep.fixed))
    overrides = {**sweep.fixed, **params}
    spec = ctx.spec_loader(sweep.base, overrides)
    cfg = as_dict(spec)
    original = original_trial_number(trial)
    attrs = trial.user_attrs
    run_dir = Path(attrs["run_dir"]) if "run_dir" in attrs else trial_run_dir(
        ctx.run_root, spec_name(cfg, sweep.base), sweep.study, original
    )
    if "run_dir" not in attrs:
        trial.set_user_attr("run_dir", str(run_dir))
    is_retry = original != trial.number
    resume = is_retry and (run_dir / "last.pt").is_file()
    trial.set_user_attr("worker", f"{ctx.host}:{ctx.pid}")
    if not sweep.multi_objective and "retried_trial" in attrs:
        _inherit_intermediate_values(trial, study, attrs.get("retried_trial"))

    keeper: LeaseKeeper | None = None
    heartbeat: _Heartbeat | None = None
    if ctx.storage.lease_dir is not None:
        keeper = LeaseKeeper(ctx.storage.lease_dir, trial.number, host=ctx.host, pid=ctx.pid,
                             refresh_s=sweep.retry.lease_refresh_s).start()
    elif hasattr(trial.storage, "record_heartbeat"):
        heartbeat = _Heartbeat(trial.storage, trial._trial_id, float(ctx.storage.heartbeat_interval_s)).start()

    stop_cls = stop_training_class()
    pruner_name = sweep.resolved_pruner.type
    outcome: dict[str, Any] = {}
    seen: dict[str, Any] = {}  # best val_ppl and last epoch from the epoch records

    def on_epoch(record: Mapping[str, Any]) -> None:
        epoch = int(record["epoch"])
        if keeper is not None and not keeper.renew():
            outcome["lease_lost"] = True
            raise stop_cls(f"lease of trial {trial.number} lost: another worker took it over")
        if heartbeat is not None:
            heartbeat.beat()
        trial.set_user_attr("epoch", epoch)
        val_ppl = record.get("val_ppl")
        seen["epoch"] = epoch
        for candidate in (record.get("best_val_ppl"), val_ppl):
            if _finite(candidate):
                seen["best_val_ppl"] = min(seen.get("best_val_ppl", math.inf), float(candidate))
        if sweep.multi_objective or not _finite(val_ppl):
            return  # Optuna cannot prune multi-objective studies; non-finite: the run ends as diverged
        trial.report(float(val_ppl), epoch)
        if trial.should_prune():
            reason = f"pruned by {pruner_name} at epoch {epoch}: val_ppl {float(val_ppl):.2f}"
            outcome["pruned"] = reason
            trial.set_user_attr("reason", reason)
            raise stop_cls(reason)

    wandb = WandbTrial(
        mode=ctx.wandb_mode,
        project=get_path(cfg, "tracking.wandb.project", None),
        group=sweep.study,
        name=f"{sweep.study}-t{original}",
        config={**cfg, "sweep": {"study": sweep.study, "trial": original, "optuna_trial": trial.number,
                                 "retry_of": original if is_retry else None, "params": params,
                                 "storage": ctx.storage.display()}},
        tags=("sweep", sweep.study),
        resume_id=read_wandb_id(run_dir) if is_retry else None,
        init_timeout=ctx.wandb_init_timeout,
    )
    try:
        sinks = list(ctx.sinks_fn(spec, run_dir, wandb)) if ctx.sinks_fn is not None else []
        corpus = ctx.corpus if get_path(cfg, "data.corpus", None) == ctx.corpus_name else None
        kwargs: dict[str, Any] = dict(run_dir=run_dir, data_dir=ctx.data_dir, cache_dir=ctx.cache_dir, sinks=sinks,
                                      resume=resume, corpus=corpus, on_epoch=on_epoch)
        if ctx.device is not None:
            kwargs["device"] = ctx.device
        ctx.log(f"trial {trial.number}{f' (retry of {original}, resuming)' if resume else ''}: {params} -> {run_dir}")
        summary = ctx.run_fn(spec, **kwargs)
    finally:
        if keeper is not None:
            keeper.stop(remove=False)  # the lease file stays until finish_trial has told the result
            ctx.held_lease = keeper
        if heartbeat is not None:
            heartbeat.stop()
    if outcome.get("lease_lost"):
        raise LeaseLost(f"trial {trial.number}: lease lost")
    summary = complete_summary(summary, seen)
    _store_summary_attrs(trial, summary)
    status = summary.get("status")
    if outcome.get("pruned"):
        raise optuna.TrialPruned(outcome["pruned"])
    if status == "diverged" or not _finite(summary.get("best_val_ppl")):
        reason = f"diverged: {summary.get('reason') or 'non-finite loss'}"
        trial.set_user_attr("reason", reason)
        raise optuna.TrialPruned(reason)
    if status not in (None, "completed", "stopped"):
        raise RuntimeError(f"run ended with status {status!r}: {summary.get('reason')}")
    return objective_values(sweep, summary)


def complete_summary(summary: Mapping[str, Any], seen: Mapping[str, Any]) -> dict[str, Any]:
    """Fill ``best_val_ppl`` / ``epochs_done`` when ``run`` returned only part of the summary fields:
    from the epoch records seen, else the final validation pass with the best weights (``val_ppl``)."""
    out = dict(summary)
    if out.get("best_val_ppl") is None:
        out["best_val_ppl"] = seen.get("best_val_ppl", out.get("val_ppl"))
    if out.get("epochs_done") is None and seen.get("epoch") is not None:
        out["epochs_done"] = seen["epoch"]
    return out


def _store_summary_attrs(trial: optuna.Trial, summary: Mapping[str, Any]) -> None:
    for key in ("density", "params_nonzero", "best_epoch", "status"):
        if summary.get(key) is not None:
            trial.set_user_attr(key, summary[key])
    flops = _train_flops(summary)
    if flops is not None:
        trial.set_user_attr("train_flops", flops)
    epochs = summary.get("epochs_done", summary.get("epoch"))
    if epochs is not None:
        trial.set_user_attr("epoch", int(epochs))


def finish_trial(study: optuna.Study, trial: optuna.Trial, ctx: TrialContext) -> TrialState | None:
    """Run ``trial`` and tell the study its outcome; errors fail the trial (reason kept), never the worker.

    The trial's lease is dropped only after the study has its outcome: a trial without a lease whose start is
    older than the lease TTL looks dead to the other workers.
    """
    try:
        return _run_and_tell(study, trial, ctx)
    finally:
        if ctx.held_lease is not None:
            ctx.held_lease.release()
            ctx.held_lease = None


def _run_and_tell(study: optuna.Study, trial: optuna.Trial, ctx: TrialContext) -> TrialState | None:
    try:
        values = run_trial(trial, study, ctx)
    except optuna.TrialPruned as exc:
        study.tell(trial, state=TrialState.PRUNED)
        ctx.log(f"trial {trial.number} pruned: {exc}")
        return TrialState.PRUNED
    except LeaseLost as exc:
        ctx.log(f"trial {trial.number}: {exc}; left to the worker that took it over")
        return None
    except Exception as exc:  # a failed trial must not poison the next (style rule 9)
        reason = f"{type(exc).__name__}: {exc}"
        try:
            trial.set_user_attr("reason", reason[:2000])
            study.tell(trial, state=TrialState.FAIL)
        except Exception:
            pass
        ctx.log(f"trial {trial.number} failed: {reason}")
        return TrialState.FAIL
    try:
        study.tell(trial, values)
    except Exception as exc:  # e.g. the trial was failed meanwhile by a reaper
        ctx.log(f"trial {trial.number}: could not record its result: {exc}")
        return None
    ctx.log(f"trial {trial.number} complete: {values}")
    return TrialState.COMPLETE
