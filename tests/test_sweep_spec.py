"""Sweep spec validation, redaction of storage URLs, the CLI's exit code 2 on bad input."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from selfish.sweep.cli import register_cli
from selfish.sweep.experiment_glue import load_trial_spec
from selfish.sweep.run import validate_sweep
from selfish.sweep.spec import SweepSpecError, grid_size, load_sweep, order_space
from selfish.sweep.storage import StorageError, redact_url, resolve_storage, scrub

try:  # tests/ may or may not be a package
    from tests import test_sweep_support as support
except ImportError:
    import test_sweep_support as support

TINY_SPEC = support.TINY_SPEC

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
base: base.yaml
study: s1
n_trials: 4
space:
  sparse.density: {type: float, low: 0.1, high: 0.8}
  sparse.decay: {type: categorical, choices: [cosine, linear, constant]}
  sparse.death_rate: {type: float, low: 0.1, high: 0.9, condition: {sparse.decay: cosine}}
"""


def write(tmp_path: Path, text: str, name: str = "sweep.yaml") -> Path:
    (tmp_path / "base.yaml").write_text(TINY_SPEC)
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(SweepSpecError) as info:
        validate_sweep(write(tmp_path, text), load_trial_spec)
    return str(info.value)


def test_good_sweep_loads_with_defaults_and_dependency_order(tmp_path):
    sweep = validate_sweep(write(tmp_path, GOOD), load_trial_spec)
    assert sweep.base == tmp_path / "base.yaml"
    assert sweep.resolved_pruner.type == "median"
    assert sweep.objective.resolved_directions == ["minimize"]
    order = order_space(sweep.space)
    assert order.index("sparse.decay") < order.index("sparse.death_rate")


@pytest.mark.parametrize(
    ("edit", "key", "hint"),
    [
        ("n_trial: 3\n", "n_trial", "unknown key (allowed: base, study, storage, n_trials"),
        ("sampler: {type: bayes}\n", "sampler.type", "'tpe', 'random', 'cmaes', 'gp' or 'grid'"),
        ("pruner: {type: median, warmup: 2}\n", "pruner.warmup", "unknown key (allowed: type, n_startup_trials"),
        ("objective: {metrics: [val_ppl, density]}\npruner: {type: median}\n", "(top level)",
         "Optuna cannot prune multi-objective studies"),
        ("objective: {metrics: [density]}\n", "objective", "metrics must start with val_ppl"),
        ("timeout: -5\n", "timeout", "greater than 0"),
    ],
)
def test_bad_structure_names_file_key_and_what_is_allowed(tmp_path, edit, key, hint):
    message = error_of(tmp_path, GOOD.replace("n_trials: 4\n", "n_trials: 4\n" + edit))
    assert str(tmp_path / "sweep.yaml") in message
    assert f": {key}:" in message
    assert hint in message


@pytest.mark.parametrize(
    ("param", "key", "hint"),
    [
        ("{type: float, low: 0, high: 0.5, log: true}", "space[sparse.density]", "log: true needs low > 0"),
        ("{type: float, low: 0.9, high: 0.1}", "space[sparse.density]", "low <= high"),
        ("{type: categorical, choices: []}", "space[sparse.density]", "non-empty 'choices'"),
        ("{type: int, low: 1, high: 5, choices: [1]}", "space[sparse.density]", "only for type: categorical"),
        ("{type: float, low: 0.1, high: 0.5, lo: 1}", "space[sparse.density].lo", "unknown key"),
    ],
)
def test_bad_parameter_is_named_by_its_key_path(tmp_path, param, key, hint):
    text = GOOD.replace("{type: float, low: 0.1, high: 0.8}", param)
    message = error_of(tmp_path, text)
    assert f"{key}" in message and hint in message


def test_key_path_missing_from_experiment_spec_is_rejected_with_the_spec_message(tmp_path):
    message = error_of(tmp_path, GOOD.replace("sparse.density:", "sparse.densty:"))
    assert str(tmp_path / "sweep.yaml") in message
    assert "space[sparse.densty]" in message
    assert "unknown key" in message and "density" in message  # the experiment spec lists allowed keys


