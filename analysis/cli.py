"""Command line of the analysis: `runner.py report ...` / `runner.py dashboard-live ...` (registered through
`register_commands`, see runner.py `EXTENSION_MODULES`) and `python -m analysis ...`.

    report [RUN_DIRS or globs ...] [--sweep SWEEP ...] [--study NAME] --out DIR
    dashboard-live SWEEP [--port 8080]

SWEEP is a sweep file (`sweeps/*.yaml`, its storage resolved as `runner.py sweep` does), an Optuna storage
URL (`sqlite:///...`, `postgresql://...`), a SQLite file or a journal file. Exit codes: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

from .load import AnalysisError, check_storage, driver_url, mask_url

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


def resolve_sweep(source: str, run_root: Path) -> tuple[str, str | None]:
    """(storage, study name or None) for a sweep file or a storage given directly."""
    if Path(source).suffix.lower() not in (".yaml", ".yml"):
        return source, None
    try:
        from selfish.sweep.run import storage_for
        from selfish.sweep.spec import load_sweep
    except ImportError as err:
        raise AnalysisError(f"cannot read sweep file {source}: selfish.sweep unavailable ({err})") from None
    try:
        sweep = load_sweep(source)
        config = storage_for(sweep, None, run_root)
    except Exception as err:  # noqa: BLE001 - a bad sweep file is bad input, shown in one line
        message = mask_url(str(err)).splitlines()[0]
        raise AnalysisError(message if source in message else f"{source}: {message}") from None
    storage = str(config.journal_path) if config.journal_path is not None else str(config.url)
    return storage, sweep.study


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `report` (shared by runner.py and `python -m analysis`)."""
    parser.add_argument("paths", nargs="*", help="run folders, folders above them, or globs (default: runs)")
    parser.add_argument("--out", default="reports/dashboard", help="output folder (default: %(default)s)")
    parser.add_argument("--sweep", action="append", default=None, metavar="SWEEP",
                        help="sweep file or Optuna storage (URL, SQLite or journal file); repeatable; default: "
                             "the sweep storages found under the paths")
    parser.add_argument("--study", help="study name (needed when a storage holds several)")
    parser.add_argument("--run-root", default="runs", type=Path,
                        help="run root used to resolve a sweep file's default storage (default: %(default)s)")
    parser.add_argument("--no-paper", action="store_true", help="leave out the paper's reference numbers")
    parser.add_argument("--title", help="report title")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also load this W&B project's runs (online)")
    parser.add_argument("--wandb-group", help="only W&B runs of this group")
    parser.add_argument("--screenshot", metavar="PNG", help="also save a 1400x2400 screenshot (needs chromium)")


def report_command(args: argparse.Namespace) -> int:
    """Handler of `report`."""
    try:
        resolved = [resolve_sweep(s, args.run_root) for s in (args.sweep or [])]
    except AnalysisError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from .report import report_main

    studies = {name for _, name in resolved if name}
    study = args.study or (studies.pop() if len(studies) == 1 else None)
    code = report_main(args.paths or ([] if args.wandb else ["runs"]), [s for s, _ in resolved] or None, study,
                       args.out, paper_reference=not args.no_paper, title=args.title, wandb_project=args.wandb,
                       wandb_filters={"group": args.wandb_group} if args.wandb_group else None)
    if code == EXIT_OK and args.screenshot:
        from .browser import screenshot

        try:
            print("screenshot:", screenshot(Path(args.out) / "report.html", Path(args.screenshot)))
        except (OSError, RuntimeError, subprocess.SubprocessError) as err:
            print(f"error: no screenshot: {err}", file=sys.stderr)
            return EXIT_FAILURE
    return code


def live_command(args: argparse.Namespace) -> int:
    """Handler of `dashboard-live`: runs optuna-dashboard on 127.0.0.1 until interrupted."""
    try:
        storage, _ = resolve_sweep(args.storage, args.run_root)
    except AnalysisError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if "://" not in storage and not Path(storage).exists():
        print(f"error: sweep storage not found: {storage}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:  # a storage that cannot be read is bad input here, not a traceback from optuna-dashboard
        check_storage(storage)
    except AnalysisError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from .report import live_dashboard_command

    command = live_dashboard_command(driver_url(storage) if "://" in storage else storage, port=args.port)
    print("running:", " ".join(mask_url(c) for c in command), f"-> http://127.0.0.1:{args.port}/", flush=True)
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return EXIT_OK
    except FileNotFoundError:
        print("error: optuna-dashboard is not installed in this environment", file=sys.stderr)
        return EXIT_BAD_INPUT


def add_live_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("storage", metavar="SWEEP", help="sweep file or Optuna storage (URL, SQLite or journal)")
    parser.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default: %(default)s)")
    parser.add_argument("--run-root", default="runs", type=Path, help="run root for a sweep file's storage")


def register_commands(subparsers: Any) -> None:
    """Add `report` and `dashboard-live` to runner.py."""
    report = subparsers.add_parser("report", help="HTML report + results tables from run folders and sweeps",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_report_arguments(report)
    report.set_defaults(func=report_command)
    live = subparsers.add_parser("dashboard-live", help="serve optuna-dashboard on a sweep's storage (127.0.0.1)")
    add_live_arguments(live)
    live.set_defaults(func=live_command)
