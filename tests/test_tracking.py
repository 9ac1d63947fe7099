"""Sinks fed with synthetic events: run folder contents, resume truncation, atomic summary, W&B, terminal."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import pytest
from rich.console import Console

from selfish.tracking import RunFolderSink, TerminalSink, WandbSink, new_run_id, read_metrics
from selfish.tracking import run_folder as run_folder_module

STEPS_PER_EPOCH = 10


def mask_stats(epoch: int) -> dict:
    gate = {"nonzero_before": 30, "nonzero_after": 30 - epoch, "removed": 6, "regrown": 6 - epoch, "numel": 100,
            "density": (30 - epoch) / 100}
    tensor = {"nonzero_before": 120, "nonzero_after": 120, "removed": 24, "regrown": 24, "regrown_just_removed": 5,
              "numel": 400, "density": 0.3, "turnover": 0.16, "exploration_rate": 0.4 + 0.01 * epoch}
    return {"update": epoch, "step": epoch * STEPS_PER_EPOCH, "death_rate": 0.5,
            "total": dict(tensor), "tensors": {"rnn.weight_hh_l0": dict(tensor)},
            "gates": {"rnn.weight_hh_l0": {g: dict(gate) for g in "ifgo"}}}


def start(step: int = 0, resumed: bool = False, epoch: int = 0) -> dict:
    return {"type": "start", "step": step, "epoch": epoch, "params_dense": 1000, "params_nonzero": 330,
            "density": 0.33, "steps_per_epoch": STEPS_PER_EPOCH, "device": "cpu", "resumed": resumed,
            "flops": {"forward_dense_per_token": 2000, "forward_sparse_per_token": 660, "train_total": 1.5e9,
                      "test_per_token": 660}}


def epoch_events(epoch: int, val_ppl: float) -> list[dict]:
    events = []
    for batch in (5, 10):
        step = (epoch - 1) * STEPS_PER_EPOCH + batch
        events.append({"type": "step", "step": step, "epoch": epoch, "loss": 5.0, "ppl": 148.4, "lr": 20.0,
                       "tokens_per_s": 1000.0, "death_rate": 0.5, "phase": "sgd", "batch": batch,
                       "batches": STEPS_PER_EPOCH})
    events.append({"type": "epoch", "step": epoch * STEPS_PER_EPOCH, "epoch": epoch, "train_loss": 5.0,
                   "train_ppl": 148.4, "val_loss": 4.9, "val_ppl": val_ppl, "best_val_ppl": val_ppl, "lr": 20.0,
                   "phase": "sgd", "switched": False, "death_rate": 0.5, "density": 0.33,
                   "exploration_rate": 0.41, "epoch_time_s": 1.5, "tokens_per_s": 1000.0, "mask": mask_stats(epoch)})
    return events


def full_run(val_ppls=(150.0, 120.0, 130.0)) -> list[dict]:
    events = [start()]
    for epoch, ppl in enumerate(val_ppls, 1):
        events += epoch_events(epoch, ppl)
    step = len(val_ppls) * STEPS_PER_EPOCH
    events.append({"type": "test", "step": step, "epoch": len(val_ppls), "test_loss": 4.7, "test_ppl": 110.0,
                   "val_loss": 4.79, "val_ppl": 120.0, "best_epoch": 2})
    events.append({"type": "end", "step": step, "epoch": len(val_ppls), "status": "completed", "reason": None})
    return events


STATIC = {"name": "toy", "run_id": "20260101-000000-abcd", "git_commit": "abc123", "versions": {"torch": "2"},
          "wandb": {"id": None, "mode": "disabled", "url": None, "project": "p", "group": None}}


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


# ---- run folder ----------------------------------------------------------------------------------

def test_run_folder_records_and_summary(tmp_path):
    sink = RunFolderSink(tmp_path, STATIC)
    events = full_run()
    for event in events:
        sink.write(event)
    sink.close("completed")
    assert read_metrics(tmp_path / "metrics.jsonl") == events
    summary = summary_of(tmp_path)
    assert summary["status"] == "completed" and summary["name"] == "toy" and summary["git_commit"] == "abc123"
    assert summary["best_val_ppl"] == 120.0 and summary["best_epoch"] == 2 and summary["test_ppl"] == 110.0
    assert summary["epochs_done"] == 3 and summary["params_dense"] == 1000 and summary["params_nonzero"] == 330
    assert summary["flops"]["train_total"] == 1.5e9 and set(summary["flops"]) == set(run_folder_module.FLOPS_KEYS)
    for key in ("wall_time_s", "started_at", "finished_at", "versions", "wandb", "density", "reason", "run_id"):
        assert key in summary


def test_summary_is_current_while_running_and_status_on_close(tmp_path):
    sink = RunFolderSink(tmp_path, STATIC)
    for event in [start(), *epoch_events(1, 200.0)]:
        sink.write(event)
    summary = summary_of(tmp_path)
    assert summary["status"] == "running" and summary["best_val_ppl"] == 200.0 and summary["epochs_done"] == 1
    sink.close("failed")  # no `end` event came: the close status is recorded
    assert summary_of(tmp_path)["status"] == "failed"
    sink.close("completed")  # idempotent
    assert summary_of(tmp_path)["status"] == "failed"


def test_non_finite_values_become_null(tmp_path):
    sink = RunFolderSink(tmp_path, STATIC)
    sink.write({"type": "step", "step": 1, "epoch": 1, "loss": float("nan"), "ppl": float("inf")})
    sink.close("diverged")
    line = (tmp_path / "metrics.jsonl").read_text().strip()
    assert json.loads(line)["loss"] is None and "NaN" not in line


def test_resume_truncates_to_the_checkpoint_step(tmp_path):
    sink = RunFolderSink(tmp_path, STATIC)
    first = [start(), *epoch_events(1, 150.0), *epoch_events(2, 120.0), *epoch_events(3, 110.0)[:1]]
    for event in first:
        sink.write(event)
    # crash: no close; a half-written last line as a kill could leave
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"type": "step", "step": 2')
    resumed = RunFolderSink(tmp_path, STATIC)
    resumed.write(start(step=20, resumed=True, epoch=2))
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 5, 10, 10, 15, 20, 20, 20]
    assert records[-1]["resumed"] is True and all(r["type"] not in ("test", "end") for r in records)
    for event in epoch_events(3, 115.0) + full_run()[-2:]:
        resumed.write(event)
    resumed.close("completed")
    summary = summary_of(tmp_path)
    assert summary["epochs_done"] == 3 and summary["best_val_ppl"] == 115.0 and summary["best_epoch"] == 2
    steps = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["type"] == "step"]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # the replayed epoch appears once


def test_resume_drops_a_previous_test_and_end(tmp_path):
    sink = RunFolderSink(tmp_path, STATIC)
    for event in full_run():
        sink.write(event)
    sink.close("completed")
    again = RunFolderSink(tmp_path, STATIC)
    again.write(start(step=30, resumed=True, epoch=3))
    types = [r["type"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert "test" not in types and "end" not in types
    assert summary_of(tmp_path)["status"] == "running" and summary_of(tmp_path)["test_ppl"] is None


def test_summary_write_is_atomic(tmp_path, monkeypatch):
    sink = RunFolderSink(tmp_path, STATIC)
    sink.write(start())
    before = (tmp_path / "summary.json").read_text()

    def broken_dump(*args, **kwargs):
        args[1].write('{"half": ')
        raise OSError("disk full")

    monkeypatch.setattr(run_folder_module.json, "dump", broken_dump)
    with pytest.raises(OSError):
        sink.write(epoch_events(1, 140.0)[-1])
    assert (tmp_path / "summary.json").read_text() == before  # the old summary is intact and parseable
    json.loads(before)


def test_new_run_id_sorts_by_time():
    from datetime import datetime, timezone

    run_id = new_run_id(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "ab12")
    assert run_id == "20260102-030405-ab12"
    assert new_run_id() != new_run_id()


# ---- W&B -----------------------------------------------------------------------------------------

@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    return tmp_path


SETTINGS = {"mode": "offline", "project": "selfish-test", "entity": None, "group": "g", "tags": ["t"]}


def test_wandb_offline_run_has_the_metrics(wandb_env):
    run_dir = wandb_env / "run"
    sink = WandbSink({"name": "toy", "seed": 1}, SETTINGS, run_dir, name="toy/1")
    assert sink.active and sink.info()["mode"] == "offline"
    for event in full_run():
        sink.write(event)
    sink.close("completed")
    state = json.loads((run_dir / "wandb.json").read_text())
    assert state["id"] == sink.info()["id"] and state["last_step"] == 30 and state["last_epoch"] == 3
    offline = list((run_dir / "wandb").glob(f"offline-run-*-{state['id']}"))
    assert len(offline) == 1
    data = wait_for_wandb_file(offline[0] / f"run-{state['id']}.wandb", b"mask/turnover")
    for key in (b"val/ppl", b"train/loss", b"density/rnn.weight_hh_l0/i", b"removed/rnn.weight_hh_l0",
                b"mask/exploration_rate", b"mask/turnover", b"epoch/lr"):
        assert key in data
    assert list(offline[0].glob("files/media/table/mask/gate_density*.table.json"))


def wait_for_wandb_file(path: Path, marker: bytes, timeout_s: float = 15.0) -> bytes:
    """wandb-core writes the offline log asynchronously; `finish()` can return before the last flush."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        data = path.read_bytes() if path.exists() else b""
        if marker in data or time.monotonic() > deadline:
            return data
        time.sleep(0.05)


