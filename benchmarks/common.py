"""Shared pieces of the benchmarks: scales, interleaved timing, machine record, results I/O.

Every benchmark runs its cases in one process and reports each case as a ratio to a baseline measured
beside it: the machine is shared, so absolute times drift, but A/B interleaved over repeats (with the
order alternating, ABBA...) and reduced by the median is stable enough to compare with a budget.

A benchmark module exposes ``NAME``, ``TITLE`` and ``run(scale: Scale) -> dict`` returning
``{"cases": [case, ...], "notes": [...], "skipped": [...]}``; :func:`benchmarks.run.run_benchmark`
adds the machine record and timing and writes ``<out>/<NAME>.json``. A case is a flat dict made by
:func:`case` (fields: ``case``, ``metric``, ``value``, ``baseline``, ``unit``, ``ratio``, ``ratio_means``,
``target``, ``meets_target``, ``details``).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

RESULTS_DIR = Path(__file__).parent / "results"
THREADS = 2


@dataclass(frozen=True)
class Scale:
    """How big a run is. ``full``: the paper sizes the targets are about; ``quick``: the same models with
    fewer repeats and the 2x1500 cases shrunk; ``tiny``: toy sizes for the tests (seconds in all)."""

    name: str
    repeats: int  # timed rounds per case at least (after one warm-up round)
    batches: int  # training batches per timed round
    budget_s: float | None = None  # cheap cases get more rounds, as many as fit in this (see interleaved)
    data_dir: Path | None = None  # real corpora (PTB / WT2) for the corpus benchmark
    threads: int = THREADS

    @property
    def tiny(self) -> bool:
        return self.name == "tiny"


SCALES = {
    "full": dict(repeats=5, batches=2, budget_s=6.0),
    "quick": dict(repeats=2, batches=1),
    "tiny": dict(repeats=2, batches=1),
}


def make_scale(name: str, data_dir: Path | None = None, threads: int = THREADS) -> Scale:
    if name not in SCALES:
        raise ValueError(f"unknown scale {name!r}; allowed: {', '.join(SCALES)}")
    return Scale(name=name, data_dir=data_dir, threads=threads, **SCALES[name])


# ------------------------------------------------------------------------------------------------ timing
def interleaved(
    cases: Mapping[str, Callable[[], float | None]],
    repeats: int,
    warmup: int = 1,
    budget_s: float | None = None,
    max_repeats: int = 30,
) -> dict[str, list[float]]:
    """Run each case once per round, ``warmup`` untimed rounds then ``repeats`` timed ones.

    A case callable does one unit of work and returns the seconds it wants counted (or ``None``: its
    own wall time is used). The order alternates every round (A B, B A, ...) so a drift in machine
    load hits every case alike. With ``budget_s``, cheap cases get more rounds: as many as fit in
    ``budget_s`` at the warm-up's pace, at least ``repeats`` and at most ``max_repeats``.
    Returns the timed seconds per case.
    """
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}

    def one_round(round_index: int, keep: bool) -> None:
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            start = time.perf_counter()
            counted = cases[name]()
            elapsed = time.perf_counter() - start if counted is None else counted
            if keep:
                times[name].append(float(elapsed))

    start = time.perf_counter()
    for round_index in range(warmup):
        one_round(round_index, keep=False)
    if budget_s is not None and warmup > 0:
        per_round = (time.perf_counter() - start) / warmup
        repeats = max(repeats, min(max_repeats, int(budget_s / max(per_round, 1e-9))))
    for round_index in range(warmup, warmup + repeats):
        one_round(round_index, keep=True)
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float], resamples: int = 2000) -> dict:
    """Median of the per-round ratios ``numerators[i] / denominators[i]`` with a 95% bootstrap interval.

    The two cases of a round ran back to back, so a load change between rounds cancels in their ratio:
    the median of the paired ratios is steadier than a ratio of medians. The bootstrap (seeded, so the
    same times give the same interval) resamples rounds with replacement.
    """
    ratios = [n / d for n, d in zip(numerators, denominators, strict=True)]
    rng = random.Random(0)
    medians = sorted(median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples))
    low, high = medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]
    return {"median": median(ratios), "ci95": [low, high], "n": len(ratios)}


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max and the relative half-range (how noisy the repeats were)."""
    mid = median(values)
    return {
        "median": mid,
        "min": float(min(values)),
        "max": float(max(values)),
        "rel_spread": float((max(values) - min(values)) / (2 * mid)) if mid > 0 else math.nan,
        "n": len(values),
    }


