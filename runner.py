"""selfish: the command line of selfish-rnn (also installed as the console script `selfish`).

    selfish train SPEC [--set key.path=value ...] [--resume RUN_DIR] [--run-dir DIR] [--quiet]
    selfish eval SPEC|RUN_DIR [--checkpoint PATH] [--json]
    selfish describe SPEC [--json]
    selfish from-flags [--script main.py|main_ONLSTM.py] -- FLAGS...

Exit codes: 0 done, 2 bad input (spec, paths, flags, argparse errors), 1 failure while training.
Errors print one line (no traceback) unless `--debug` is given.

This is the edge of the program: it reads the environment (`SELFISH_DATA`, `SELFISH_CACHE`, W&B login)
and picks paths, then calls the library (`selfish.experiment`) with explicit objects.

Adding a sub-command without touching this file: a module listed in `EXTENSION_MODULES` that exists
defines `register_commands(subparsers)`; each command it adds sets `func=handler` with
`handler(args) -> int` (`parser.set_defaults(func=...)`). Raise `CliError` (or `SpecError`) for bad input.
"""

from __future__ import annotations

import argparse
import importlib
import json
import netrc
import os
import shutil
import signal
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from selfish.spec import Spec, SpecError, load_spec, save_spec, spec_from_dict

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
REPO = Path(__file__).resolve().parent
# Modules that may add sub-commands (sweep, sweep-status, report) through `register_commands(subparsers)`.
EXTENSION_MODULES = ("selfish.sweep.cli", "analysis.cli")


class CliError(Exception):
    """Bad input found by the runner (a path, a flag, a combination of options): exit code 2."""


# ------------------------------------------------------------------------------------------------
# The environment edge: data, cache, W&B login


def resolve_data_dir(spec: Spec, env: Mapping[str, str] = os.environ) -> Path | None:
    """`data.dir` wins, else `SELFISH_DATA`, else None (the library uses its cache and downloads)."""
    for value, origin in ((spec.data.dir, "data.dir"), (env.get("SELFISH_DATA"), "SELFISH_DATA")):
        if value:
            path = Path(value).expanduser()
            if not path.is_dir():
                raise CliError(f"{origin}: folder not found: {path}")
            return path
    return None


def resolve_cache_dir(env: Mapping[str, str] = os.environ) -> Path:
    """`SELFISH_CACHE`, else `~/.cache/selfish-rnn`."""
    value = env.get("SELFISH_CACHE")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "selfish-rnn"


def wandb_logged_in(env: Mapping[str, str] = os.environ) -> bool:
    """An API key in the environment or a W&B entry in the netrc file (no network is used)."""
    if env.get("WANDB_API_KEY"):
        return True
    path = Path(env.get("NETRC") or Path.home() / ".netrc").expanduser()
    host = (env.get("WANDB_BASE_URL") or "https://api.wandb.ai").split("://")[-1].split("/")[0].split(":")[0]
    try:
        return netrc.netrc(str(path)).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(mode: str, env: Mapping[str, str] = os.environ) -> str:
    """`auto` -> `WANDB_MODE` if set, else online when logged in, else offline; other modes as given."""
    if mode != "auto":
        return mode
    forced = (env.get("WANDB_MODE") or "").strip().lower()
    if forced in ("online", "offline", "disabled"):
        return forced
    if forced == "dryrun":
        return "offline"
    return "online" if wandb_logged_in(env) else "offline"


FAULT_ENV = "SELFISH_FAULT"
FAULT_POINTS = ("step", "mask_update", "checkpoint_written", "checkpoint_rotated")


