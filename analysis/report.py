"""The report: one self-contained `report.html` (plots as base64 PNG data URIs, the tables as embedded
JSON, no external resources), the PNGs, `results.md` and `results.csv`."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import glob
import html
import json
import math
import re
import shutil
import sqlite3
import sys
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from . import plots
from .load import (
    AnalysisError,
    Run,
    StudyData,
    epoch_rows,
    gate_rows,
    load_runs,
    load_study,
    load_wandb_runs,
    mask_url,
    summary_rows,
    test_rows,
    update_rows,
)
from .paper import PAPER_RESULTS, canonical_family

CSV_COLUMNS = ("experiment", "run_id", "family", "kind", "status", "density", "params_dense", "params_nonzero",
               "best_val_ppl", "test_ppl", "best_epoch", "epochs_done", "train_flops", "wall_time_s",
               "wandb_url", "reason", "sweep", "source")
MAX_GATE_FIGURES = 16


# ------------------------------------------------------------------------------------------ formatting


def fmt_ppl(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) and math.isfinite(value) else "–"


def fmt_density(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and math.isfinite(value) else "–"


def fmt_count(value: Any) -> str:
    """Integer with thousands separators, or `–`."""
    return f"{int(value):,}" if isinstance(value, (int, float)) and math.isfinite(value) else "–"


def fmt_flops(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) and math.isfinite(value) else "–"


def fmt_duration(seconds: Any) -> str:
    """`1h 02m`, `3m 05s`, `12.3s`, or `–`."""
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "–"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "x"


FINISHED = ("completed", "stopped")


def dense_references(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """family -> best validation perplexity of its finished dense runs."""
    refs: dict[str, float] = {}
    for row in rows:
        if row["kind"] == "dense" and row["status"] in FINISHED and row["best_val_ppl"] is not None:
            refs[row["family"]] = min(refs.get(row["family"], math.inf), row["best_val_ppl"])
    return refs


def fmt_gap(row: Mapping[str, Any], refs: Mapping[str, float]) -> str:
    """Relative validation-perplexity gap to the family's dense run: `+4.6%`, or `–`."""
    ref = refs.get(row["family"])
    if ref is None or row["best_val_ppl"] is None or row["kind"] == "dense" or row["status"] not in FINISHED:
        return "–"
    return f"{100.0 * (row['best_val_ppl'] / ref - 1.0):+.1f}%"


def table_cells(row: Mapping[str, Any], refs: Mapping[str, float]) -> list[str]:
    """The displayed cells of one results-table row (Markdown and HTML show the same text)."""
    params = f"{fmt_count(row['params_dense'])} / {fmt_count(row['params_nonzero'])}"
    return [row["experiment"], row["run_id"], row["kind"], row["status"], fmt_density(row["density"]), params,
            fmt_ppl(row["best_val_ppl"]), fmt_gap(row, refs), fmt_ppl(row["test_ppl"]),
            str(row["best_epoch"]) if row["best_epoch"] is not None else "–",
            fmt_flops(row["train_flops"]), fmt_duration(row["wall_time_s"])]


TABLE_HEADER = ("experiment", "run", "kind", "status", "density", "params dense / nonzero", "val ppl",
                "val vs dense", "test ppl", "best epoch", "train FLOPs", "wall time")


def _sorted_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(rows, key=lambda r: (r["family"], r["kind"] != "dense",
                                       r["density"] if r["density"] is not None else 2.0, r["run"]))