class FakeRun:
    def __init__(self, fail_log: bool = False):
        self.id, self.url, self.logged, self.summary = "fake01", None, [], {}
        self.fail_log, self.finished = fail_log, None

    def define_metric(self, *args, **kwargs):
        pass

    def log(self, data):
        if self.fail_log:
            raise ConnectionError("network down")
        self.logged.append(data)

    def finish(self, exit_code=0):
        self.finished = exit_code


def test_wandb_resume_continues_the_id_and_never_logs_twice(wandb_env, monkeypatch):
    import wandb

    calls = []

    def fake_init(**kwargs):
        calls.append(kwargs)
        run = FakeRun()
        run.id = kwargs["id"]
        calls[-1]["run"] = run
        return run

    monkeypatch.setattr(wandb, "init", fake_init)
    run_dir = wandb_env / "run"
    first = WandbSink({}, SETTINGS, run_dir)
    events = [start(), *epoch_events(1, 150.0), *epoch_events(2, 130.0)[:2]]  # crash inside epoch 2
    for event in events:
        first.write(event)
    second = WandbSink({}, SETTINGS, run_dir)  # resumed from the epoch-1 checkpoint (step 10)
    for event in [start(10, True, 1), *epoch_events(2, 130.0), *epoch_events(3, 120.0)]:
        second.write(event)
    assert calls[1]["id"] == calls[0]["id"] and calls[1]["resume"] == "allow"
    assert calls[1]["settings"].mode == "offline"
    logged = calls[0]["run"].logged + calls[1]["run"].logged
    steps = [d["step"] for d in logged if "step" in d]
    epochs = [d["epoch"] for d in logged if "epoch" in d]
    assert steps == [5, 10, 15, 20, 25, 30] and epochs == [1, 2, 3]


