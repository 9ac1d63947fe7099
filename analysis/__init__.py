"""Reports and dashboards comparing sparse and dense runs: run folders, Optuna studies and W&B runs ->
tidy tables (lists of dicts), matplotlib plots and one self-contained HTML report."""

from .load import (
    AnalysisError,
    Run,
    StudyData,
    epoch_rows,
    gate_rows,
    load_run,
    load_runs,
    load_study,
    load_wandb_runs,
    mask_url,
    summary_rows,
    test_rows,
    update_rows,
)
from .paper import PAPER_RESULTS
from .report import build_report, live_dashboard_command, report_main

__all__ = [
    "AnalysisError", "PAPER_RESULTS", "Run", "StudyData", "build_report", "epoch_rows", "gate_rows",
    "live_dashboard_command", "load_run", "load_runs", "load_study", "load_wandb_runs", "mask_url",
    "report_main", "summary_rows", "test_rows", "update_rows",
]
