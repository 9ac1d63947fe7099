"""`python -m analysis --out DIR [RUN_DIRS or globs ...] [--sweep STORAGE [--study NAME]]` writes the report;
`python -m analysis --live STORAGE` starts optuna-dashboard on 127.0.0.1."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from .load import mask_url
from .report import live_dashboard_command, report_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    parser.add_argument("paths", nargs="*", help="run folders, folders above them, or globs (default: runs)")
    parser.add_argument("--out", default="reports/dashboard", help="output folder (default: %(default)s)")
    parser.add_argument("--sweep", metavar="STORAGE", help="Optuna storage: URL, SQLite file or journal file")
    parser.add_argument("--study", help="study name (needed when the storage holds several)")
    parser.add_argument("--no-paper", action="store_true", help="leave out the paper's reference numbers")
    parser.add_argument("--live", metavar="STORAGE", help="serve optuna-dashboard on this storage instead")
    parser.add_argument("--port", type=int, default=8080, help="port for --live (default: %(default)s)")
    parser.add_argument("--title", help="report title")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also load this W&B project's runs (online)")
    parser.add_argument("--wandb-group", help="only W&B runs of this group")
    parser.add_argument("--screenshot", metavar="PNG", help="also save a 1400x2400 screenshot (needs chromium)")
    args = parser.parse_args(argv)
    if args.live:
        command = live_dashboard_command(args.live, port=args.port)
        print("running:", " ".join(mask_url(c) for c in command), flush=True)
        try:
            return subprocess.call(command)
        except KeyboardInterrupt:
            return 0
        except FileNotFoundError:
            print("error: optuna-dashboard is not installed in this environment", file=sys.stderr)
            return 2
    code = report_main(args.paths or ([] if args.wandb else ["runs"]), args.sweep, args.study, args.out,
                       paper_reference=not args.no_paper, title=args.title, wandb_project=args.wandb,
                       wandb_filters={"group": args.wandb_group} if args.wandb_group else None)
    if code == 0 and args.screenshot:
        from .browser import screenshot

        try:
            print("screenshot:", screenshot(Path(args.out) / "report.html", Path(args.screenshot)))
        except (OSError, RuntimeError, subprocess.SubprocessError) as err:
            print(f"error: no screenshot: {err}", file=sys.stderr)
            return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
