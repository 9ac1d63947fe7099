"""analysis/: loaders, tables and the HTML report, built from synthetic run folders (no training)."""

from __future__ import annotations

import base64
import csv
import json
import math
import re
from pathlib import Path

import matplotlib.image as mpimg
import optuna
import pytest
from optuna.storages.journal import JournalFileBackend

from analysis import (
    AnalysisError,
    build_report,
    epoch_rows,
    gate_rows,
    live_dashboard_command,
    load_runs,
    load_study,
    load_wandb_runs,
    mask_url,
    report_main,
    summary_rows,
    update_rows,
)
from analysis.__main__ import main as analysis_cli
from analysis.plots import pareto_front
from analysis.report import find_sweep_storages, fmt_count, fmt_ppl
from analysis.synthetic import write_demo, write_run, write_study

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Five synthetic runs (dense, sparse 0.33 and 0.10, failed, in progress with a torn tail), a study
    with 8 trials in a journal file (the sweeps' default storage) whose 6 completed trials have run
    folders, and the report built from them."""
    root = tmp_path_factory.mktemp("analysis")
    journal = root / "runs" / "sweeps" / "lstm_density" / "journal.log"
    journal.parent.mkdir(parents=True)
    written = write_demo(root / "runs", optuna.storages.JournalStorage(JournalFileBackend(str(journal))),
                         trial_runs=True)
    runs = load_runs([root / "runs"])
    study = load_study(journal)
    html_path = build_report(runs, root / "report", study=study)
    html = html_path.read_text(encoding="utf-8")
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    embedded = json.loads(match.group(1))
    return {"root": root, "written": written, "runs": runs, "study": study, "html_path": html_path,
            "html": html, "data": embedded, "out": html_path.parent}


def _by_key(demo, trials: bool = True):
    return {f"{w['summary']['name'] if w['summary'] else w['dir'].parent.name}/{w['dir'].name}": w
            for k, w in demo["written"].items() if k != "trials" and (trials or not k.startswith("trial"))}


# ------------------------------------------------------------------------------------------- loaders


def test_load_runs_finds_every_run_and_skips_the_torn_last_line(demo):
    runs = {r.key: r for r in demo["runs"]}
    written = _by_key(demo)
    assert set(runs) == set(written)
    running = runs["cpu_lstm_d050/r005"]
    assert any("torn last line" in w for w in running.warnings)
    assert running.records == written["cpu_lstm_d050/r005"]["records"]
    assert running.status == "running"  # no summary.json, no end record
    vals = [r["val_ppl"] for r in written["cpu_lstm_d050/r005"]["records"] if r["type"] == "epoch"]
    assert running.summary["best_val_ppl"] == min(vals)
    assert running.summary.get("test_ppl") is None


def test_load_runs_accepts_globs_and_run_folders_without_duplicates(demo):
    root = demo["root"] / "runs"
    by_glob = load_runs([str(root / "**"), str(root / "cpu_lstm" / "r002")])
    assert sorted(r.key for r in by_glob) == sorted(r.key for r in demo["runs"])


def test_summary_rows_equal_summary_json(demo):
    rows = {r["run"]: r for r in summary_rows(demo["runs"])}
    for key, w in _by_key(demo).items():
        if w["summary"] is None:
            continue
        s, row = w["summary"], rows[key]
        assert row["best_val_ppl"] == s["best_val_ppl"]
        assert row["test_ppl"] == s["test_ppl"]
        assert row["params_dense"] == s["params_dense"] and row["params_nonzero"] == s["params_nonzero"]
        assert row["train_flops"] == s["flops"]["train_total"]
        assert row["wall_time_s"] == s["wall_time_s"] and row["status"] == s["status"]
        assert row["wandb_url"] == s["wandb"]["url"]
    assert rows["cpu_lstm_dense/r001"]["kind"] == "dense" and rows["cpu_lstm/r002"]["kind"] == "sparse"
    assert rows["cpu_lstm/r002"]["family"] == "lstm / ptb"
    assert rows["cpu_lstm_d005/r004"]["reason"] == "RuntimeError: out of memory"


def test_epoch_gate_and_update_rows_equal_the_records(demo):
    written = _by_key(demo)
    epochs, gates, updates = epoch_rows(demo["runs"]), gate_rows(demo["runs"]), update_rows(demo["runs"])
    for key, w in written.items():
        records = [r for r in w["records"] if r["type"] == "epoch"]
        mine = [e for e in epochs if e["run"] == key]
        assert [e["val_ppl"] for e in mine] == [r["val_ppl"] for r in records]
        assert [e["train_ppl"] for e in mine] == [r["train_ppl"] for r in records]
        expected_gates = [(r["epoch"], t, g, s["nonzero_after"] / s["numel"], s["removed"], s["regrown"])
                          for r in records if r["mask"] for t, per in r["mask"]["gates"].items()
                          for g, s in per.items()]
        got = [(g["epoch"], g["tensor"], g["gate"], g["density"], g["removed"], g["regrown"])
               for g in gates if g["run"] == key]
        assert sorted(got) == pytest.approx(sorted(expected_gates)) if expected_gates else got == []
        totals = [(u["epoch"], u["removed"], u["regrown"], u["turnover"]) for u in updates
                  if u["run"] == key and u["tensor"] == "(total)"]
        assert totals == [(r["epoch"], r["mask"]["total"]["removed"], r["mask"]["total"]["regrown"],
                           r["mask"]["total"]["turnover"]) for r in records if r["mask"]]
    assert not [g for g in gates if g["run"] == "cpu_lstm_dense/r001"]  # dense: no mask stats
    # 4 recurrent tensors x 4 gates x 8 epochs for the completed sparse run
    assert len([g for g in gates if g["run"] == "cpu_lstm/r002"]) == 4 * 4 * 8


def test_mask_url_hides_passwords():
    assert mask_url("postgresql://alice:s3cret@db.host:5432/optuna") == "postgresql://alice:***@db.host:5432/optuna"
    assert mask_url("postgresql+psycopg2://bob:p@ss@host/db") == "postgresql+psycopg2://bob:***@host/db"
    assert mask_url("sqlite:///runs/sweep.db") == "sqlite:///runs/sweep.db"
    assert "s3cret" not in mask_url("cannot connect to postgresql://alice:s3cret@h/db: refused")


def test_load_study_reads_trials_params_and_importances(demo):
    study = demo["study"]
    trials = {t["number"]: t for t in study.trials}
    written = demo["written"]["trials"]
    assert len(trials) == len(written) == 8
    for number, spec in enumerate(written):
        t = trials[number]
        assert t["state"] == spec["state"]
        assert t["params"] == pytest.approx(spec["params"])
        assert t["density"] == spec["user_attrs"]["density"]
        assert t["value"] == (spec["value"] if spec["state"] == "complete" else None)
    assert set(study.importances) == {"sparse.density", "sparse.death_rate"}
    assert math.fsum(study.importances.values()) == pytest.approx(1.0)
    assert study.directions == ["minimize"]


def test_load_study_journal_file_and_clear_errors(tmp_path):
    journal = tmp_path / "sweeps" / "s" / "journal.log"
    journal.parent.mkdir(parents=True)
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    write_study(storage, "one", [{"params": {"a": 0.1}, "value": 3.0}])
    write_study(storage, "two", [{"params": {"a": 0.2}, "value": 4.0}])
    assert load_study(journal, "two").trials[0]["value"] == 4.0
    with pytest.raises(AnalysisError, match="2 studies"):
        load_study(journal)
    with pytest.raises(AnalysisError, match="no study 'three'"):
        load_study(journal, "three")
    with pytest.raises(AnalysisError, match="not found"):
        load_study(tmp_path / "missing.log")
    with pytest.raises(AnalysisError) as err:
        load_study("postgresql://alice:s3cret@127.0.0.1:1/optuna")
    assert "s3cret" not in str(err.value) and "alice:***@" in str(err.value)
    assert find_sweep_storages([tmp_path]) == [journal.resolve()]


class _FakeApiRun:
    """Shaped like a W&B public-API run logged by selfish.tracking.wandb_sink."""

    def __init__(self, number: int) -> None:
        self.id, self.name, self.project, self.group, self.state = f"w{number}", f"run{number}", "p", "g", "finished"
        self.path = ["ent", "p", self.id]
        self.url = f"https://wandb.ai/ent/p/runs/{self.id}"
        self.config = {"name": "wb_lstm", "model": {"type": "lstm"}, "data": {"corpus": "ptb"},
                       "sparse": {"enabled": True, "density": 0.33}}
        self.summary = {"test/ppl": 101.5, "val/ppl": {"min": 104.0}, "params_dense": 100, "_step": 9,
                        "flops/train_total": 5e9, "status": "completed"}

    def scan_history(self):
        return [{"_step": 3, "step": 3, "train/loss": 5.0},
                {"_step": 4, "epoch": 1, "val/ppl": 120.0, "epoch/train_ppl": 150.0, "mask/removed": 40,
                 "mask/regrown": 38, "mask/turnover": 0.2, "mask/exploration_rate": 0.5,
                 "density/rnn.weight_hh_l0": 0.33, "density/rnn.weight_hh_l0/i": 0.31,
                 "removed/rnn.weight_hh_l0/i": 7, "density/total": 0.33},
                {"_step": 8, "epoch": 2, "val/ppl": 104.0}]


class _FakeApi:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def runs(self, path, filters=None):
        if self.fail:
            raise ConnectionError("Max retries exceeded with url: /graphql")
        assert path == "ent/p" and filters == {"config.name": "wb_lstm"}
        return [_FakeApiRun(1)]


def test_load_wandb_runs_gives_the_same_rows_and_one_clear_offline_message():
    runs = load_wandb_runs("p", "ent", {"config.name": "wb_lstm"}, api=_FakeApi())
    (row,) = summary_rows(runs)
    assert set(row) == set(summary_rows(load_runs([]) + runs)[0])
    assert row["best_val_ppl"] == 104.0 and row["test_ppl"] == 101.5 and row["family"] == "lstm / ptb"
    assert row["wandb_url"] == "https://wandb.ai/ent/p/runs/w1" and row["kind"] == "sparse"
    assert row["train_flops"] == 5e9 and row["status"] == "completed"
    epochs = epoch_rows(runs)
    assert [e["val_ppl"] for e in epochs] == [120.0, 104.0] and epochs[0]["train_ppl"] == 150.0
    assert (epochs[0]["removed"], epochs[0]["regrown"], epochs[0]["turnover"]) == (40, 38, 0.2)
    assert epochs[0]["exploration_rate"] == 0.5
    (gate,) = gate_rows(runs)
    assert (gate["tensor"], gate["gate"], gate["density"], gate["removed"]) == ("rnn.weight_hh_l0", "i", 0.31, 7)
    with pytest.raises(AnalysisError, match="offline or not logged in") as err:
        load_wandb_runs("p", "ent", api=_FakeApi(fail=True))
    assert "\n" not in str(err.value)


# -------------------------------------------------------------------------------------------- report


def test_results_csv_holds_the_input_numbers(demo):
    with (demo["out"] / "results.csv").open(encoding="utf-8") as handle:
        rows = {f"{r['experiment']}/{r['run_id']}": r for r in csv.DictReader(handle)}
    for key, w in _by_key(demo).items():
        s = w["summary"]
        if s is None:
            assert rows[key]["status"] == "running" and rows[key]["test_ppl"] == ""
            continue
        assert float(rows[key]["best_val_ppl"]) == s["best_val_ppl"]
        assert (float(rows[key]["test_ppl"]) if rows[key]["test_ppl"] else None) == s["test_ppl"]
        assert int(rows[key]["params_nonzero"]) == s["params_nonzero"]
        assert float(rows[key]["train_flops"]) == s["flops"]["train_total"]
        assert float(rows[key]["wall_time_s"]) == s["wall_time_s"]
        assert float(rows[key]["density"]) == s["density"]


def test_results_md_and_html_table_show_the_input_numbers(demo):
    md = (demo["out"] / "results.md").read_text(encoding="utf-8")
    lines = {line.split(" | ")[0].lstrip("| ") + "/" + line.split(" | ")[1]: line
             for line in md.splitlines() if line.startswith("| cpu_")}
    for key, w in _by_key(demo).items():
        if w["summary"] is None:
            continue
        s = w["summary"]
        line = lines[key]
        assert f" {s['best_val_ppl']:.2f} " in line
        assert f" {fmt_ppl(s['test_ppl'])} " in line
        assert f" {s['params_dense']:,} / {s['params_nonzero']:,} " in line
        row_html = re.search(rf'<tr data-run="{re.escape(key)}">(.*?)</tr>', demo["html"]).group(1)
        assert f">{s['best_val_ppl']:.2f}<" in row_html
        assert f">{fmt_count(s['params_dense'])} / {fmt_count(s['params_nonzero'])}<" in row_html
    dense_val = demo["written"]["dense"]["summary"]["best_val_ppl"]
    sparse_val = demo["written"]["sparse33"]["summary"]["best_val_ppl"]
    assert f"{100 * (sparse_val / dense_val - 1):+.1f}%" in lines["cpu_lstm/r002"]
    assert "[run](https://wandb.ai/demo/selfish-rnn/runs/r001)" in lines["cpu_lstm_dense/r001"]
    assert "| Selfish stacked LSTM | ptb | 0.330 | 73.79 | 71.65 |" in md


def test_embedded_data_equals_the_inputs(demo):
    data = demo["data"]
    runs = {r["run"]: r for r in data["runs"]}
    for key, w in _by_key(demo).items():
        records = [r for r in w["records"] if r["type"] == "epoch"]
        assert [e["val_ppl"] for e in data["epochs"] if e["run"] == key] == [r["val_ppl"] for r in records]
        if w["summary"]:
            assert runs[key]["test_ppl"] == w["summary"]["test_ppl"]
            assert runs[key]["best_val_ppl"] == w["summary"]["best_val_ppl"]
    r002 = [r for r in demo["written"]["sparse33"]["records"] if r["type"] == "epoch"]
    embedded = {(g["epoch"], g["tensor"], g["gate"]): g["nonzero_after"] for g in data["gates"]
                if g["run"] == "cpu_lstm/r002"}
    assert embedded == {(r["epoch"], t, g): s["nonzero_after"] for r in r002
                        for t, per in r["mask"]["gates"].items() for g, s in per.items()}
    (study,) = data["studies"]
    assert [t["value"] for t in study["trials"]] == [t["value"] for t in demo["study"].trials]
    assert [p["val_ppl"] for p in data["paper"]] == [73.79, 62.10, 58.17, 57.67, 65.96]


def test_html_is_self_contained(demo):
    html = demo["html"]
    wandb_url = demo["written"]["dense"]["summary"]["wandb"]["url"]
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html)
    assert refs
    external = [r for r in refs if re.match(r"(?i)\s*(https?:)?//", r)]
    assert external == [wandb_url]
    assert "<link" not in html and "@import" not in html and "url(" not in html
    assert not re.search(r"<script[^>]+src=", html)
    assert demo["study"].storage in html


def test_pngs_exist_are_images_and_are_the_embedded_plots(demo):
    out = demo["out"]
    pngs = sorted(out.glob("*.png"))
    names = {p.name for p in pngs}
    assert {"curves_lstm_ptb.png", "pareto.png", "mask_lstm_ptb.png", "sweep_lstm_density.png",
            "gates_cpu_lstm_r002.png", "gates_cpu_lstm_d010_r003.png"} <= names
    images = re.findall(r'<img class="plot" src="data:image/png;base64,([^"]+)"[^>]*data-file="([^"]+)"',
                        demo["html"])
    assert sorted(f for _, f in images) == sorted(names)
    for b64, name in images:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and base64.b64decode(b64) == data
        pixels = mpimg.imread(out / name)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels.std() > 0.01


def test_report_handles_missing_pieces(tmp_path):
    write_run(tmp_path / "runs", "only_dense", "a", density=None, n_epochs=3, seed=1)
    failed = tmp_path / "runs" / "crashed" / "b"
    failed.mkdir(parents=True)
    (failed / "metrics.jsonl").write_text('{"type": "start", "step": 0, "epoch": 0, "params_dense": 10}\n'
                                          '{"type": "end", "step": 0, "epoch": 0, "status": "failed", '
                                          '"reason": "boom"}\n', encoding="utf-8")
    runs = load_runs([tmp_path / "runs"])
    assert {r.key: r.status for r in runs} == {"only_dense/a": "completed", "crashed/b": "failed"}
    path = build_report(runs, tmp_path / "out", paper_reference=False)
    html = path.read_text(encoding="utf-8")
    assert "No sparse runs with mask statistics" in html and "boom" in html
    assert "Paper reference" not in html
    assert (tmp_path / "out" / "results.csv").read_text(encoding="utf-8").count("\n") == 3


def test_report_main_and_cli(tmp_path, demo, capsys):
    assert report_main([str(tmp_path / "nothing")], None, None, tmp_path / "o1") == 2
    assert "no run folders" in capsys.readouterr().err
    assert report_main([str(demo["root"] / "runs")], "postgresql://u:pw@127.0.0.1:1/x", None, tmp_path / "o2") == 2
    err = capsys.readouterr().err
    assert "pw@" not in err and "u:***@" in err
    # no --sweep: the sweep storage under the given folder is found and shown
    write_run(tmp_path / "small" / "runs", "tiny", "t1", density=0.5, n_epochs=2)
    write_study(f"sqlite:///{tmp_path / 'small' / 'found.db'}", "found_study",
                [{"params": {"sparse.density": 0.5}, "value": 150.0, "user_attrs": {"density": 0.5}}])
    assert analysis_cli(["--out", str(tmp_path / "o3"), str(tmp_path / "small")]) == 0
    assert "(1 runs, 1 sweep trials)" in capsys.readouterr().out
    assert "Sweep: found_study" in (tmp_path / "o3" / "report.html").read_text(encoding="utf-8")


def test_live_dashboard_command(tmp_path):
    url = "postgresql://u:pw@db/optuna"
    command = live_dashboard_command(url)
    assert Path(command[0]).name == "optuna-dashboard" and command[1] == url
    assert command[-4:] == ["--host", "127.0.0.1", "--port", "8080"]
    sqlite_file = tmp_path / "sweep.db"
    sqlite_file.write_bytes(b"SQLite format 3\x00" + bytes(100))
    sqlite_cmd = live_dashboard_command(str(sqlite_file), port=9000)
    assert sqlite_cmd[1] == f"sqlite:///{sqlite_file.resolve()}" and sqlite_cmd[-1] == "9000"
    journal = tmp_path / "journal.log"
    journal.write_text("", encoding="utf-8")
    assert "JournalFileStorage" in live_dashboard_command(str(journal))


def test_pareto_front_keeps_only_non_dominated_points():
    points = [(0.1, 170.0), (0.33, 146.0), (0.2, 180.0), (1.0, 139.0), (0.5, 150.0)]
    assert pareto_front(points) == [(0.1, 170.0), (0.33, 146.0), (1.0, 139.0)]


def test_runner_commands_report_from_a_sweep_file(tmp_path, capsys):
    import argparse

    from analysis.cli import register_commands
    from selfish.sweep.spec import load_sweep

    sweep_file = Path(__file__).resolve().parents[1] / "sweeps" / "cpu_density.yaml"
    if not sweep_file.exists():
        pytest.skip("sweeps/cpu_density.yaml not shipped")
    study_name = load_sweep(sweep_file).study
    journal = tmp_path / "runs" / "sweeps" / study_name / "journal.log"
    journal.parent.mkdir(parents=True)
    write_study(optuna.storages.JournalStorage(JournalFileBackend(str(journal))), study_name,
                [{"params": {"sparse.density": 0.3}, "value": 140.0, "user_attrs": {"density": 0.3}},
                 {"params": {"sparse.density": 0.6}, "value": 130.0, "user_attrs": {"density": 0.6}}])
    write_run(tmp_path / "runs", "tiny", "t1", density=0.3, n_epochs=2)
    parser = argparse.ArgumentParser()
    register_commands(parser.add_subparsers())
    args = parser.parse_args(["report", str(tmp_path / "runs"), "--sweep", str(sweep_file),
                              "--run-root", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    assert args.func(args) == 0
    assert "(1 runs, 2 sweep trials)" in capsys.readouterr().out
    data = (tmp_path / "out" / "report.json").read_text(encoding="utf-8")
    assert [t["value"] for t in json.loads(data)["studies"][0]["trials"]] == [140.0, 130.0]
    bad = parser.parse_args(["report", "--sweep", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")])
    assert bad.func(bad) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_sweep_trial_runs_are_grouped_with_their_study(demo):
    rows = {r["run"]: r for r in demo["data"]["runs"]}
    trial_keys = set(_by_key(demo)) - set(_by_key(demo, trials=False))
    assert len(trial_keys) == 6
    assert {rows[k]["sweep"] for k in trial_keys} == {"lstm_density"}
    assert {r["sweep"] for k, r in rows.items() if k not in trial_keys} == {None}
    html = demo["html"]
    assert "<summary>6 sweep-trial runs</summary>" in html
    assert all(f'<tr data-run="{k}">' in html.split('id="trial-results"')[1] for k in trial_keys)
    assert not list(demo["out"].glob("gates_cpu_lstm_sweep*.png"))  # no heatmap per trial run
    # the study's trial values are the trial runs' best validation perplexities (linked by run_dir)
    by_dir = {str(Path(r["source"]).resolve()): r["best_val_ppl"] for r in rows.values()}
    linked = [t for t in demo["study"].trials if t["user_attrs"].get("run_dir")]
    assert len(linked) == 6
    assert all(by_dir[str(Path(t["user_attrs"]["run_dir"]).resolve())] == t["value"] for t in linked)