def write_markdown(rows: Sequence[Mapping[str, Any]], path: Path, paper_rows: Sequence[Mapping[str, Any]]) -> None:
    """`results.md`: one table per family, and the paper's numbers."""
    lines = ["# Results", ""]
    refs = dense_references(rows)
    by_family: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in _sorted_rows(rows):
        by_family[row["family"]].append(row)
    for family, family_rows in by_family.items():
        lines += [f"## {family}", "", "| " + " | ".join(TABLE_HEADER + ("W&B",)) + " |",
                  "|" + "---|" * (len(TABLE_HEADER) + 1)]
        for row in family_rows:
            link = f"[run]({row['wandb_url']})" if row["wandb_url"] else ""
            cells = [c.replace("|", "\\|") for c in table_cells(row, refs)] + [link]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if paper_rows:
        lines += ["## Paper (full scale, Selfish-RNN README, ICML 2021)", "",
                  "| model | corpus | density | val ppl | test ppl |", "|---|---|---|---|---|"]
        for ref in paper_rows:
            lines.append(f"| {ref['label']} | {ref['corpus']} | {fmt_density(ref['density'])} | "
                         f"{fmt_ppl(ref['val_ppl'])} | {fmt_ppl(ref['test_ppl'])} |")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """`results.csv`: raw numbers (full precision, empty when unknown), one row per run."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in _sorted_rows(rows):
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in CSV_COLUMNS})


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def embed_json(data: Any) -> str:
    """JSON that is safe inside a `<script type="application/json">` element."""
    text = json.dumps(_json_safe(data), separators=(",", ":"), default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# ------------------------------------------------------------------------------------------------ report


def _points(summary: Sequence[Mapping[str, Any]], studies: Sequence[StudyData],
            runs_by_source: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pareto points of runs and sweep trials (trial parameters/FLOPs from its run folder when loaded)."""
    points = [{"run": r["run"], "family": r["family"], "kind": "trial" if r.get("sweep") else r["kind"],
               "label": r["experiment"],
               "density": r["density"], "params_nonzero": r["params_nonzero"], "train_flops": r["train_flops"],
               "val_ppl": r["best_val_ppl"]} for r in summary]
    for study in studies:
        for trial in study.trials:
            if trial["value"] is None:
                continue
            attrs = trial["user_attrs"]
            linked = None
            if attrs.get("run_dir"):
                linked = runs_by_source.get(str(Path(str(attrs["run_dir"])).resolve()))
            if linked is not None and any(p["run"] == linked["run"] for p in points):
                continue  # the trial's run folder is already a point of its own
            points.append({"run": f"{study.name} trial {trial['number']}", "family": linked["family"] if linked else "sweep",
                           "kind": "trial", "label": f"trial {trial['number']}", "density": trial["density"],
                           "params_nonzero": attrs.get("params_nonzero"),
                           "train_flops": attrs.get("train_flops"), "val_ppl": trial["value"]})
    return points


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int],
                raw_html: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for cells in rows:
        tds = []
        for i, cell in enumerate(cells):
            content = cell if i in raw_html else html.escape(cell)
            tds.append(f'<td class="num">{content}</td>' if i in numeric else f"<td>{content}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _results_table(rows: Sequence[Mapping[str, Any]], refs: Mapping[str, float], table_id: str) -> str:
    """The HTML results table, grouped by family (the same cells as results.md)."""
    body = []
    for family in sorted({r["family"] for r in rows}):
        body.append(f'<tr class="family"><td colspan="{len(TABLE_HEADER) + 1}">{html.escape(family)}</td></tr>')
        for row in _sorted_rows([r for r in rows if r["family"] == family]):
            cells = [html.escape(c) for c in table_cells(row, refs)]
            cells[2] = f'<span class="kind-{row["kind"]}">{cells[2]}</span>'
            cells[3] = _status_badge(row["status"])
            if row.get("reason") and row["status"] != "completed":
                cells[3] += f'<span class="reason">{html.escape(str(row["reason"]))}</span>'
            link = f'<a href="{html.escape(row["wandb_url"])}">W&amp;B</a>' if row["wandb_url"] else ""
            numeric = {4, 5, 6, 7, 8, 9, 10, 11}
            tds = "".join(f'<td class="num">{c}</td>' if i in numeric else
                          f'<td class="wrap">{c}</td>' if i == 3 else f"<td>{c}</td>"
                          for i, c in enumerate(cells + [link]))
            body.append(f'<tr data-run="{html.escape(row["run"])}">{tds}</tr>')
    head = "".join(f"<th>{html.escape(h)}</th>" for h in TABLE_HEADER + ("W&B",))
    return (f'<div class="card" style="overflow-x:auto"><table id="{table_id}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _status_badge(status: str) -> str:
    kind = {"completed": "ok", "running": "run", "stopped": "warn", "diverged": "bad", "failed": "bad"}.get(status,
                                                                                                            "warn")
    return f'<span class="badge {kind}">{html.escape(status)}</span>'


CSS = """
:root { --ink:#1d2430; --muted:#5b6573; --line:#dfe3ea; --bg:#f6f7f9; --card:#fff; --accent:#1f77b4; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color:var(--ink);
       background:var(--bg); }
header { background:#1d2430; color:#fff; padding:22px 36px 18px; }
header h1 { margin:0 0 4px; font-size:24px; }
header .sub { color:#c9d1dc; font-size:14px; }
header .facts { display:flex; flex-wrap:wrap; gap:10px 28px; margin-top:12px; font-size:14px; }
header .facts b { color:#fff; font-size:18px; margin-right:4px; }
nav { background:#fff; border-bottom:1px solid var(--line); padding:8px 36px; position:sticky; top:0; z-index:2; }
nav a { margin-right:18px; color:var(--accent); text-decoration:none; font-size:14px; }
main { padding:8px 36px 40px; max-width:1500px; }
section { margin-top:26px; }
h2 { font-size:19px; margin:0 0 10px; border-bottom:2px solid var(--line); padding-bottom:4px; }
h3 { font-size:16px; margin:18px 0 6px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:14px 16px; margin:10px 0; }
figure { margin:0; }
figure img { max-width:100%; height:auto; display:block; }
figcaption { color:var(--muted); font-size:13px; margin-top:6px; }
table { border-collapse:collapse; width:100%; font-size:13.5px; background:#fff; }
th, td { padding:5px 8px; border-bottom:1px solid var(--line); text-align:left; }
td { white-space:nowrap; } td.wrap { white-space:normal; min-width:160px; }
th { background:#eef1f5; font-weight:600; vertical-align:bottom; }
header code { background:rgba(255,255,255,.14); color:#fff; }
.reason { display:block; color:var(--muted); font-size:12px; white-space:normal; }
td.num { text-align:right; font-variant-numeric: tabular-nums; }
tr.family td { background:#f2f5f9; font-weight:600; color:#33415c; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; }
.badge.ok { background:#e3f4e8; color:#1b7a3a; } .badge.run { background:#e4eefb; color:#1f5fa8; }
.badge.warn { background:#fff3d6; color:#8a5a00; } .badge.bad { background:#fde4e4; color:#b42318; }
.kind-dense { color:#333; font-weight:600; } .kind-sparse { color:#1f77b4; font-weight:600; }
.note { color:var(--muted); font-size:13.5px; }
details { margin-top:8px; } summary { cursor:pointer; color:var(--muted); }
code { background:#eef1f5; padding:1px 4px; border-radius:3px; font-size:13px; }
"""

CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll("img.plot"));
  var ok = imgs.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
  var data = JSON.parse(document.getElementById("report-data").textContent);
  document.body.setAttribute("data-plots", ok + "/" + imgs.length);
  document.body.setAttribute("data-runs", String(data.runs.length));
  document.body.setAttribute("data-ready", "1");
});
"""


class _Figures:
    """Collects figures: writes each PNG and keeps its data URI for the HTML."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.written: list[Path] = []

    def add(self, fig: Any, name: str, caption: str, alt: str) -> str:
        path = self.out_dir / f"{name}.png"
        data = plots.save_png(fig, path)
        self.written.append(path)
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        return (f'<figure class="card"><img class="plot" src="{uri}" alt="{html.escape(alt)}" '
                f'data-file="{html.escape(path.name)}"><figcaption>{html.escape(caption)}</figcaption></figure>')


