"""Kill and resume (issue 8, item 2): `runner.py train` subprocesses of a tiny spec on real PTB are SIGKILLed
at random moments -- inside a step, during the mask update, during the checkpoint write (through the
runner's `SELFISH_FAULT` hook) and at random wall-clock times (from outside) -- and `train --resume` must
always succeed and end identical to the bit to a run that was never interrupted: per-epoch validation
perplexity, test perplexity, final weights, masks and the best checkpoint. Damaged checkpoints fall back
to `last.prev.pt` with one warning; both damaged is exit code 2 with a one-line message."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

EPOCHS = 6
SPEC = f"""\
name: killme
seed: 5
device: cpu
data: {{corpus: ptb, batch_size: 4, eval_batch_size: 4, bptt: 8, max_train_tokens: 800, max_valid_tokens: 300,
       max_test_tokens: 300}}
model: {{type: lstm, emsize: 12, nhid: 12, nlayers: 1, dropout: 0.1}}
sparse: {{enabled: true, density: 0.5, death_rate: 0.5}}
optim: {{lr: 10, nonmono: 1}}
train: {{epochs: {EPOCHS}, log_interval: 5}}
tracking: {{wandb: {{mode: disabled}}}}
"""
STEPS_PER_EPOCH = 25  # 800 tokens / batch 4 = 200 rows, bptt 8


def _env(cache: Path, data: Path, fault: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "SELFISH_"))}
    env.update(SELFISH_DATA=str(data), SELFISH_CACHE=str(cache), WANDB_MODE="disabled")
    if fault:
        env["SELFISH_FAULT"] = fault
    return env


def _cmd(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "runner.py"), *args, "--quiet", "--threads", "1"]


def train(cwd: Path, env: dict, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd("train", *args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def outcome(run_dir: Path) -> dict:
    """What must match to the bit: epoch val ppl (each epoch once), test ppl, last/best weights and masks."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    last = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    best = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
    return {
        "epochs": [(r["epoch"], r["step"], r["val_ppl"], r["train_loss"]) for r in records if r["type"] == "epoch"],
        "tests": [r["test_ppl"] for r in records if r["type"] == "test"],
        "status": summary["status"], "test_ppl": summary["test_ppl"], "best_val_ppl": summary["best_val_ppl"],
        "last": last["model"], "masks": last["masking"]["masks"], "best": best["model"], "step": last["loop"]["step"],
    }


def assert_identical(got: dict, want: dict) -> None:
    assert got["status"] == "completed"
    assert got["epochs"] == want["epochs"] and len(got["epochs"]) == EPOCHS
    assert got["tests"] == want["tests"] and len(got["tests"]) == 1
    assert (got["test_ppl"], got["best_val_ppl"], got["step"]) == (want["test_ppl"], want["best_val_ppl"], want["step"])
    for key in ("last", "masks", "best"):
        assert got[key].keys() == want[key].keys()
        for name, tensor in want[key].items():
            assert torch.equal(got[key][name], tensor), f"{key}: {name} differs"


@pytest.fixture(scope="module")
def world(tmp_path_factory, shared_data):
    """A folder with the spec, a shared token cache and the uninterrupted reference run."""
    root = tmp_path_factory.mktemp("kill")
    (root / "spec.yaml").write_text(SPEC)
    env = _env(root / "cache", shared_data)
    proc = train(root, env, "spec.yaml", "--run-dir", "reference")
    assert proc.returncode == 0, proc.stderr
    return root, shared_data, outcome(root / "reference")


def _resume_until_done(root: Path, env: dict, run_dir: str) -> subprocess.CompletedProcess:
    proc = train(root, env, "--resume", run_dir)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


def test_sigkill_at_named_points_then_resume_is_bit_identical(world):
    """A chain of kills on one run: each process is killed at a seeded random point (a step, the mask
    update, after the new checkpoint is written but before it replaces the old, between the rotation to
    last.prev.pt and the rename); each kill is followed by `--resume`. The end matches the reference."""
    root, data, reference = world
    rng = random.Random(8)
    # every point at least once, the first before any checkpoint exists (resume then starts over)
    faults: list[str] = ["step:3", "checkpoint_written:1", "mask_update:2", "checkpoint_rotated:2"]
    points = ["step", "mask_update", "checkpoint_written", "checkpoint_rotated"]
    for _ in range(8):
        point = rng.choice(points)
        nth = rng.randint(1, 2 * STEPS_PER_EPOCH) if point == "step" else rng.randint(1, 2)
        faults.append(f"{point}:{nth}")
    kills = 0
    for index, fault in enumerate(faults):
        env = _env(root / "cache", data, fault)
        args = ("spec.yaml", "--run-dir", "chain") if index == 0 else ("--resume", "chain")
        proc = train(root, env, *args)
        if proc.returncode == 0:  # the run finished before reaching the fault point
            break
        assert proc.returncode == -signal.SIGKILL, (fault, proc.stderr)
        kills += 1
    print(f"named-point kills: {kills} of {faults}")
    assert kills >= 8, faults
    _resume_until_done(root, _env(root / "cache", data), "chain")
    assert_identical(outcome(root / "chain"), reference)
    assert not list((root / "chain").glob(".*.tmp"))  # temp files of killed writes are cleaned on resume


def test_sigkill_at_random_times_then_resume_is_bit_identical(world):
    """Kills from outside at seeded random wall-clock moments (start-up, a step, evaluation, a write)."""
    root, data, reference = world
    env = _env(root / "cache", data)
    rng = random.Random(11)
    # how long one uninterrupted process takes here (start-up included), to spread the kill times over it
    started = time.monotonic()
    proc = train(root, env, "spec.yaml", "--run-dir", "timing")
    assert proc.returncode == 0, proc.stderr
    duration = time.monotonic() - started
    kills = 0
    for index in range(4):
        args = ("spec.yaml", "--run-dir", "random") if index == 0 else ("--resume", "random")
        child = subprocess.Popen(_cmd("train", *args), cwd=root, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.3, 1.0) * duration)
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            kills += 1
        child.communicate(timeout=60)
    print(f"random-time kills: {kills}")
    assert kills >= 3
    _resume_until_done(root, env, "random")
    assert_identical(outcome(root / "random"), reference)


def test_damaged_last_checkpoint_falls_back_to_the_previous_one(world):
    """last.pt truncated (a bad copy, a full disk): one warning naming it, resume from last.prev.pt, same end."""
    root, data, reference = world
    proc = train(root, _env(root / "cache", data, "checkpoint_written:3"), "spec.yaml", "--run-dir", "damaged")
    assert proc.returncode == -signal.SIGKILL
    last = root / "damaged" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    proc = _resume_until_done(root, _env(root / "cache", data), "damaged")
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "last.pt: unreadable checkpoint" in warnings[0]
    assert "resuming from last.prev.pt" in warnings[0]
    assert (root / "damaged" / "last.pt.damaged").is_file()  # kept aside, never rotated over the good one
    assert_identical(outcome(root / "damaged"), reference)