def fault_hook_from_env(env: Mapping[str, str] = os.environ) -> Callable[[str], None] | None:
    """Fault injection for the reliability tests: `SELFISH_FAULT=POINT:N` makes this process SIGKILL itself
    the N-th time training reaches POINT (one of `FAULT_POINTS`). Unset (always, outside tests): None."""
    value = env.get(FAULT_ENV)
    if not value:
        return None
    point, _, nth = value.partition(":")
    if point not in FAULT_POINTS or not nth.isdigit() or int(nth) < 1:
        raise CliError(f"{FAULT_ENV}={value}: expected POINT:N with POINT one of {', '.join(FAULT_POINTS)}, N >= 1")
    target, seen = int(nth), {"count": 0}

    def hook(name: str) -> None:
        if name == point:
            seen["count"] += 1
            if seen["count"] == target:
                os.kill(os.getpid(), signal.SIGKILL)

    return hook


def _format_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ARG001 - warnings API
    return f"selfish: warning: {message}\n"


def resolve_wandb_init_timeout(env: Mapping[str, str] = os.environ) -> float:
    """`WANDB_INIT_TIMEOUT` (seconds, W&B's own variable), else 30: the longest a dead W&B server delays a run."""
    from selfish.tracking.wandb_sink import parse_init_timeout

    try:
        return parse_init_timeout(env.get("WANDB_INIT_TIMEOUT"))
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _experiment():
    """The wiring module (imported lazily: torch is slow to import and not needed for spec errors)."""
    return importlib.import_module("selfish.experiment")


def _bad_input_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [CliError, SpecError]
    for module, name in (("selfish.data", "DataError"), ("selfish.train.checkpoint", "CheckpointError")):
        loaded = sys.modules.get(module)
        if loaded is not None and hasattr(loaded, name):
            types.append(getattr(loaded, name))
    return tuple(types)


def _console(stderr: bool = True):
    from rich.console import Console

    return Console(stderr=stderr)


def _parse_sets(items: Sequence[str] | None) -> list[str]:
    return list(items or [])


def _set_threads(args: argparse.Namespace) -> None:
    """`--threads N`: torch intra-op threads (default: torch's choice, all cores)."""
    threads = getattr(args, "threads", None)
    if threads is None:
        return
    if threads <= 0:
        raise CliError(f"--threads: must be a positive integer, got {threads}")
    import torch

    torch.set_num_threads(threads)