def build_report(runs: Sequence[Run], out_dir: Path | str, study: StudyData | Sequence[StudyData] | None = None,
                 paper_reference: bool = True, *, title: str = "selfish-rnn: sparse vs dense runs") -> Path:
    """Write `report.html`, the PNGs, `results.md`, `results.csv` (and `report.json`, the embedded data)
    into `out_dir`; return the HTML path. `study` may be one study or several."""
    studies: list[StudyData] = [] if study is None else [study] if isinstance(study, StudyData) else list(study)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summary_rows(runs)
    epochs = epoch_rows(runs)
    tests = test_rows(runs)
    gates = gate_rows(runs)
    updates = update_rows(runs)
    colors = plots.assign_colors(summary)
    families = sorted({r["family"] for r in summary})
    present = {canonical_family(*f.split(" / ", 1)) for f in families}
    paper_rows = [dict(r) for r in PAPER_RESULTS] if paper_reference else []
    paper_present = [r for r in paper_rows if (r["model"], r["corpus"]) in present]
    figures = _Figures(out_dir)
    sections: list[tuple[str, str, str]] = []  # (anchor, heading, html)

    # results table -----------------------------------------------------------------------------------
    refs = dense_references(summary)
    main_rows = [r for r in summary if not r.get("sweep")]
    trial_rows_ = [r for r in summary if r.get("sweep")]
    results_html = (_results_table(main_rows or trial_rows_, refs, "results")
                    + '<p class="note">val ppl = best validation perplexity; val vs dense = its gap to the best '
                    "finished dense run of the same family; test ppl = test perplexity of the best checkpoint; "
                    "density = nonzero fraction of the sparse tensors; train FLOPs = total over the run. Also in "
                    "<code>results.md</code> and <code>results.csv</code> next to this file.</p>")
    if main_rows and trial_rows_:
        results_html += (f"<details><summary>{len(trial_rows_)} sweep-trial runs</summary>"
                         + _results_table(trial_rows_, refs, "trial-results") + "</details>")
    if not summary:
        results_html = '<p class="note">No run folders were loaded.</p>'
    sections.append(("results", "Results", results_html))

    # paper comparison --------------------------------------------------------------------------------
    if paper_rows:
        rows = []
        for ref in paper_rows:
            ours = [r for r in summary if r["kind"] == "sparse" and canonical_family(*r["family"].split(" / ", 1))
                    == (ref["model"], ref["corpus"]) and r["best_val_ppl"] is not None]
            best = min(ours, key=lambda r: r["best_val_ppl"]) if ours else None
            rows.append([ref["label"], ref["corpus"], fmt_density(ref["density"]), fmt_ppl(ref["val_ppl"]),
                         fmt_ppl(ref["test_ppl"]), best["experiment"] if best else "–",
                         fmt_density(best["density"]) if best else "–",
                         fmt_ppl(best["best_val_ppl"]) if best else "–", fmt_ppl(best["test_ppl"]) if best else "–"])
        header = ("paper model", "corpus", "density", "val ppl", "test ppl", "our best sparse run", "density",
                  "val ppl", "test ppl")
        sections.append(("paper", "Paper reference (full scale) vs ours",
                         '<div class="card">' + _html_table(header, rows, {2, 3, 4, 6, 7, 8}) + "</div>"
                         '<p class="note">Paper numbers are the full-scale results published with Selfish-RNN '
                         "(ICML 2021, authors' README). Our runs may be at reduced CPU scale (smaller models, fewer "
                         "epochs), so absolute perplexities are not expected to match; compare the sparse-dense "
                         "gap.</p>"))

    # learning curves ---------------------------------------------------------------------------------
    curve_html = []
    for family in families:
        fam_rows = _sorted_rows([r for r in summary if r["family"] == family])
        keys = {r["run"] for r in fam_rows}
        fig = plots.plot_curves(family, fam_rows, [e for e in epochs if e["run"] in keys], colors)
        curve_html.append(figures.add(fig, f"curves_{slug(family)}",
                                      f"{family}: validation (left) and training (right) perplexity per epoch; "
                                      "dense runs dashed grey, stars mark the test perplexity at the best epoch.",
                                      f"perplexity per epoch, {family}"))
    sections.append(("curves", "Perplexity per epoch", "".join(curve_html) or '<p class="note">No runs.</p>'))

    # pareto ------------------------------------------------------------------------------------------
    runs_by_source = {str(Path(r["source"]).resolve()): r for r in summary if not r["source"].startswith("wandb:")}
    points = _points([r for r in summary if r["status"] in FINISHED], studies, runs_by_source)
    fig = plots.plot_pareto(points, paper_present, colors)
    sections.append(("pareto", "Sparsity trade-off (Pareto view)", figures.add(
        fig, "pareto", "Best validation perplexity of every run and sweep trial against density, nonzero "
        "parameters and total training FLOPs (finished runs only); the grey step line is the Pareto front of our points, dashed "
        "lines the dense runs, red stars the paper's full-scale numbers (density panel only).",
        "perplexity against density, parameters and FLOPs")))

    # masks -------------------------------------------------------------------------------------------
    mask_html = []
    by_run_gates: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in gates:
        by_run_gates[row["run"]].append(row)
    with_gates = [r for r in _sorted_rows(summary) if by_run_gates.get(r["run"])]
    # sweep-trial runs get no heatmap of their own unless there is nothing else to show
    shown = sorted([r for r in with_gates if not r.get("sweep")] or with_gates,
                   key=lambda r: r["status"] not in FINISHED)
    for row in shown[:MAX_GATE_FIGURES]:
        fig = plots.plot_gate_heatmap(plots.run_label(row), by_run_gates[row["run"]])
        mask_html.append(figures.add(fig, f"gates_{slug(row['run'])}",
                                     f"{row['run']}: density of each gate block of each recurrent weight after "
                                     "every epoch's prune-and-regrow update.", f"per-gate density, {row['run']}"))
    if len(shown) > MAX_GATE_FIGURES:
        mask_html.append(f'<p class="note">{len(shown) - MAX_GATE_FIGURES} more runs have per-gate statistics; '
                         "their rows are in the embedded data.</p>")
    if len(with_gates) > len(shown):
        mask_html.append(f'<p class="note">Per-gate statistics of {len(with_gates) - len(shown)} sweep-trial runs '
                         "are in the embedded data (no heatmaps).</p>")
    no_stats = [r["run"] for r in summary if r["kind"] == "sparse" and not by_run_gates.get(r["run"])]
    if no_stats:
        mask_html.append('<p class="note">Sparse runs without per-gate statistics yet: '
                         + html.escape(", ".join(no_stats)) + "</p>")
    for family in families:
        fam_sparse = _sorted_rows([r for r in summary if r["family"] == family and r["kind"] == "sparse"
                                   and not r.get("sweep")])
        if not fam_sparse:
            continue
        keys = {r["run"] for r in fam_sparse}
        fig = plots.plot_mask_dynamics(family, fam_sparse, [e for e in epochs if e["run"] in keys], colors)
        mask_html.append(figures.add(fig, f"mask_{slug(family)}",
                                     f"{family}: weights removed and regrown at each epoch's update, mask turnover, "
                                     "exploration rate and the death rate schedule.", f"mask dynamics, {family}"))
    sections.append(("masks", "Masks: per-gate density and topology updates",
                     "".join(mask_html) or '<p class="note">No sparse runs with mask statistics.</p>'))

    # sweep -------------------------------------------------------------------------------------------
    for index, study in enumerate(studies):
        dense_refs = [{"family": r["experiment"], "val_ppl": r["best_val_ppl"]} for r in summary
                      if r["kind"] == "dense" and r["status"] in FINISHED and r["best_val_ppl"] is not None]
        fig = plots.plot_sweep(study.name, study.trials, study.importances, dense_refs)
        counts = Counter(t["state"] for t in study.trials)
        trial_rows = []
        for t in sorted(study.trials, key=lambda t: (t["value"] is None, t["value"] or 0.0, t["number"])):
            params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items())
            trial_rows.append([str(t["number"]), t["state"], fmt_ppl(t["value"]), fmt_density(t["density"]),
                               str(t["last_epoch"]) if t["last_epoch"] is not None else "–", params,
                               str(t["user_attrs"].get("run_dir", "")), str(t["user_attrs"].get("reason", "") or "")])
        sweep_html = (f'<p class="note">study <code>{html.escape(study.name)}</code> in '
                      f"<code>{html.escape(study.storage)}</code>, direction "
                      f"{html.escape(', '.join(study.directions))}; "
                      + ", ".join(f"{n} {html.escape(s)}" for s, n in sorted(counts.items())) + "</p>"
                      + figures.add(fig, f"sweep_{slug(study.name)}", "Trials of the sweep: objective against "
                                    "density by trial state, and Optuna's parameter importances.",
                                    f"sweep {study.name}")
                      + '<div class="card" style="overflow-x:auto">'
                      + _html_table(("trial", "state", "value", "density", "last epoch", "params", "run folder",
                                     "reason"), trial_rows, {0, 2, 3, 4}) + "</div>")
        sections.append((f"sweep{index}" if index else "sweep", f"Sweep: {study.name}", sweep_html))

    # data + page -------------------------------------------------------------------------------------
    warnings = [w for run in runs for w in run.warnings] + [w for st in studies for w in st.warnings]
    data = {"generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "runs": summary, "epochs": epochs, "tests": tests, "gates": gates, "updates": updates,
            "paper": paper_rows, "warnings": warnings,
            "studies": [{"name": st.name, "storage": st.storage, "directions": st.directions,
                         "trials": st.trials, "importances": st.importances} for st in studies]}
    kinds = Counter(r["kind"] for r in summary if not r.get("sweep"))
    n_trial_runs = sum(1 for r in summary if r.get("sweep"))
    statuses = Counter(r["status"] for r in summary)
    facts = [f"<span><b>{len(summary) - n_trial_runs}</b>runs</span>",
             f"<span><b>{kinds.get('sparse', 0)}</b>sparse</span>",
             f"<span><b>{kinds.get('dense', 0)}</b>dense</span>",
             f"<span><b>{len(families)}</b>{'family' if len(families) == 1 else 'families'}</span>"]
    if studies:
        facts.append(f"<span><b>{sum(len(st.trials) for st in studies)}</b>sweep trials</span>")
    if n_trial_runs:
        facts.append(f"<span><b>{n_trial_runs}</b>trial run folders</span>")
    status_text = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) or "none"
    family_text = ", ".join(families) or "none"
    sources = sorted({("W&B " + r["source"][6:].rsplit("/", 1)[0]) if r["source"].startswith("wandb:")
                      else str(Path(r["source"]).parent.parent) for r in summary})
    loaded = (f"Families: {html.escape(family_text)} · status: {html.escape(status_text)}"
              + (f" · from {html.escape(', '.join(sources[:4]))}{' …' if len(sources) > 4 else ''}" if sources else "")
              + "".join(f" · sweep <code>{html.escape(st.name)}</code>" for st in studies))
    warn_html = ""
    if warnings:
        items = "".join(f"<li>{html.escape(mask_url(w))}</li>" for w in warnings)
        warn_html = f"<details><summary>{len(warnings)} loader notes</summary><ul>{items}</ul></details>"
    nav = "".join(f'<a href="#{a}">{html.escape(h)}</a>' for a, h, _ in sections)
    body = "".join(f'<section id="{a}"><h2>{html.escape(h)}</h2>{content}</section>' for a, h, content in sections)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{CSS}</style></head>
