"""Sweep workers on the default journal storage with a fake ``run`` (same signature as the real one):
parallel workers, pruning with reasons, diverged trials, SIGKILLed workers resumed from checkpoints."""

from __future__ import annotations

import functools
import json
import os
import signal
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from selfish.sweep.experiment_glue import load_trial_spec
from selfish.sweep.lease import read_lease
from selfish.sweep.run import run_sweep
from selfish.sweep.status import format_status, sweep_status
from selfish.sweep.storage import default_journal_path, open_storage, resolve_storage

try:  # tests/ may or may not be a package
    from tests import test_sweep_support as support
except ImportError:
    import test_sweep_support as support

SWEEP = """\
base: base.yaml
study: {study}
n_trials: {n_trials}
sampler: {{type: random, seed: 3}}
pruner: {pruner}
retry: {{lease_ttl_s: 5, lease_refresh_s: 0.5}}
space:
  sparse.density: {{type: float, low: 0.1, high: 0.8}}
  sparse.decay: {{type: categorical, choices: [cosine, constant]}}
  sparse.death_rate: {{type: float, low: 0.1, high: 0.9, condition: {{sparse.decay: cosine}}}}
{extra}"""


def make_sweep(tmp_path: Path, *, study: str = "t", n_trials: int = 4, pruner: str = "{type: none}",
               extra: str = "", epochs: int = 4) -> Path:
    (tmp_path / "base.yaml").write_text(support.TINY_SPEC.replace("epochs: 4", f"epochs: {epochs}"))
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP.format(study=study, n_trials=n_trials, pruner=pruner, extra=extra))
    return path


def sweep(path: Path, tmp_path: Path, *, workers: int = 1, epoch_s: float = 0.0, **kwargs) -> int:
    return run_sweep(path, workers=workers, data_dir=None, cache_dir=tmp_path / "cache", run_root=tmp_path / "runs",
                     wandb_mode="disabled", cores=2, run_fn=functools.partial(support.fake_run, epoch_s=epoch_s),
                     spec_loader=load_trial_spec, sinks_fn=support.no_sinks, corpus_fn=support.fake_corpus, **kwargs)


def load(tmp_path: Path, study: str = "t") -> optuna.Study:
    config = resolve_storage(None, run_root=tmp_path / "runs", study=study)
    return optuna.load_study(study_name=study, storage=open_storage(config))


def calls(run_dir: str | Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "calls.jsonl").read_text().splitlines()]


def test_two_workers_on_the_journal_finish_n_trials_without_lock_errors(tmp_path, capfd):
    path = make_sweep(tmp_path, n_trials=6)
    assert sweep(path, tmp_path, workers=2, epoch_s=0.02) == 0
    err = capfd.readouterr().err
    assert "Traceback" not in err and "lock" not in err.lower()
    trials = load(tmp_path).get_trials()
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2  # both processes took trials
    assert default_journal_path(tmp_path / "runs", "t").is_file()
    for t in trials:
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir == tmp_path / "runs" / "tiny" / f"sweep-t-t{t.number}"
        (call,) = calls(run_dir)
        assert call["resume"] is False and call["corpus"] == "corpus:ptb"  # the worker's corpus was passed
        assert t.value == pytest.approx(min(60 + 200 * abs(t.params["sparse.density"] - 0.4)
                                            + 30 * abs(t.params.get("sparse.death_rate", 0.5) - 0.3) + 400 / e
                                            for e in range(1, 5)))
        # conditional key: death_rate is sampled only with the cosine schedule
        assert ("sparse.death_rate" in t.params) == (t.params["sparse.decay"] == "cosine")
        assert t.user_attrs["epoch"] == 4 and t.user_attrs["density"] == t.params["sparse.density"]


