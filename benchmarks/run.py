"""``python -m benchmarks.run [--only NAME ...] [--quick] [--out DIR]`` (``make bench``).

Runs the benchmarks one after another in this process (``torch.set_num_threads(2)``), writes
``<out>/<name>.json`` for each and regenerates ``<out>/README.md`` from every JSON file there. The data
folder for the corpus and sweep benchmarks is ``--data``, else ``SELFISH_DATA``, else /work/shared/data.
``--quick`` is a smoke mode (toy sizes, seconds); its results go to a temporary folder unless ``--out``
is given, so they never overwrite the committed full results.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from benchmarks.common import (
    RESULTS_DIR,
    THREADS,
    Scale,
    machine_info,
    make_scale,
    regenerate_readme,
    write_json,
)

BENCHMARKS = {  # name -> module; run in this order
    "training": "benchmarks.bench_training",
    "asgd": "benchmarks.bench_asgd",
    "mask_update": "benchmarks.bench_mask_update",
    "flops": "benchmarks.bench_flops",
    "corpus": "benchmarks.bench_corpus",
    "sweep": "benchmarks.bench_sweep",
    "model_cells": "benchmarks.bench_model_cells",
}
DEFAULT_DATA = Path("/work/shared/data")


def run_benchmark(name: str, scale: Scale, out_dir: Path | None = None) -> dict:
    """Run one benchmark; returns its result dict (and writes ``<out_dir>/<name>.json`` when given)."""
    module = importlib.import_module(BENCHMARKS[name])
    torch.set_num_threads(scale.threads)
    machine = machine_info(scale.threads)
    start = time.perf_counter()
    try:
        body = module.run(scale)
    except Exception as exc:  # report, do not hide: the JSON says what broke
        body = {"cases": [], "notes": [], "skipped": [f"benchmark failed: {type(exc).__name__}: {exc}"],
                "traceback": traceback.format_exc()}
    machine["load_average_end"] = machine_info(scale.threads)["load_average"]
    result = {
        "name": module.NAME,
        "title": module.TITLE,
        "scale": scale.name,
        "machine": machine,
        "duration_s": time.perf_counter() - start,
        **body,
    }
    if out_dir is not None:
        write_json(result, out_dir)
    return result


def _summary_line(result: dict) -> str:
    parts = [f"{result['name']}: {result['duration_s']:.1f} s"]
    for c in result["cases"]:
        met = {True: "ok", False: "MISSED", None: ""}[c.get("meets_target")]
        parts.append(f"  {c['case']}: ratio {c['ratio']:.3f} ({c['ratio_means']}) {c.get('target') or ''} {met}")
    parts += [f"  not run: {s}" for s in result.get("skipped", [])]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME",
                        help=f"run only these ({', '.join(BENCHMARKS)})")
    parser.add_argument("--quick", action="store_true", help="smoke mode: toy sizes, seconds")
    parser.add_argument("--scale", choices=["full", "quick", "tiny"], help="explicit scale (overrides --quick)")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results; --quick: a temp folder)")
    parser.add_argument("--data", type=Path, help="corpora folder (default $SELFISH_DATA or /work/shared/data)")
    parser.add_argument("--threads", type=int, default=THREADS)
    args = parser.parse_args(argv)

    scale_name = args.scale or ("tiny" if args.quick else "full")
    data_dir = args.data or Path(os.environ.get("SELFISH_DATA") or DEFAULT_DATA)
    scale = make_scale(scale_name, data_dir=data_dir if data_dir.is_dir() else None, threads=args.threads)
    out_dir = args.out or (RESULTS_DIR if scale_name == "full" else Path(tempfile.mkdtemp(prefix="selfish-bench-")))
    names = args.only or list(BENCHMARKS)
    print(f"benchmarks {names} at scale {scale_name}, {scale.threads} threads, results -> {out_dir}", flush=True)
    for name in names:
        result = run_benchmark(name, scale, out_dir)
        print(_summary_line(result), flush=True)
        if "traceback" in result:
            print(result["traceback"], file=sys.stderr)
    readme = regenerate_readme(out_dir, order=list(BENCHMARKS))
    print(f"wrote {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