def test_wandb_init_failure_warns_once_and_turns_off(wandb_env, monkeypatch):
    import wandb

    def broken_init(**kwargs):
        raise RuntimeError("bad API key")

    monkeypatch.setattr(wandb, "init", broken_init)
    with pytest.warns(RuntimeWarning, match="W&B init failed") as caught:
        sink = WandbSink({}, SETTINGS, wandb_env / "run")
    for event in full_run():
        sink.write(event)
    sink.close("completed")
    assert len(caught) == 1 and not sink.active and sink.info()["mode"] == "failed"


def test_wandb_log_failure_warns_once(wandb_env, monkeypatch):
    import wandb

    run = FakeRun(fail_log=True)
    monkeypatch.setattr(wandb, "init", lambda **kwargs: run)
    sink = WandbSink({}, SETTINGS, wandb_env / "run")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for event in full_run():
            sink.write(event)
        sink.close("completed")
    assert len([w for w in caught if "W&B log failed" in str(w.message)]) == 1
    assert run.finished == 1 and not sink.active


def test_wandb_disabled_does_nothing(wandb_env, monkeypatch):
    import wandb

    monkeypatch.setattr(wandb, "init", lambda **kwargs: pytest.fail("init called"))
    sink = WandbSink({}, {**SETTINGS, "mode": "disabled"}, wandb_env / "run")
    sink.write(start())
    sink.close("completed")
    assert sink.info()["mode"] == "disabled" and not (wandb_env / "run" / "wandb.json").exists()


# ---- terminal ------------------------------------------------------------------------------------

def test_terminal_prints_epoch_and_final_tables():
    out = io.StringIO()
    sink = TerminalSink(Console(file=out, width=200, force_terminal=False), title="toy")
    for event in full_run():
        sink.write(event)
    sink.close("completed")
    text = out.getvalue()
    assert "toy: starting" in text and "330 non-zero" in text and "| epoch 1 | 5/10 batches" in text
    assert "val ppl" in text and "120.00" in text and "exploration" in text and "removed" in text
    assert "test ppl" in text and "110.00" in text and "run completed" in text


def test_terminal_live_progress_on_a_terminal():
    out = io.StringIO()
    sink = TerminalSink(Console(file=out, width=120, force_terminal=True))
    for event in full_run():
        sink.write(event)
    sink.close("completed")
    text = out.getvalue()
    assert "epoch 1" in text and "150.00" in text and "110.00" in text and sink._progress is None


def test_terminal_quiet_prints_nothing():
    out = io.StringIO()
    sink = TerminalSink(Console(file=out, width=200), quiet=True)
    for event in full_run():
        sink.write(event)
    sink.close("completed")
    assert out.getvalue() == ""