@pytest.mark.slow
def test_rerunning_the_command_resumes_the_study(tmp_path):
    path = make_sweep(tmp_path, n_trials=3)
    assert sweep(path, tmp_path) == 0
    first = [(t.number, t.params) for t in load(tmp_path).get_trials()]
    assert len(first) == 3
    assert sweep(path, tmp_path, workers=2) == 0  # nothing left to do: no new trial
    assert [(t.number, t.params) for t in load(tmp_path).get_trials()] == first
    assert sweep(path, tmp_path, trials=5) == 0  # --trials raises the target: only the missing trials run
    trials = load(tmp_path).get_trials()
    assert len(trials) == 5 and [(t.number, t.params) for t in trials[:3]] == first
    assert all(t.state == TrialState.COMPLETE for t in trials)


def test_pruning_is_recorded_with_its_reason_and_diverged_trials_are_pruned(tmp_path):
    extra = "  optim.lr: {type: categorical, choices: [20, 1000]}\n"
    path = make_sweep(tmp_path, n_trials=8, pruner="{type: median, n_startup_trials: 2, n_warmup_steps: 1}",
                      extra=extra, epochs=5)
    assert sweep(path, tmp_path) == 0
    trials = load(tmp_path).get_trials()
    assert len(trials) == 8
    diverged = [t for t in trials if t.params["optim.lr"] == 1000]
    assert diverged, "the random sampler with seed 3 should pick lr 1000 at least once"
    for t in diverged:
        assert t.state == TrialState.PRUNED
        assert t.user_attrs["reason"].startswith("diverged: loss is nan at epoch 2")
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.params["optim.lr"] == 20]
    assert pruned, "the median pruner should stop some of the healthy-but-worse trials"
    for t in pruned:
        epoch = t.user_attrs["epoch"]
        assert t.user_attrs["reason"] == (f"pruned by median at epoch {epoch}: "
                                          f"val_ppl {t.intermediate_values[epoch]:.2f}")
        assert calls(t.user_attrs["run_dir"])[-1]["start_epoch"] == 0 and epoch < 5
    status = sweep_status(path, run_root=tmp_path / "runs")
    text = format_status(status)
    assert "pruned by median at epoch" in text and "diverged: loss is nan" in text
    best = status["best"][0]
    assert best["number"] == min((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value).number
    assert best["command"].startswith(f"selfish train {tmp_path / 'base.yaml'} --set sparse.density=")
    assert status["dashboard"].startswith("optuna-dashboard ")


@pytest.mark.slow
def test_sigkilled_worker_leaves_a_trial_the_next_run_resumes_from_its_checkpoint(tmp_path):
    path = make_sweep(tmp_path, n_trials=2, epochs=6)
    lease_dir = default_journal_path(tmp_path / "runs", "t").parent / "leases"
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(sweep(path, tmp_path, epoch_s=0.4)))
    thread.start()
    deadline = time.time() + 60
    run_dir = tmp_path / "runs" / "tiny" / "sweep-t-t0"
    while time.time() < deadline:  # wait for trial 0 to checkpoint epoch 2
        ckpt = run_dir / "last.pt"
        if ckpt.is_file() and json.loads(ckpt.read_text() or "{}").get("epoch", 0) >= 2:
            break
        time.sleep(0.05)
    lease = read_lease(lease_dir, 0)
    assert lease is not None
    os.kill(lease.pid, signal.SIGKILL)  # the worker process, mid-trial
    thread.join(timeout=60)
    assert codes == [1]  # the parent reports the dead worker
    study = load(tmp_path)
    (t0,) = study.get_trials()
    assert t0.state == TrialState.RUNNING  # left behind by the dead worker
    killed_at = json.loads((run_dir / "last.pt").read_text())["epoch"]

    assert sweep(path, tmp_path) == 0  # same command again
    trials = load(tmp_path).get_trials()
    by_state = {s: [t for t in trials if t.state == s] for s in TrialState}
    assert [t.number for t in by_state[TrialState.FAIL]] == [0]
    assert by_state[TrialState.FAIL][0].user_attrs["retried"] is True
    assert "lost its lease" in by_state[TrialState.FAIL][0].user_attrs["reason"]
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == 0)
    assert retry.state == TrialState.COMPLETE
    assert retry.params == t0.params and retry.user_attrs["run_dir"] == str(run_dir)
    first, second = calls(run_dir)
    assert first["resume"] is False and second == {**second, "resume": True, "start_epoch": killed_at}
    # the retry continued the dead trial's curve: epochs 1..killed_at were reported before, the rest after
    assert sorted(retry.intermediate_values) == list(range(1, 7))
    assert len(by_state[TrialState.COMPLETE]) == 2  # the study reached its 2 finished trials
    status = sweep_status(path, run_root=tmp_path / "runs")
    assert status["counts"]["done"] == 2 and status["counts"]["failed"] == 0


