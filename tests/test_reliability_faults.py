"""Divergence and tracker faults (issue 8, items 3 and 4).

- A NaN or infinite loss stops the run with a clear message, keeps the last good checkpoint, marks the run
  `diverged` in summary.json and in the (offline) W&B run, exit code 1. In a sweep the trial is pruned with
  the reason (the fake-run sweep test covers the worker side; here a real diverging trial).
- W&B online with no network, with a bad key, or its service process killed mid-run: the run finishes, the
  run folder is complete, exactly one warning is printed, and it does not hang.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

import runner
from selfish.train import loop

REPO = Path(__file__).resolve().parents[1]

SPEC = """\
name: faults
seed: 7
device: cpu
data: {corpus: ptb, batch_size: 4, eval_batch_size: 4, bptt: 8, max_train_tokens: 800, max_valid_tokens: 300,
       max_test_tokens: 300}
model: {type: lstm, emsize: 12, nhid: 12, nlayers: 1, dropout: 0.1}
sparse: {enabled: true, density: 0.5, death_rate: 0.5}
optim: {lr: 10}
train: {epochs: EPOCHS, log_interval: 5}
tracking: {wandb: {mode: MODE}}
"""


def spec_file(folder: Path, epochs: int = 3, mode: str = "offline") -> Path:
    path = folder / "faults.yaml"
    path.write_text(SPEC.replace("EPOCHS", str(epochs)).replace("MODE", mode))
    return path


def wandb_home(folder: Path) -> dict[str, str]:
    home = str(folder / "wandb-home")
    return {"WANDB_DIR": home, "WANDB_CACHE_DIR": home, "WANDB_CONFIG_DIR": home, "WANDB_DATA_DIR": home}


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ---- divergence ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("poison", [math.nan, math.inf])
def test_nan_or_inf_loss_stops_the_run_keeps_the_checkpoint_and_marks_it_diverged(
        capsys, tmp_path, monkeypatch, shared_data, poison):
    """Weights blow up in epoch 2 (the decoder bias becomes NaN/inf): the loss is not finite."""
    monkeypatch.chdir(tmp_path)
    for key, value in {"SELFISH_DATA": str(shared_data), "SELFISH_CACHE": str(tmp_path / "cache"),
                       "NETRC": str(tmp_path / "no-netrc"), **wandb_home(tmp_path)}.items():
        monkeypatch.setenv(key, value)
    for key in ("WANDB_MODE", "WANDB_API_KEY", "SELFISH_FAULT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(runner, "EXTENSION_MODULES", ())
    original = loop.Trainer.run_epoch

    def run_epoch(self, epoch):
        if epoch == 2:
            with torch.no_grad():
                self.model.decoder.bias.fill_(poison)
        return original(self, epoch)

    monkeypatch.setattr(loop.Trainer, "run_epoch", run_epoch)
    code = runner.main(["train", str(spec_file(tmp_path)), "--run-dir", "run", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    run_dir = tmp_path / "run"
    (line,) = [line for line in err.splitlines() if "diverged" in line]
    assert line.startswith("selfish: error: run diverged: training loss became nan at epoch 2")
    assert f"last good checkpoint: {run_dir / 'last.pt'}" in line and "Traceback" not in err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged" and "loss became nan at epoch 2" in summary["reason"]
    assert summary["epochs_done"] == 1 and summary["test_ppl"] is None
    last = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    assert last["loop"]["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in last["model"].values() if t.is_floating_point())
    ends = [r for r in records(run_dir) if r["type"] == "end"]
    assert [e["status"] for e in ends] == ["diverged"]
    (wandb_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    deadline = time.monotonic() + 20  # the W&B service may still be writing the file
    while b"loss became nan at epoch 2" not in wandb_file.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.1)
    data = wandb_file.read_bytes()
    assert b"diverged" in data and b"loss became nan at epoch 2" in data  # the W&B run's summary
    # the kept checkpoint is a good place to continue from, e.g. with a lower learning rate
    monkeypatch.setattr(loop.Trainer, "run_epoch", original)
    assert runner.main(["train", "--resume", "run", "--quiet"]) == 0


@pytest.mark.slow
def test_a_really_diverging_sweep_trial_is_pruned_with_its_reason(tmp_path, shared_data):
    """A real trial (lr 1e30): the trainer stops on the NaN loss, the objective prunes the trial with the
    reason, the run folder says diverged, and the sweep goes on (the other trial completes)."""
    from selfish.sweep.run import run_sweep
    from selfish.sweep.storage import open_storage, resolve_storage

    (tmp_path / "base.yaml").write_text(SPEC.replace("EPOCHS", "2").replace("MODE", "disabled"))
    (tmp_path / "sweep.yaml").write_text(
        "base: base.yaml\nstudy: nan\nn_trials: 2\nsampler: {type: grid}\npruner: {type: none}\n"
        "space:\n  optim.lr: {type: categorical, choices: [1.0e+30, 10.0]}\n")
    code = run_sweep(tmp_path / "sweep.yaml", workers=1, data_dir=shared_data, cache_dir=tmp_path / "cache",
                     run_root=tmp_path / "runs", wandb_mode="disabled", cores=1)
    assert code == 0
    storage = open_storage(resolve_storage(None, run_root=tmp_path / "runs", study="nan"))
    trials = {t.params["optim.lr"]: t for t in optuna.load_study(study_name="nan", storage=storage).get_trials()}
    bad, good = trials[1e30], trials[10.0]
    assert bad.state == TrialState.PRUNED and good.state == TrialState.COMPLETE
    assert bad.user_attrs["reason"].startswith("diverged: training loss became nan at epoch 1")
    summary = json.loads((Path(bad.user_attrs["run_dir"]) / "summary.json").read_text())
    assert summary["status"] == "diverged"


# ---- tracker faults (subprocesses: the warning must be printed exactly once) ---------------------------------

def _train(folder: Path, shared_data: Path, extra_env: dict, *args: str, timeout: float = 150):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "SELFISH_"))}
    env.update(SELFISH_DATA=str(shared_data), SELFISH_CACHE=str(folder / "cache"), NETRC=str(folder / "no-netrc"),
               **wandb_home(folder), **extra_env)
    command = [sys.executable, str(REPO / "runner.py"), "train", *args, "--quiet", "--threads", "1"]
    return subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_complete_run(run_dir: Path, epochs: int) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_done"] == epochs
    assert summary["test_ppl"] is not None and math.isfinite(summary["test_ppl"])
    types = [r["type"] for r in records(run_dir)]
    assert types.count("epoch") == epochs and types[-2:] == ["test", "end"] and types[0] == "start"
    assert (run_dir / "last.pt").is_file() and (run_dir / "best.pt").is_file()
    return summary


def one_warning(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr  # nothing else: no W&B chatter, no traceback
    assert lines[0].startswith("selfish: warning: W&B ") and "training continues" in lines[0]
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["no network", "bad key"])
def test_wandb_online_without_server_or_with_a_bad_key_warns_once_and_the_run_finishes(tmp_path, shared_data,
                                                                                        case):
    env = {"WANDB_INIT_TIMEOUT": "3"}
    if case == "no network":  # a closed local port, a well-formed fake key
        env.update(WANDB_BASE_URL="http://127.0.0.1:9", WANDB_API_KEY="f" * 40)
    else:
        env.update(WANDB_API_KEY="not-a-key", WANDB_BASE_URL="http://127.0.0.1:9")
    started = time.monotonic()
    child = _train(tmp_path, shared_data, env, str(spec_file(tmp_path, 2, "online")), "--run-dir", "run")
    out, err = child.communicate(timeout=150)
    assert child.returncode == 0, err
    assert time.monotonic() - started < 120
    warning = one_warning(err)
    assert ("AuthenticationError" in warning) == (case == "bad key")
    summary = assert_complete_run(tmp_path / "run", 2)
    assert summary["wandb"]["mode"] == "failed"


def _children(pid: int) -> list[tuple[int, str]]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1: text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2:].split()[1])
        if ppid == pid:
            found.append((int(stat.parent.name), name))
    return found


@pytest.mark.slow
def test_wandb_service_killed_mid_run_warns_once_and_the_run_finishes(tmp_path, shared_data):
    child = _train(tmp_path, shared_data, {}, str(spec_file(tmp_path, 3, "offline")), "--run-dir", "run")
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and b'"type": "epoch"' not in (metrics.read_bytes() if metrics.exists() else b""):
        time.sleep(0.05)
    services = [(pid, name) for pid, name in _children(child.pid) if "wandb" in name]
    assert services, _children(child.pid)
    for pid, _ in services:  # the W&B service this run started
        os.kill(pid, signal.SIGKILL)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    one_warning(err)
    assert_complete_run(tmp_path / "run", 3)