def _terminate_as_interrupt(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt  # SIGTERM (kill, timeout): unwind like Ctrl-C so the run folder is closed


# ------------------------------------------------------------------------------------------------
# train


def _spec_in_run_dir(run_dir: Path, overrides: Sequence[str] = ()) -> Spec:
    path = run_dir / "spec.yaml"
    if not path.is_file():
        raise CliError(f"{run_dir}: not a run folder (no spec.yaml)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CliError(f"{path}: malformed YAML: {exc}") from None
    return spec_from_dict(data or {}, source=str(path), overrides=overrides)


def _new_run_dir(spec: Spec, explicit: str | None) -> Path:
    from selfish.tracking import new_run_id

    if explicit:
        run_dir = Path(explicit)
        if run_dir.exists() and any(run_dir.iterdir()):
            raise CliError(f"--run-dir {run_dir}: folder exists and is not empty (use --resume to continue it)")
    else:
        run_dir = Path(spec.tracking.run_dir) / spec.name / new_run_id()
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir.resolve()


def cmd_train(args: argparse.Namespace) -> int:
    from selfish.tracking import build_sinks, git_commit

    overrides = _parse_sets(args.set)
    if args.resume:
        run_dir = Path(args.resume).resolve()
        if overrides or args.run_dir:
            raise CliError("--resume continues a run with the spec saved in its folder: no --set or --run-dir")
        spec = _spec_in_run_dir(run_dir)
        if args.spec and load_spec(args.spec).to_dict() != spec.to_dict():
            raise CliError(f"{args.spec}: differs from the spec saved in {run_dir}/spec.yaml")
    else:
        if not args.spec:
            raise CliError("train: give a SPEC file (or --resume RUN_DIR)")
        spec = load_spec(args.spec, overrides)
    data_dir = resolve_data_dir(spec)
    cache_dir = resolve_cache_dir()
    mode = resolve_wandb_mode(spec.tracking.wandb.mode)
    init_timeout = resolve_wandb_init_timeout()
    fault_hook = fault_hook_from_env()
    _set_threads(args)  # every check of the input before the run folder is made
    if not args.resume:
        run_dir = _new_run_dir(spec, args.run_dir)
        save_spec(spec, run_dir / "spec.yaml")
    console = _console()
    sinks = build_sinks(spec, run_dir, wandb_mode=mode, console=console, quiet=args.quiet,
                        git=git_commit(REPO), run_id=run_dir.name, wandb_init_timeout=init_timeout)
    if not args.quiet:
        console.print(f"run folder: {run_dir}  (W&B {mode})")
    status = "failed"
    watch = _StartWatch()
    previous_handler = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        extra = {"fault_hook": fault_hook} if fault_hook is not None else {}
        result = _experiment().run(spec, run_dir=run_dir, data_dir=data_dir, cache_dir=cache_dir,
                                   sinks=[*sinks, watch], resume=bool(args.resume), **extra)
        status = str(result.get("status", "completed"))
    except ValueError as exc:  # corpus files, device, masks...: the inputs were refused before training began
        if watch.started:
            raise
        _close_all(sinks, status)
        if not args.resume:
            _remove_new_run_dir(run_dir)
        source = str(args.spec or run_dir / "spec.yaml")
        message = str(exc)
        raise CliError(message if message.startswith(source) else f"{source}: {message}") from None
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        _close_all(sinks, status)  # the loop closes them; this covers errors before or outside the loop
    if status not in ("completed", "stopped"):  # always said, also with --quiet
        last = run_dir / "last.pt"
        kept = f"last good checkpoint: {last}" if last.is_file() else "no checkpoint (it stopped in the first epoch)"
        print(f"selfish: error: run {status}: {result.get('reason') or 'no reason given'}; {kept}", file=sys.stderr)
    if not args.quiet:
        summary = _read_json(run_dir / "summary.json")
        console.print(f"{status}: best val ppl {_num(summary.get('best_val_ppl'))}, "
                      f"test ppl {_num(summary.get('test_ppl'))}; run folder {run_dir}")
    return EXIT_OK if status in ("completed", "stopped") else EXIT_FAILURE


class _StartWatch:
    """A sink that only notes whether training began (the `start` event was emitted)."""

    def __init__(self) -> None:
        self.started = False

    def write(self, record: dict) -> None:
        self.started = self.started or record.get("type") == "start"

    def close(self, status: str) -> None:
        pass


def _close_all(sinks: Sequence[Any], status: str) -> None:
    for sink in sinks:
        try:
            sink.close(status)
        except Exception:  # noqa: BLE001 - a failing sink must not hide the real error
            pass


def _remove_new_run_dir(run_dir: Path) -> None:
    """Delete a run folder this command created for a run that never started, and its empty parents."""
    shutil.rmtree(run_dir, ignore_errors=True)
    stop = Path.cwd().resolve()
    for parent in run_dir.parents:
        if parent == stop or stop.is_relative_to(parent):
            break
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _num(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "-"


# ------------------------------------------------------------------------------------------------
# eval and describe


def cmd_eval(args: argparse.Namespace) -> int:
    target = Path(args.target)
    overrides = _parse_sets(args.set)
    if target.is_dir():
        spec = _spec_in_run_dir(target, overrides)
        checkpoint = Path(args.checkpoint) if args.checkpoint else next(
            (p for p in (target / "best.pt", target / "last.pt") if p.is_file()), target / "best.pt")
    elif target.is_file():
        spec = load_spec(target, overrides)
        if not args.checkpoint:
            raise CliError("eval SPEC needs --checkpoint PATH (or give a run folder)")
        checkpoint = Path(args.checkpoint)
    else:
        raise CliError(f"{target}: no such spec file or run folder")
    if not checkpoint.is_file():
        raise CliError(f"checkpoint not found: {checkpoint}")
    _set_threads(args)
    result = _experiment().evaluate(spec, checkpoint, data_dir=resolve_data_dir(spec),
                                    cache_dir=resolve_cache_dir())
    if args.json:
        print(json.dumps(_jsonable(result), indent=2))
    else:
        print(f"{spec.name}: {checkpoint}")
        nonzero = result.get("nonzero_weights")
        print(f"val ppl {_num(result.get('val_ppl'))} (loss {_num(result.get('val_loss'))}) | "
              f"test ppl {_num(result.get('test_ppl'))} (loss {_num(result.get('test_loss'))})"
              + (f" | {nonzero:,} non-zero weights" if isinstance(nonzero, int) else ""))
    return EXIT_OK


def _jsonable(value: Any) -> Any:
    from selfish.tracking import to_jsonable

    return to_jsonable(value)


def cmd_describe(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec, _parse_sets(args.set))
    _set_threads(args)
    info = _experiment().describe(spec, data_dir=resolve_data_dir(spec), cache_dir=resolve_cache_dir())
    if args.json:
        print(json.dumps(_jsonable(info), indent=2))
        return EXIT_OK
    _print_description(spec, info)
    return EXIT_OK


def _print_description(spec: Spec, info: Mapping[str, Any]) -> None:
    from rich.table import Table

    console = _console(stderr=False)
    console.rule("resolved spec", align="left")
    console.print(spec.to_yaml().rstrip(), highlight=False, markup=False)
    console.rule(align="left")
    console.print(f"[bold]{spec.name}[/bold]: {spec.model.type} on {spec.data.corpus}, "
                  f"{'sparse density ' + str(spec.sparse.density) if spec.sparse.enabled else 'dense'}")
    tensors = info.get("tensors") or []
    if tensors:
        table = Table(title="tensors", title_justify="left")
        for column in ("name", "shape", "numel", "nonzero", "density", "masked"):
            table.add_column(column, justify="left" if column == "name" else "right")
        for row in tensors:
            numel, nonzero = row.get("numel") or 0, row.get("nonzero")
            table.add_row(str(row.get("name")), "x".join(map(str, row.get("shape") or ())), f"{numel:,}",
                          f"{nonzero:,}" if nonzero is not None else "-",
                          f"{nonzero / numel:.4f}" if numel and nonzero is not None else "-",
                          "yes" if row.get("maskable") else "no")
        console.print(table)
    totals = Table(title="totals", title_justify="left")
    totals.add_column("quantity")
    totals.add_column("value", justify="right")
    for key in ("params_dense", "params_nonzero", "nominal_params_nonzero", "params_total", "density",
                "steps_per_epoch"):
        if info.get(key) is not None:
            value = info[key]
            totals.add_row(key, f"{value:.4f}" if isinstance(value, float) else f"{value:,}")
    for key, value in (info.get("flops") or {}).items():
        totals.add_row(f"flops.{key}", f"{value:.4g}" if isinstance(value, (int, float)) else str(value))
    console.print(totals)


# ------------------------------------------------------------------------------------------------
# from-flags: the original scripts' flags -> a spec


class _FlagParser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would exit; report as bad input instead
        raise CliError(f"from-flags: {message}")


def _add_sparse_flags(parser: argparse.ArgumentParser) -> None:
    """SR `sparse_rnn_core.add_sparse_args`, plus the README's `--sparse_init`."""
    parser.add_argument("--sparse", action="store_true")
    parser.add_argument("--sparse_init", default="uniform")
    parser.add_argument("--growth", default="random")
    parser.add_argument("--death", default="magnitude")
    parser.add_argument("--redistribution", default="none")
    parser.add_argument("--death-rate", dest="death_rate", type=float, default=0.5)
    parser.add_argument("--density", type=float, default=0.33)


def _main_py_parser() -> argparse.ArgumentParser:
    """SR `main.py` flags and defaults (stacked LSTM and RHN)."""
    p = _FlagParser(prog="main.py", add_help=False)
    p.add_argument("--data", default="data/penn/")
    p.add_argument("--model", default="LSTM")
    p.add_argument("--evaluate", default="")
    for flag, default in (("--emsize", 1500), ("--nhid", 1500), ("--nonmono", 5), ("--nlayers", 2),
                          ("--nrecurrence_depth", 10), ("--finetuning", 100), ("--epochs", 40),
                          ("--batch_size", 20), ("--eval_batch_size", 20), ("--bptt", 35), ("--seed", 1111),
                          ("--log-interval", 200)):
        p.add_argument(flag, type=int, default=default)
    for flag, default in (("--momentum", 0.9), ("--beta", 1.0), ("--lr", 15.0), ("--clip", 0.25),
                          ("--dropout", 0.65), ("--dropouth", 0.25), ("--dropouti", 0.65), ("--dropoute", 0.2),
                          ("--wdecay", 1.2e-6)):
        p.add_argument(flag, type=float, default=default)
    p.add_argument("--tied", action="store_true")
    p.add_argument("--couple", action="store_true")
    p.add_argument("--cuda", action="store_true")
    p.add_argument("--optimizer", default="sgd")
    p.add_argument("--testmodel", default="")
    p.add_argument("--save", default="")
    _add_sparse_flags(p)
    return p


def _onlstm_parser() -> argparse.ArgumentParser:
    """SR `ONLSTM/main_ONLSTM.py` flags and defaults."""
    p = _FlagParser(prog="main_ONLSTM.py", add_help=False)
    p.add_argument("--data", default="../data/penn/")
    p.add_argument("--model", default="LSTM")
    p.add_argument("--evaluate", default="")
    for flag, default in (("--emsize", 400), ("--nhid", 1150), ("--chunk_size", 10), ("--nlayers", 3),
                          ("--epochs", 8000), ("--batch_size", 80), ("--bptt", 70), ("--seed", 1111),
                          ("--nonmono", 5), ("--log-interval", 200), ("--finetuning", 500),
                          ("--finetuning2", 1000)):
        p.add_argument(flag, type=int, default=default)
    for flag, default in (("--lr", 15.0), ("--clip", 0.25), ("--dropout", 0.4), ("--dropouth", 0.25),
                          ("--dropouti", 0.5), ("--dropoute", 0.1), ("--wdrop", 0.4), ("--alpha", 2.0),
                          ("--beta", 1.0), ("--wdecay", 1.2e-6)):
        p.add_argument(flag, type=float, default=default)
    p.add_argument("--cuda", action="store_false")  # main_ONLSTM.py: CUDA is on unless --cuda is given
    p.add_argument("--save", default="")
    p.add_argument("--save_1000epoch", default="")
    p.add_argument("--resume", default="")
    p.add_argument("--optimizer", default="sgd")
    p.add_argument("--philly", action="store_true")
    _add_sparse_flags(p)
    return p


_ONLSTM_ONLY = ("--chunk_size", "--wdrop", "--alpha", "--finetuning2", "--philly", "--save_1000epoch", "--resume")
_CORPORA = {"penn": "ptb", "ptb": "ptb", "wikitext-2": "wikitext2", "wikitext2": "wikitext2"}


def _strip_command(tokens: Sequence[str]) -> tuple[str | None, list[str]]:
    """Drop a leading `python`, `cd ONLSTM`, script name; return (script or None, flags)."""
    tokens = [t for t in tokens if t not in ("\\",)]
    script = None
    while tokens and not tokens[0].startswith("--"):
        head = tokens.pop(0)
        if head.endswith("main_ONLSTM.py"):
            script = "main_ONLSTM.py"
        elif head.endswith("main.py"):
            script = "main.py"
    return script, tokens


def spec_from_flags(tokens: Sequence[str], script: str | None = None) -> tuple[dict, list[str]]:
    """Translate an original command line into a raw spec dict, with notes on flags that have no effect."""
    found, flags = _strip_command(tokens)
    script = script or found
    if script is None:
        script = "main_ONLSTM.py" if any(f.split("=")[0] in _ONLSTM_ONLY for f in flags) else "main.py"
    onlstm = script == "main_ONLSTM.py"
    a = (_onlstm_parser() if onlstm else _main_py_parser()).parse_args(flags)
    notes: list[str] = []
    corpus_dir = Path(a.data.rstrip("/"))
    corpus = _CORPORA.get(corpus_dir.name.lower())
    if corpus is None:
        raise CliError(f"from-flags: --data {a.data}: cannot tell the corpus (expected a penn/ or wikitext-2/ folder)")
    default_data = "../data/penn/" if onlstm else "data/penn/"
    data: dict[str, Any] = {"corpus": corpus, "batch_size": a.batch_size, "bptt": a.bptt}
    if a.data != default_data:
        data["dir"] = str(corpus_dir.parent)
        notes.append(f"--data {a.data}: data.dir is the folder holding {corpus_dir.name}/")
    if a.evaluate:
        notes.append(f"--evaluate {a.evaluate}: run `selfish eval <this spec> --checkpoint {a.evaluate}`")
    if a.optimizer not in ("sgd", "adam"):
        raise CliError(f"from-flags: --optimizer {a.optimizer}: the original knows sgd and adam")
    optim: dict[str, Any] = {"name": a.optimizer, "clip": a.clip, "wdecay": a.wdecay}
    if a.optimizer == "sgd":
        optim.update(lr=a.lr, nonmono=a.nonmono)
    else:
        optim["lr"] = 1e-3
        notes.append("--optimizer adam: the original ignores --lr and --nonmono (Adam lr 1e-3, plateau halving)")
    if onlstm:
        name = "onlstm"
        device = "auto" if a.cuda else "cpu"
        if not a.cuda:
            notes.append("--cuda in main_ONLSTM.py turns CUDA off (store_false): device cpu")
        data.update(eval_batch_size=10, test_batch_size=1, variable_bptt=True)
        model = {"type": "onlstm", "emsize": a.emsize, "nhid": a.nhid, "nlayers": a.nlayers,
                 "chunk_size": a.chunk_size, "dropout": a.dropout, "dropouth": a.dropouth,
                 "dropouti": a.dropouti, "dropoute": a.dropoute, "wdrop": a.wdrop, "tied": True}
        optim.update(alpha=a.alpha, beta=a.beta)
        if a.optimizer == "sgd":
            optim["finetuning"] = sorted({a.finetuning, a.finetuning2})
        for flag in ("resume", "philly"):
            if getattr(a, flag):
                notes.append(f"--{flag}: no effect here (runs resume with `selfish train --resume RUN_DIR`)")
    else:
        if a.model not in ("LSTM", "RHN"):
            raise CliError(f"from-flags: --model {a.model}: main.py knows LSTM and RHN")
        name = a.model.lower()
        device = "auto" if a.cuda else "cpu"
        data["eval_batch_size"] = a.eval_batch_size
        model = {"type": name, "emsize": a.emsize, "nhid": a.nhid, "nlayers": a.nlayers,
                 "dropout": a.dropout, "tied": a.tied}
        rhn_only = {"dropouth": a.dropouth, "dropouti": a.dropouti, "dropoute": a.dropoute,
                    "recurrence_depth": a.nrecurrence_depth, "couple": a.couple}
        if name == "rhn":
            model.update(rhn_only)
        else:
            defaults = {"dropouth": 0.25, "dropouti": 0.65, "dropoute": 0.2, "recurrence_depth": 10, "couple": False}
            unused = [k for k, v in rhn_only.items() if v != defaults[k]]
            if unused:
                notes.append(f"{', '.join(unused)}: not used by --model LSTM in main.py (dropped)")
        if a.momentum != 0.9:
            notes.append("--momentum: unused by main.py (its SGD has no momentum)")
        if a.finetuning != 100 or a.beta != 1.0:
            notes.append("--finetuning/--beta: unused by main.py")
    if a.save:
        notes.append("--save: checkpoints go to the run folder (runs/<name>/<run id>/best.pt)")
    sparse: dict[str, Any] = {}
    if a.sparse:
        sparse = {"enabled": True, "init": a.sparse_init, "density": a.density, "death": a.death,
                  "growth": a.growth, "redistribution": a.redistribution, "death_rate": a.death_rate}
    spec = {"name": f"{name}_{corpus}" + ("" if a.sparse else "_dense"),
            "seed": a.seed, "device": device, "data": data, "model": model, "sparse": sparse, "optim": optim,
            "train": {"epochs": a.epochs, "log_interval": a.log_interval}}
    return spec, notes


def cmd_from_flags(args: argparse.Namespace) -> int:
    flags = list(args.flags)
    if flags and flags[0] == "--":
        flags = flags[1:]
    if not flags:
        raise CliError("from-flags: give the original flags after `--`")
    raw, notes = spec_from_flags(flags, args.script)
    spec = spec_from_dict(raw, source="from-flags")
    header = ["# Converted by `selfish from-flags` from:", "#   " + " ".join(flags)]
    header += [f"# note: {note}" for note in notes]
    print("\n".join(header))
    print(spec.to_yaml(), end="")
    return EXIT_OK


# ------------------------------------------------------------------------------------------------
# Parser and main

Registrar = Callable[[Any], None]


def register_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train one spec into a new run folder (or continue one)")
    p.add_argument("spec", nargs="?", help="spec YAML file")
    p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override a spec key (repeatable)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR with its saved spec")
    p.add_argument("--run-dir", metavar="DIR", help="exact run folder (default runs/<name>/<run id>)")
    p.add_argument("--quiet", action="store_true", help="no terminal progress")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: all cores)")
    p.set_defaults(func=cmd_train)


def register_eval(sub: Any) -> None:
    p = sub.add_parser("eval", help="val/test perplexity of a checkpoint (ours or the original's state_dict)")
    p.add_argument("target", metavar="SPEC|RUN_DIR")
    p.add_argument("--checkpoint", metavar="PATH", help="default: RUN_DIR/best.pt")
    p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE")
    p.add_argument("--json", action="store_true")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: all cores)")
    p.set_defaults(func=cmd_eval)


def register_describe(sub: Any) -> None:
    p = sub.add_parser("describe", help="parameter counts (dense, non-zero), FLOPs, steps per epoch; no training")
    p.add_argument("spec")
    p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE")
    p.add_argument("--json", action="store_true")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: all cores)")
    p.set_defaults(func=cmd_describe)


