"""`python -m analysis [RUN_DIRS or globs ...] [--sweep SWEEP ...] --out DIR` writes the report;
`python -m analysis --live SWEEP [--port N]` serves optuna-dashboard on 127.0.0.1 instead."""

from __future__ import annotations

import argparse
import sys

from .cli import add_report_arguments, live_command, report_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    add_report_arguments(parser)
    parser.add_argument("--live", metavar="SWEEP", help="serve optuna-dashboard on this sweep file or storage")
    parser.add_argument("--port", type=int, default=8080, help="port for --live (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.live:
        return live_command(argparse.Namespace(storage=args.live, port=args.port, run_root=args.run_root))
    return report_command(args)


if __name__ == "__main__":
    sys.exit(main())