def test_value_the_experiment_spec_rejects_is_reported(tmp_path):
    message = error_of(tmp_path, GOOD.replace("low: 0.1, high: 0.8}", "low: 0.1, high: 1.5}"))
    assert "space[sparse.density]" in message and "sparse.density=1.5" in message


def test_condition_cycle_and_multi_objective_pruner(tmp_path):
    cyc = GOOD.replace("{type: categorical, choices: [cosine, linear, constant]}",
                       "{type: categorical, choices: [cosine, linear], condition: {sparse.death_rate: 0.5}}")
    assert "cycle" in error_of(tmp_path, cyc)


def test_grid_needs_values_for_float_keys_and_counts_points(tmp_path):
    text = GOOD + "sampler: {type: grid}\n"
    assert "sampler.grid[sparse.density]: a float key needs explicit grid values" in error_of(tmp_path, text)
    ok = GOOD + "sampler: {type: grid, grid: {sparse.density: [0.2, 0.4], sparse.death_rate: [0.5]}}\n"
    sweep = load_sweep(write(tmp_path, ok))
    assert grid_size(sweep) == 2 * 3 * 1


def test_missing_base_and_bad_yaml(tmp_path):
    assert "does not exist" in error_of(tmp_path, GOOD.replace("base: base.yaml", "base: nope.yaml"))
    assert "not valid YAML" in error_of(tmp_path, "base: [unclosed\n")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://alice:s3cr3t@db.example:5432/optuna", "postgresql://alice:***@db.example:5432/optuna"),
        ("postgresql+psycopg2://bob:p%40ss@host/db", "postgresql+psycopg2://bob:***@host/db"),
        ("postgresql://host/db?user=u&password=hunter2", "postgresql://host/db?user=u&password=***"),
        ("postgresql://postgres@127.0.0.1/test", "postgresql://postgres@127.0.0.1/test"),
        ("runs/sweeps/x/journal.log", "runs/sweeps/x/journal.log"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_scrub_removes_password_anywhere_in_a_message():
    url = "postgresql://alice:s3cr3t@db/optuna"
    text = f"could not connect to {url}: password=s3cr3t rejected (s3cr3t)"
    out = scrub(text, url)
    assert "s3cr3t" not in out and "alice:***@db" in out


def test_storage_resolution(tmp_path):
    assert resolve_storage(None, run_root=tmp_path, study="s").journal_path == tmp_path / "sweeps" / "s" / "journal.log"
    assert resolve_storage("postgresql://u:p@h/db", run_root=tmp_path, study="s").url == "postgresql://u:p@h/db"
    with pytest.raises(StorageError) as info:
        resolve_storage("mongodb://u:secret@h/db", run_root=tmp_path, study="s")
    assert "secret" not in str(info.value) and "unknown scheme" in str(info.value)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="selfish")
    register_cli(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_bad_sweep_spec_exits_2_naming_file_and_key(tmp_path, capsys):
    path = write(tmp_path, GOOD.replace("n_trials: 4", "n_trials: 0"))
    args = parse(["sweep", str(path), "--runs", str(tmp_path / "runs")])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "n_trials" in err and "greater than or equal to 1" in err


def test_cli_bad_storage_url_exits_2_without_password(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    args = parse(["sweep", str(path), "--storage", "oracle://me:topsecret@h/db", "--runs", str(tmp_path / "runs")])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "topsecret" not in err and "oracle://me:***@h/db" in err


def test_cli_status_of_missing_study_exits_2(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    args = parse(["sweep-status", str(path), "--runs", str(tmp_path / "runs")])
    assert args.func(args) == 2
    assert "run `sweep` first" in capsys.readouterr().err


SHIPPED = sorted((REPO / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_sweeps_are_valid_against_their_base(path):
    sweep = load_sweep(path)
    if not sweep.base.is_file():
        pytest.skip(f"base spec {sweep.base} not written yet")
    validate_sweep(path, load_trial_spec)