<body>
<header><h1>{html.escape(title)}</h1>
<div class="sub">Selfish Sparse RNN Training (Liu et al., ICML 2021) · generated {data['generated_at']}</div>
<div class="facts">{''.join(facts)}</div>
<div class="sub" style="margin-top:8px">{loaded}</div></header>
<nav>{nav}</nav>
<main>{warn_html}{body}</main>
<script type="application/json" id="report-data">{embed_json(data)}</script>
<script>{CHECK_SCRIPT}</script>
</body></html>
"""
    write_markdown(summary, out_dir / "results.md", paper_rows)
    write_csv(summary, out_dir / "results.csv")
    (out_dir / "report.json").write_text(json.dumps(_json_safe(data), indent=1, default=str), encoding="utf-8")
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


# -------------------------------------------------------------------------------------------- entry points


def _is_optuna_sqlite(path: Path) -> bool:
    """A SQLite file holding Optuna's `studies` and `trials` tables (opened read-only)."""
    try:
        with path.open("rb") as handle:
            if not handle.read(16).startswith(b"SQLite format 3"):
                return False
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return {"studies", "trials"} <= tables
    except (OSError, sqlite3.Error):
        return False


def find_sweep_storages(paths: Sequence[str | Path]) -> list[Path]:
    """Sweep storages under the given folders: the sweeps' default journals `sweeps/<study>/journal.log`
    (selfish.sweep) and SQLite files `*.db` / `*.sqlite3` whose header says SQLite."""
    found: dict[Path, None] = {}
    for item in paths:
        for root in ([Path(p) for p in glob.glob(str(item), recursive=True)] if glob.has_magic(str(item))
                     else [Path(item)]):
            if not root.is_dir():
                continue
            for path in sorted(root.rglob("journal.log")):
                if path.parent.parent.name == "sweeps":
                    found[path.resolve()] = None
            for pattern in ("*.db", "*.sqlite3"):
                for path in sorted(root.rglob(pattern)):
                    if _is_optuna_sqlite(path):
                        found[path.resolve()] = None
    return sorted(found)