REAL_BASE = """\
name: sweep_tiny
seed: 1
device: cpu
data: {corpus: ptb, batch_size: 4, eval_batch_size: 4, bptt: 8, max_train_tokens: 3000, max_valid_tokens: 800, max_test_tokens: 800}
model: {type: lstm, emsize: 16, nhid: 16, nlayers: 1, dropout: 0.0}
sparse: {enabled: true, density: 0.5, death_rate: 0.5}
optim: {name: sgd, lr: 20}
train: {epochs: %d, log_interval: 1000}
"""


def real_sweep(tmp_path: Path, shared_data: Path, *, epochs: int, n_trials: int) -> Path:
    (tmp_path / "base.yaml").write_text(REAL_BASE % epochs)
    path = tmp_path / "sweep.yaml"
    path.write_text(f"base: base.yaml\nstudy: real\nn_trials: {n_trials}\nsampler: {{type: random, seed: 0}}\n"
                    "pruner: {type: none}\nretry: {lease_ttl_s: 5, lease_refresh_s: 0.5}\n"
                    "space:\n  sparse.density: {type: float, low: 0.2, high: 0.8}\n")
    return path


def run_real(path: Path, tmp_path: Path, shared_data: Path, workers: int = 1) -> int:
    return run_sweep(path, workers=workers, data_dir=shared_data, cache_dir=tmp_path / "cache",
                     run_root=tmp_path / "runs", wandb_mode="disabled", cores=2)


@pytest.mark.slow
def test_real_runs_on_a_ptb_slice_fill_normal_run_folders(tmp_path, shared_data):
    path = real_sweep(tmp_path, shared_data, epochs=2, n_trials=2)
    assert run_real(path, tmp_path, shared_data) == 0
    trials = load(tmp_path, "real").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for t in trials:
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir == tmp_path / "runs" / "sweep_tiny" / f"sweep-real-t{t.number}"
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["best_val_ppl"] == pytest.approx(t.value)
        assert summary["wandb"]["group"] == "real"
        assert t.user_attrs["density"] == pytest.approx(t.params["sparse.density"], abs=0.05)
        assert t.user_attrs["train_flops"] == summary["flops"]["train_total"]
        assert sorted(t.intermediate_values) == [1, 2]


@pytest.mark.slow
def test_real_sigkilled_trial_resumes_from_its_checkpoint(tmp_path, shared_data):
    path = real_sweep(tmp_path, shared_data, epochs=8, n_trials=1)
    lease_dir = default_journal_path(tmp_path / "runs", "real").parent / "leases"
    run_dir = tmp_path / "runs" / "sweep_tiny" / "sweep-real-t0"
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(run_real(path, tmp_path, shared_data)))
    thread.start()
    deadline = time.time() + 120
    while time.time() < deadline and not any("\"epoch\": 2," in line for line in
                                              _lines(run_dir / "metrics.jsonl")):
        time.sleep(0.1)
    lease = read_lease(lease_dir, 0)
    assert lease is not None
    os.kill(lease.pid, signal.SIGKILL)
    thread.join(timeout=60)
    assert codes == [1]
    epochs_before = [r["epoch"] for r in map(json.loads, _lines(run_dir / "metrics.jsonl")) if r["type"] == "epoch"]
    assert max(epochs_before) < 8, "the worker was killed mid-trial"
    assert run_real(path, tmp_path, shared_data) == 0
    records = [json.loads(line) for line in _lines(run_dir / "metrics.jsonl")]
    starts = [r for r in records if r["type"] == "start"]
    assert [s["resumed"] for s in starts] == [False, True]
    resumed_epochs = [r["epoch"] for r in records[records.index(starts[1]):] if r["type"] == "epoch"]
    assert resumed_epochs[0] == max(epochs_before) + 1 and resumed_epochs[-1] == 8
    trials = load(tmp_path, "real").get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["retry_of"] == 0 and trials[1].user_attrs["run_dir"] == str(run_dir)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