def case(
    name: str,
    metric: str,
    *,
    value: float,
    baseline: float,
    unit: str,
    ratio: float,
    ratio_means: str,
    target: str | None = None,
    meets_target: bool | None = None,
    **details: Any,
) -> dict:
    """One row of a benchmark: ``value`` and ``baseline`` in ``unit``; ``ratio`` explained by ``ratio_means``."""
    return {
        "case": name,
        "metric": metric,
        "value": float(value),
        "baseline": float(baseline),
        "unit": unit,
        "ratio": float(ratio),
        "ratio_means": ratio_means,
        "target": target,
        "meets_target": meets_target,
        "details": details,
    }


# ------------------------------------------------------------------------------------------ environment
def machine_info(threads: int) -> dict[str, Any]:
    """Cores, torch version and threads, date, load average at the start of a benchmark."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not on every platform
        load = None
    return {
        "cores": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "load_average": load,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ----------------------------------------------------------------------------------------- model specs
def lstm_spec(
    nhid: int,
    nlayers: int = 2,
    *,
    sparse: bool,
    density: float = 0.33,
    death_rate: float = 0.8,
    batch_size: int = 20,
    bptt: int = 35,
    steps: int = 1,
    dropout: float = 0.65,
    seed: int = 1111,
) -> dict:
    """A resolved experiment spec (plain dict, as ``selfish.experiment.build`` takes) for the paper's
    stacked LSTM (untied, emsize = nhid), magnitude death + random growth, uniform init (spec §2, §3)."""
    return {
        "name": f"bench_lstm_{nlayers}x{nhid}_{'sparse' if sparse else 'dense'}",
        "seed": seed,
        "device": "cpu",
        "data": {"corpus": "ptb", "batch_size": batch_size, "eval_batch_size": batch_size, "test_batch_size": None,
                 "bptt": bptt, "variable_bptt": False, "max_seq_len_delta": None},
        "model": {"type": "lstm", "emsize": nhid, "nhid": nhid, "nlayers": nlayers, "dropout": dropout,
                  "tied": False},
        "sparse": {"enabled": sparse, "init": "uniform", "density": density, "death": "magnitude",
                   "growth": "random", "redistribution": "none", "death_rate": death_rate, "death_rate_min": 0.005,
                   "decay": "cosine", "update_every": "epoch", "growth_count": "bernoulli", "include": [],
                   "exclude": [], "update_in_switch_epoch": False},
        "optim": {"name": "sgd", "lr": 20.0, "clip": 0.25, "wdecay": 1.2e-6, "nonmono": 5, "momentum": 0.0,
                  "asgd": True, "alpha": 0.0, "beta": 0.0, "finetuning": [], "when": []},
        "train": {"epochs": 40, "max_steps_per_epoch": steps, "log_interval": 10_000, "checkpoint": False},
    }


def random_corpus(vocab_size: int, n_train: int, n_eval: int = 1000, seed: int = 0) -> SimpleNamespace:
    """Uniform random token streams (timing does not depend on the tokens): ``.train/.valid/.test``
    LongTensors and ``.vocab_size``, the duck type ``selfish.experiment.build`` accepts as a corpus."""
    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(
        train=torch.randint(0, vocab_size, (n_train,), generator=g),
        valid=torch.randint(0, vocab_size, (n_eval,), generator=g),
        test=torch.randint(0, vocab_size, (n_eval,), generator=g),
        vocab_size=vocab_size,
    )


def build_trainer(spec: dict, corpus: Any):
    """``selfish.experiment.build`` on the CPU with no sinks and no checkpoints."""
    from selfish import experiment

    return experiment.build(spec, data_dir=None, cache_dir=Path("/nonexistent"), corpus=corpus,
                            device=torch.device("cpu"))


def missing_piece(exc: BaseException) -> str:
    """A one-line reason for a case that could not run because a module has not landed yet."""
    return f"{type(exc).__name__}: {exc}"


# ----------------------------------------------------------------------------------------- results I/O
def write_json(result: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{result['name']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=False, default=_jsonable) + "\n")
    tmp.replace(path)
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _fmt(value: float | None, unit: str = "") -> str:
    """A short human form: seconds as s/ms/us, other units with k/M/G prefixes."""
    if value is None or not math.isfinite(value):
        return "-"
    if unit == "s" and abs(value) < 1:
        return f"{value * 1e3:.3g} ms" if abs(value) >= 1e-3 else f"{value * 1e6:.3g} us"
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if abs(value) >= factor:
            divided = value / (factor if prefix != "k" else 1e3)
            return f"{divided:.3g} {prefix}{unit}".strip()
    return f"{value:.3g} {unit}".strip()


def markdown_table(result: dict) -> str:
    """One Markdown section for a benchmark result."""
    m = result.get("machine", {})
    lines = [
        f"### {result.get('title', result['name'])} (`{result['name']}`)",
        "",
        f"{m.get('date', '?')} · {m.get('cores', '?')} cores, {m.get('threads', '?')} threads, torch "
        f"{m.get('torch', '?')} · load average at start {m.get('load_average')}, at end {m.get('load_average_end')} · scale `{result.get('scale')}` · "
        f"{result.get('duration_s', 0):.0f} s",
        "",
    ]
    if result.get("cases"):
        lines += [
            "| case | measured | baseline | ratio | ratio means | target | met |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in result["cases"]:
            met = {True: "yes", False: "**no**", None: "-"}[c.get("meets_target")]
            ci = c.get("details", {}).get("ratio_ci95")
            ratio = f"{c['ratio']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
            lines.append(
                f"| {c['case']} | {_fmt(c['value'], c['unit'])} | {_fmt(c['baseline'], c['unit'])} | "
                f"{ratio} | {c['ratio_means']} | {c.get('target') or '-'} | {met} |"
            )
        lines.append("")
    for note in result.get("notes", []):
        lines.append(f"- {note}")
    for skipped in result.get("skipped", []):
        lines.append(f"- not run: {skipped}")
    lines.append("")
    return "\n".join(lines)


def regenerate_readme(out_dir: Path, order: Sequence[str] = ()) -> Path:
    """Rewrite ``<out_dir>/README.md`` from every ``*.json`` result in ``out_dir``: the names in ``order``
    first, in that order, then the rest by name. Files of another schema (no ``cases``) are skipped."""
    results = []
    for path in sorted(out_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and "cases" in data and "name" in data:
            results.append(data)
    parts = [
        "# Benchmark results",
        "",
        "Generated by `python -m benchmarks.run` (`make bench`) from the JSON files in this folder; do not edit.",
        "Each case is a median over interleaved repeats and a ratio to a baseline measured in the same process;",
        "where a ratio shows [low, high], it is the median of per-round paired ratios with its 95% bootstrap interval.",
        "",
    ]
    rank = {name: i for i, name in enumerate(order)}
    results.sort(key=lambda r: (rank.get(r["name"], len(rank)), r["name"]))
    parts += [markdown_table(r) for r in results]
    readme = out_dir / "README.md"
    readme.write_text("\n".join(parts))
    return readme
