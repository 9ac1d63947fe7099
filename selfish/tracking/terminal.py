"""The terminal sink (rich): a progress bar per epoch, a table per epoch, a final summary table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

__all__ = ["TerminalSink"]


def _fmt(value: Any, spec: str = ".2f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _count(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "?"
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{int(value):,}"


class TerminalSink:
    """Human-readable progress on `console`. `quiet=True` prints nothing (sweeps)."""

    def __init__(self, console: Console | None = None, quiet: bool = False, title: str | None = None):
        self.console = console or Console(stderr=True)
        self.quiet = quiet
        self.title = title
        self._progress: Progress | None = None
        self._task: int | None = None
        self._epoch: int | None = None
        self._steps_per_epoch: int | None = None
        self._last_epoch: dict | None = None
        self._closed = False

    def write(self, record: dict) -> None:
        if self.quiet or self._closed:
            return
        kind = record.get("type")
        if kind == "start":
            self._start(record)
        elif kind == "step":
            self._step(record)
        elif kind == "epoch":
            self._stop_progress()
            self._epoch_table(record)
        elif kind == "test":
            self._stop_progress()
            self._final_table(record)
        elif kind == "end":
            self._stop_progress()
            status = record.get("status")
            style = "green" if status == "completed" else "yellow" if status == "stopped" else "red"
            reason = f" ({record['reason']})" if record.get("reason") else ""
            self.console.print(f"[{style}]run {status}{reason}[/{style}]")

    def close(self, status: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_progress()

    # -- pieces -----------------------------------------------------------------------------------
    def _start(self, record: dict) -> None:
        self._steps_per_epoch = record.get("steps_per_epoch")
        verb = "resuming at step " + str(record.get("step")) if record.get("resumed") else "starting"
        dense, nonzero = record.get("params_dense"), record.get("params_nonzero")
        size = f"{_count(dense)} dense"
        if nonzero is not None and nonzero != dense:
            size += f", {_count(nonzero)} non-zero (density {_fmt(record.get('density'), '.3f')})"
        title = f"{self.title}: " if self.title else ""
        self.console.print(f"[bold]{title}{verb}[/bold] | {size} | {record.get('steps_per_epoch')} steps/epoch"
                           f" | device {record.get('device')}")

    def _step(self, record: dict) -> None:
        epoch = record.get("epoch")
        total = record.get("batches") or self._steps_per_epoch
        if self._progress is None or epoch != self._epoch:
            self._stop_progress()
            self._epoch = epoch
            self._progress = Progress(
                TextColumn(f"epoch {epoch}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=self.console, transient=True)
            self._progress.start()
            self._task = self._progress.add_task("train", total=total, stats="")
        stats = (f"loss {_fmt(record.get('loss'))} ppl {_fmt(record.get('ppl'))} lr {_fmt(record.get('lr'), '.4g')}"
                 f" {_fmt(record.get('tokens_per_s'), '.0f')} tok/s {record.get('phase', '')}")
        self._progress.update(self._task, completed=record.get("batch", 0), total=total, stats=stats)

    def _stop_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None

    def _epoch_table(self, record: dict) -> None:
        self._last_epoch = record
        total = (record.get("mask") or {}).get("total") or {}
        table = Table(title=f"epoch {record.get('epoch')}", title_justify="left", show_edge=False)
        columns = [("train ppl", _fmt(record.get("train_ppl"))), ("val ppl", _fmt(record.get("val_ppl"))),
                   ("best", _fmt(record.get("best_val_ppl"))), ("lr", _fmt(record.get("lr"), ".4g")),
                   ("phase", str(record.get("phase")) + (" (switched)" if record.get("switched") else "")),
                   ("density", _fmt(record.get("density"), ".4f")), ("death rate", _fmt(record.get("death_rate"), ".4f")),
                   ("removed", _fmt(total.get("removed"))), ("regrown", _fmt(total.get("regrown"))),
                   ("exploration", _fmt(record.get("exploration_rate"), ".4f")),
                   ("time", _fmt(record.get("epoch_time_s"), ".1f") + " s")]
        for name, _ in columns:
            table.add_column(name, justify="right")
        table.add_row(*[value for _, value in columns])
        self.console.print(table)

    def _final_table(self, record: dict) -> None:
        table = Table(title="result", title_justify="left")
        table.add_column("metric")
        table.add_column("value", justify="right")
        rows = [("best epoch", _fmt(record.get("best_epoch"))), ("val ppl", _fmt(record.get("val_ppl"))),
                ("test ppl", _fmt(record.get("test_ppl"))), ("steps", _fmt(record.get("step")))]
        if self._last_epoch is not None:
            rows.append(("final density", _fmt(self._last_epoch.get("density"), ".4f")))
            rows.append(("exploration rate", _fmt(self._last_epoch.get("exploration_rate"), ".4f")))
        for row in rows:
            table.add_row(*row)
        self.console.print(table)