@pytest.mark.slow
def test_grid_sweep_with_two_objectives_gives_a_pareto_front(tmp_path):
    (tmp_path / "base.yaml").write_text(support.TINY_SPEC)
    path = tmp_path / "sweep.yaml"
    path.write_text("base: base.yaml\nstudy: t\nn_trials: 10\nsampler: {type: grid, grid: {sparse.density: [0.2, 0.4, 0.6]}}\n"
                    "objective: {metrics: [val_ppl, density]}\nspace:\n"
                    "  sparse.density: {type: float, low: 0.1, high: 0.8}\n")
    assert sweep(path, tmp_path) == 0
    trials = load(tmp_path).get_trials()
    assert sorted(t.params["sparse.density"] for t in trials) == [0.2, 0.4, 0.6]  # n_trials capped at the grid
    status = sweep_status(path, run_root=tmp_path / "runs")
    front = sorted(b["params"]["sparse.density"] for b in status["best"])
    assert front == [0.2, 0.4]  # 0.6 is worse in both objectives than 0.4 under the fake curve
    assert "Pareto front" in format_status(status)


def timeout_recording_sinks(spec, run_dir, wandb):
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "init_timeout.txt").write_text(repr(wandb.init_timeout))
    return []


def test_wandb_init_timeout_reaches_every_trial(tmp_path):
    path = make_sweep(tmp_path, n_trials=2, epochs=1)
    code = run_sweep(path, workers=1, data_dir=None, cache_dir=tmp_path / "cache", run_root=tmp_path / "runs",
                     wandb_mode="disabled", wandb_init_timeout=7.5, cores=2, run_fn=support.fake_run,
                     spec_loader=load_trial_spec, sinks_fn=timeout_recording_sinks, corpus_fn=support.fake_corpus)
    assert code == 0
    seen = sorted(p.read_text() for p in (tmp_path / "runs").rglob("init_timeout.txt"))
    assert seen == ["7.5", "7.5"]


def test_trial_sinks_give_the_timeout_to_the_wandb_sink(tmp_path, monkeypatch):
    import selfish.tracking as tracking
    from selfish.spec import spec_from_dict
    from selfish.sweep.objective import WandbTrial

    made = {}

    class Recorder:
        def __init__(self, config, settings, run_dir, **kwargs):
            made.update(kwargs)

        def info(self):
            return {}

    monkeypatch.setattr(tracking, "WandbSink", Recorder)
    trial = WandbTrial(mode="disabled", project="p", group="g", name="n", config={}, init_timeout=4.0)
    tracking.trial_sinks(spec_from_dict({"name": "x"}), tmp_path / "run", trial)
    assert made["init_timeout"] == 4.0


def test_worker_pays_the_lazy_torch_imports_before_taking_trials():
    """A fresh interpreter (as a worker is): after `_pay_one_time_costs` the import that building the first
    trial's optimizer would have waited for (torch._dynamo) is done."""
    import subprocess
    import sys

    code = ("import sys, torch; before = 'torch._dynamo' in sys.modules; "
            "from selfish.sweep.worker import _pay_one_time_costs; _pay_one_time_costs(); "
            "print(before, 'torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["False", "True"], out.stdout + out.stderr
