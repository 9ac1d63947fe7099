"""Two worker processes share one study on the local PostgreSQL (the distributed setup); its password
never reaches output, run folders or W&B config. Skipped when the server does not answer."""

from __future__ import annotations

import functools
import json
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from selfish.sweep.experiment_glue import load_trial_spec
from selfish.sweep.run import run_sweep
from selfish.sweep.status import format_status, sweep_status
from selfish.sweep.storage import sqlalchemy_url

try:  # tests/ may or may not be a package
    from tests import test_sweep_support as support
except ImportError:
    import test_sweep_support as support

pytestmark = pytest.mark.postgres

PASSWORD = "pw-" + uuid.uuid4().hex[:8]  # trust auth ignores it; we only check it never leaks
URL = f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/test"
DRIVER_URL = sqlalchemy_url(URL)  # what Optuna/SQLAlchemy get (psycopg2 driver)


@pytest.fixture
def pg_study():
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test", connect_timeout=2).close()
    except psycopg2.OperationalError as exc:
        pytest.skip(f"local PostgreSQL does not answer: {exc}")
    name = f"pytest-{uuid.uuid4().hex[:10]}"
    yield name
    try:
        optuna.delete_study(study_name=name, storage=DRIVER_URL)
    except KeyError:
        pass


def recording_sinks(spec, run_dir, wandb):
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "wandb_trial.json").write_text(json.dumps(wandb.config, default=str))
    return []


@pytest.mark.slow
def test_two_workers_share_one_postgres_study_and_never_show_the_password(pg_study, tmp_path, capfd):
    (tmp_path / "base.yaml").write_text(support.TINY_SPEC)
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(
        f"base: base.yaml\nstudy: {pg_study}\nn_trials: 6\nsampler: {{type: random, seed: 1}}\n"
        "pruner: {type: none}\nspace:\n  sparse.density: {type: float, low: 0.1, high: 0.8}\n"
    )
    code = run_sweep(sweep_file, workers=2, storage=URL, data_dir=None, cache_dir=tmp_path / "cache",
                     run_root=tmp_path / "runs", wandb_mode="disabled", quiet=False, cores=2,
                     run_fn=functools.partial(support.fake_run, epoch_s=0.05), spec_loader=load_trial_spec,
                     sinks_fn=recording_sinks, corpus_fn=support.fake_corpus)
    assert code == 0
    study = optuna.load_study(study_name=pg_study, storage=DRIVER_URL)
    trials = study.get_trials()
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both processes took trials
    assert not (tmp_path / "runs" / "sweeps").exists()  # no journal when the storage is PostgreSQL

    status = sweep_status(URL, pg_study, run_root=tmp_path / "runs")
    text = format_status(status)
    assert "optuna-dashboard 'postgresql://postgres:***@127.0.0.1:5432/test'" in text
    assert status["counts"]["complete"] == 6

    captured = capfd.readouterr()
    assert PASSWORD not in captured.out + captured.err + text
    assert "postgres:***@" in captured.err  # the storage is named, redacted
    for path in (tmp_path / "runs").rglob("*"):
        if path.is_file():
            assert PASSWORD not in path.read_text(errors="ignore"), path
    configs = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("wandb_trial.json")]
    assert len(configs) == 6
    assert all(c["sweep"]["storage"] == "postgresql://postgres:***@127.0.0.1:5432/test" for c in configs)
    assert sorted(c["sweep"]["trial"] for c in configs) == list(range(6))


def test_unreachable_postgres_exits_2_with_redacted_message(tmp_path, capsys):
    (tmp_path / "base.yaml").write_text(support.TINY_SPEC)
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text("base: base.yaml\nstudy: x\nn_trials: 1\nspace:\n"
                          "  sparse.density: {type: float, low: 0.1, high: 0.8}\n")
    url = "postgresql://postgres:hunter2secret@127.0.0.1:1/test?connect_timeout=2"
    code = run_sweep(sweep_file, storage=url, data_dir=None, cache_dir=tmp_path, run_root=tmp_path / "runs",
                     spec_loader=load_trial_spec, run_fn=support.fake_run, sinks_fn=support.no_sinks,
                     corpus_fn=support.fake_corpus)
    assert code == 2
    err = capsys.readouterr().err
    assert "hunter2secret" not in err and "cannot open storage postgresql://postgres:***@127.0.0.1:1/test" in err
