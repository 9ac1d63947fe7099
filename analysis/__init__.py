"""Reports and dashboards comparing sparse and dense runs: run folders, Optuna studies and W&B runs ->
tidy tables (lists of dicts), matplotlib plots and one self-contained HTML report.

Names are imported on first use, so `runner.py` can register the `report` command (analysis.cli) without
paying for matplotlib and optuna at start-up.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AnalysisError": "load", "Run": "load", "StudyData": "load", "epoch_rows": "load", "gate_rows": "load",
    "load_run": "load", "load_runs": "load", "load_study": "load", "load_wandb_runs": "load",
    "mask_url": "load", "summary_rows": "load", "test_rows": "load", "update_rows": "load",
    "PAPER_RESULTS": "paper",
    "build_report": "report", "live_dashboard_command": "report", "report_main": "report",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
