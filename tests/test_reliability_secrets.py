"""Secrets (issue 8, item 6): a storage URL with a password never appears in stdout/stderr, log files, run
folders, W&B files (config included) or reports -- for `sweep`, `sweep-status`, `report` and
`dashboard-live`, through the real CLI, with real training and W&B offline. Needs the local PostgreSQL
(trust auth: the password is accepted and ignored, so it only has to not leak); skipped without it.
The failure paths (unreachable servers, bad schemes) are covered for every command by the hypothesis test
in test_reliability_input.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest

import runner
from selfish.sweep.storage import sqlalchemy_url

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PASSWORD = "pw" + uuid.uuid4().hex[:12]
URL = f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/test"
BASE = """\
name: secret_base
seed: 1
device: cpu
data: {corpus: ptb, batch_size: 4, eval_batch_size: 4, bptt: 8, max_train_tokens: 600, max_valid_tokens: 200,
       max_test_tokens: 200}
model: {type: lstm, emsize: 8, nhid: 8, nlayers: 1, dropout: 0.0}
sparse: {enabled: true, density: 0.5, death_rate: 0.5}
train: {epochs: 2, log_interval: 5}
"""


@pytest.fixture
def study(monkeypatch, tmp_path):
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test", connect_timeout=2).close()
    except psycopg2.OperationalError as exc:
        pytest.skip(f"local PostgreSQL does not answer: {exc}")
    name = f"secrets-{uuid.uuid4().hex[:8]}"
    monkeypatch.chdir(tmp_path)
    home = str(tmp_path / "wandb-home")
    for key, value in {"WANDB_DIR": home, "WANDB_CACHE_DIR": home, "WANDB_CONFIG_DIR": home,
                       "WANDB_DATA_DIR": home, "NETRC": str(tmp_path / "no-netrc")}.items():
        monkeypatch.setenv(key, value)
    for key in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    yield name
    try:
        optuna.delete_study(study_name=name, storage=sqlalchemy_url(URL))
    except KeyError:
        pass


def leaks(root: Path) -> list[Path]:
    """Files holding the password, apart from the sweep file the user wrote it into."""
    return [p for p in root.rglob("*") if p.is_file() and p.name != "sweep.yaml" and PASSWORD.encode() in p.read_bytes()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_password_never_leaks_from_sweep_status_report_or_dashboard(study, tmp_path, shared_data, capfd):
    (tmp_path / "base.yaml").write_text(BASE)
    # the password in the sweep file itself (`storage:`), as a user would keep it for several machines
    (tmp_path / "sweep.yaml").write_text(
        f"base: base.yaml\nstudy: {study}\nstorage: '{URL}'\nn_trials: 2\nsampler: {{type: random, seed: 1}}\n"
        "pruner: {type: none}\nspace:\n  sparse.density: {type: float, low: 0.2, high: 0.8}\n")
    argv = ["sweep", "sweep.yaml", "--workers", "2", "--wandb", "offline", "--data-dir", str(shared_data),
            "--cache-dir", str(tmp_path / "cache"), "-v"]
    assert runner.main(argv) == 0
    assert runner.main(["sweep-status", "sweep.yaml"]) == 0
    assert runner.main(["sweep-status", "--storage", URL, "--study", study, "--json"]) == 0
    assert runner.main(["report", "runs", "--sweep", "sweep.yaml", "--out", "out-file"]) == 0
    assert runner.main(["report", "runs", "--sweep", URL, "--study", study, "--out", "out-url"]) == 0
    captured = capfd.readouterr()
    text = captured.out + captured.err
    assert PASSWORD not in text
    assert "postgres:***@127.0.0.1" in text  # the storage is named, redacted

    trial_runs = list((tmp_path / "runs" / "secret_base").glob("sweep-*"))
    assert len(trial_runs) == 2
    for run_dir in trial_runs:  # real trials with offline W&B runs: config, logs, the run file
        assert list(run_dir.glob("wandb/offline-run-*/run-*.wandb")), run_dir
        assert b"postgres:***@127.0.0.1" in next(run_dir.glob("wandb/offline-run-*/run-*.wandb")).read_bytes()
        assert list(run_dir.glob("wandb/offline-run-*/logs/debug*.log")) or list(run_dir.glob("wandb/debug*.log"))
    for folder in ("out-file", "out-url"):
        assert (tmp_path / folder / "report.html").is_file()
    assert not leaks(tmp_path), leaks(tmp_path)

    port = free_port()  # the live dashboard: the real URL goes to optuna-dashboard, never to the screen
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen([sys.executable, str(REPO / "runner.py"), "dashboard-live", "sweep.yaml", "--port",
                              str(port)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert server.poll() is None, server.stdout.read()
            time.sleep(0.2)
        else:
            pytest.fail("optuna-dashboard did not start")
    finally:
        os.killpg(server.pid, signal.SIGINT)  # the runner and the optuna-dashboard it started
        try:
            output, _ = server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            output, _ = server.communicate()
    assert "running:" in output and "postgres:***@127.0.0.1" in output
    assert PASSWORD not in output
    assert not leaks(tmp_path), leaks(tmp_path)