def report_main(paths: Sequence[str], sweep_storage: str | Sequence[str] | None, sweep_study: str | None,
                out_dir: str | Path, *, paper_reference: bool = True, title: str | None = None,
                wandb_project: str | None = None, wandb_filters: Mapping[str, Any] | None = None) -> int:
    """`runner.py report [RUN_DIRS or globs] [--sweep STORAGE] --out DIR`: 0 written, 2 bad input.

    With no `sweep_storage`, the sweep storages found under `paths` (see `find_sweep_storages`) are
    included, so `report runs` shows every run and every sweep kept under `runs/`. `wandb_project`
    (`entity/project` or `project`) adds that project's runs from the W&B API (online only)."""
    try:
        runs = load_runs(paths or [])
        if wandb_project:
            entity, _, project = wandb_project.rpartition("/")
            runs += load_wandb_runs(project, entity or None, wandb_filters)
        if sweep_storage:
            storages = [sweep_storage] if isinstance(sweep_storage, (str, Path)) else list(sweep_storage)
            studies = [load_study(s, sweep_study) for s in storages]
        else:
            studies = []
            for found in find_sweep_storages(paths or []):
                try:
                    studies.append(load_study(found))
                except AnalysisError as err:  # a storage with several studies: say so, go on
                    print(f"note: skipped {found}: {err}", file=sys.stderr)
        if not runs and not studies:
            where = ", ".join(map(str, paths)) or "(no paths given)"
            raise AnalysisError(f"no run folders (with summary.json or metrics.jsonl) under {where}")
        path = build_report(runs, out_dir, study=studies, paper_reference=paper_reference,
                            **({"title": title} if title else {}))
    except AnalysisError as err:
        print(f"error: {mask_url(str(err))}", file=sys.stderr)
        return 2
    trials = f", {sum(len(st.trials) for st in studies)} sweep trials" if studies else ""
    print(f"report: {path} ({len(runs)} runs{trials}); tables: {path.parent / 'results.md'}, "
          f"{path.parent / 'results.csv'}")
    return 0


def live_dashboard_command(storage_url: str, port: int = 8080) -> list[str]:
    """The `optuna-dashboard` command serving `storage_url` on 127.0.0.1 (journal files get the storage
    class hint). The list holds the real URL (it must); print it with `mask_url`."""
    exe = Path(sys.executable).with_name("optuna-dashboard")
    command = [str(exe) if exe.exists() else (shutil.which("optuna-dashboard") or "optuna-dashboard")]
    text = str(storage_url)
    command.append(text)
    if "://" not in text and Path(text).exists():
        with Path(text).open("rb") as handle:
            if not handle.read(16).startswith(b"SQLite format 3"):
                command += ["--storage-class", "JournalFileStorage"]
            else:
                command[-1] = f"sqlite:///{Path(text).resolve()}"
    return command + ["--host", "127.0.0.1", "--port", str(port)]
