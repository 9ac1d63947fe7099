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
    """Compact counts: 21.78M, 615.2k, 7,645."""
    if not isinstance(value, (int, float)):
        return "?"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    return f"{value / 1e3:.1f}k" if value >= 1e5 else f"{int(value):,}"


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
        stats = (f"loss {_fmt(record.get('loss'))} ppl {_fmt(record.get('ppl'))} lr {_fmt(record.get('lr'), '.4g')}"
                 f" {_fmt(record.get('tokens_per_s'), '.0f')} tok/s {record.get('phase', '')}")
        if not self.console.is_terminal:  # a log file: one line per record instead of a live bar
            self.console.print(f"| epoch {epoch} | {record.get('batch')}/{total} batches | {stats}",
                               highlight=False)
            return
        if self._progress is None or epoch != self._epoch:
            self._stop_progress()
            self._epoch = epoch
            self._progress = Progress(
                TextColumn(f"epoch {epoch}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=self.console, transient=True)
            self._progress.start()
            self._task = self._progress.add_task("train", total=total, stats="")
        self._progress.update(self._task, completed=record.get("batch", 0), total=total, stats=stats)

    def _stop_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None

    # (header, width) of the per-epoch rows; fixed widths so successive rows line up under one header
    _EPOCH_COLUMNS = (("epoch", 5), ("train ppl", 10), ("val ppl", 9), ("phase", 6), ("density", 8),
                      ("p", 7), ("removed", 8), ("regrown", 8), ("explore", 8), ("s", 5))

    def _epoch_table(self, record: dict) -> None:
        """One row per epoch (header on the first): ppl, phase, density, death rate, removed, regrown, ..."""
        first = self._last_epoch is None or not self.console.is_terminal  # logs: a header with every row
        self._last_epoch = record
        total = (record.get("mask") or {}).get("total") or {}
        phase = str(record.get("phase")) + ("*" if record.get("switched") else "")
        values = (str(record.get("epoch")), _fmt(record.get("train_ppl")), _fmt(record.get("val_ppl")), phase,
                  _fmt(record.get("density"), ".4f"), _fmt(record.get("death_rate"), ".4f"),
                  _count(total.get("removed")) if total else "-", _count(total.get("regrown")) if total else "-",
                  _fmt(record.get("exploration_rate"), ".4f"), _fmt(record.get("epoch_time_s"), ".0f"))
        table = Table(box=None, show_header=first, header_style="bold underline", pad_edge=False, padding=(0, 0))
        for name, width in self._EPOCH_COLUMNS:
            table.add_column(name, justify="right", width=width, no_wrap=True)
        table.add_row(*values)
        self.console.print(table, end="")

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
