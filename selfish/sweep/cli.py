"""CLI glue for ``runner.py``: the ``sweep`` and ``sweep-status`` sub-commands.

This is the one module of ``selfish.sweep`` that reads the environment (``SELFISH_DATA``,
``CUDA_VISIBLE_DEVICES``, ``WANDB_API_KEY`` / ``WANDB_MODE``, ``WANDB_INIT_TIMEOUT``) and the CPU count; the core
functions take everything as arguments. Exit codes follow the runner: 0 ok, 2 bad input (sweep
spec, storage URL, unknown study), 1 failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from selfish.sweep.run import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, run_sweep
from selfish.sweep.spec import SweepSpecError
from selfish.sweep.storage import StorageError, scrub


def visible_devices() -> list[str]:
    """``cuda:0..k-1`` on a GPU machine (k = the devices ``CUDA_VISIBLE_DEVICES`` leaves visible), else []."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return []
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def wandb_mode(requested: str | None) -> str:
    """``auto`` -> online when W&B credentials are present, else offline; ``None`` -> ``auto``."""
    mode = requested or os.environ.get("WANDB_MODE") or "auto"
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path.home() / ".netrc"
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return "online"
    return "offline"


def _default_data_dir() -> Path | None:
    env = os.environ.get("SELFISH_DATA")
    return Path(env) if env else None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", dest="run_root", type=Path, default=Path("runs"),
                        help="run folder root: trials go to RUNS/<spec name>/sweep-<study>-t<n>, the "
                             "default journal to RUNS/sweeps/<study>/journal.log (default: runs)")


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sweep`` and ``sweep-status`` to the runner's sub-commands (each sets ``func(args) -> int``)."""
    sweep = subparsers.add_parser(
        "sweep", help="run or resume an Optuna sweep over a base experiment spec",
        description="Create the study once, then run N local worker processes until the study has "
                    "n_trials finished trials. Re-running the same command resumes it.",
    )
    sweep.add_argument("sweep_file", metavar="SWEEP", type=Path, help="sweep spec, e.g. sweeps/cpu_density.yaml")
    sweep.add_argument("--workers", type=_positive, default=1, help="local worker processes (default 1)")
    sweep.add_argument("--storage", default=None,
                       help="postgresql://user:pass@host/db (several machines), sqlite:///file.db or a "
                            "journal file path; default: the sweep's storage or RUNS/sweeps/<study>/journal.log")
    sweep.add_argument("--trials", type=_positive, default=None, help="override n_trials of the sweep")
    sweep.add_argument("--data-dir", type=Path, default=None,
                       help="corpus folder (default $SELFISH_DATA, else download)")
    sweep.add_argument("--cache-dir", type=Path, default=Path(".cache/selfish"), help="token cache folder")
    sweep.add_argument("--wandb", dest="wandb_mode", choices=["auto", "online", "offline", "disabled"],
                       default=None, help="W&B mode of the trials' runs (default auto)")
    sweep.add_argument("-v", "--verbose", action="store_true", help="log every trial start and end")
    _common(sweep)
    sweep.set_defaults(func=sweep_command)

    status = subparsers.add_parser(
        "sweep-status", help="trials, best trial (as a train command) and the dashboard command of a sweep",
    )
    status.add_argument("source", metavar="SWEEP", nargs="?", default=None, help="sweep spec file")
    status.add_argument("--storage", default=None, help="storage URL or journal file instead of a sweep file")
    status.add_argument("--study", default=None, help="study name (needed when the storage holds several)")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    _common(status)
    status.set_defaults(func=status_command)


def sweep_command(args: argparse.Namespace) -> int:
    """Handler of ``sweep``."""
    from selfish.tracking.wandb_sink import parse_init_timeout

    try:
        init_timeout = parse_init_timeout(os.environ.get("WANDB_INIT_TIMEOUT"))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return run_sweep(
        args.sweep_file, workers=args.workers, storage=args.storage, trials=args.trials,
        data_dir=args.data_dir if args.data_dir is not None else _default_data_dir(),
        cache_dir=args.cache_dir, run_root=args.run_root, wandb_mode=wandb_mode(args.wandb_mode),
        wandb_init_timeout=init_timeout, quiet=not args.verbose, cores=os.cpu_count() or 1,
        devices=visible_devices(),
    )


def status_command(args: argparse.Namespace) -> int:
    """Handler of ``sweep-status``."""
    from selfish.sweep.status import format_status, sweep_status

    source = args.storage if args.storage is not None else args.source
    if source is None or (args.storage is not None and args.source is not None):
        print("error: sweep-status takes a sweep file or --storage URL (exactly one)", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        status = sweep_status(source, args.study, run_root=args.run_root)
    except (SweepSpecError, StorageError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {scrub(str(message), args.storage)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # the storage answered but something else broke
        print(f"error: {scrub(f'{type(exc).__name__}: {exc}', args.storage)}", file=sys.stderr)
        return EXIT_FAILURE
    print(json.dumps(status, indent=2, default=str) if args.json else format_status(status))
    return EXIT_OK


# The runner discovers sub-commands through this name (runner.EXTENSION_MODULES).
register_commands = register_cli