def register_from_flags(sub: Any) -> None:
    p = sub.add_parser("from-flags", help="print the spec equivalent to the original main.py flags")
    p.add_argument("--script", choices=("main.py", "main_ONLSTM.py"),
                   help="which original script (default: from the command, else main.py)")
    p.add_argument("flags", nargs=argparse.REMAINDER, help="-- FLAGS... (a leading `python main.py` is fine)")
    p.set_defaults(func=cmd_from_flags)


REGISTRARS: list[Registrar] = [register_train, register_eval, register_describe, register_from_flags]


def build_parser(load_extensions: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="selfish", description="Selfish Sparse RNN Training: experiments")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in REGISTRARS:
        register(sub)
    for module_name in EXTENSION_MODULES if load_extensions else ():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                continue  # that extension is not there (yet)
            print(f"selfish: warning: {module_name} not loaded ({exc})", file=sys.stderr)
            continue
        register = getattr(module, "register_commands", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if not debug:  # one plain line per warning (a damaged checkpoint, W&B off), not a source listing
        warnings.formatwarning = _format_warning
    try:
        first = next((a for a in argv if not a.startswith("-")), None)
        builtin = {"train", "eval", "describe", "from-flags"}
        parser = build_parser(load_extensions=first not in builtin)  # extensions import optuna etc.
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
            return int(exc.code or 0)
        return int(args.func(args))
    except KeyboardInterrupt:
        print("selfish: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place errors become exit codes
        if debug:
            raise
        bad_input = isinstance(exc, _bad_input_types())
        message = str(exc) if bad_input else f"{type(exc).__name__}: {exc}"
        lines = message.splitlines() or [type(exc).__name__]
        print(f"selfish: error: {lines[0]}", file=sys.stderr)
        for line in lines[1:]:  # a spec can have several problems; each is one line
            print(f"selfish: error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT if bad_input else EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
