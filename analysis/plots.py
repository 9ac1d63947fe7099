"""Matplotlib figures for the report. Figures are built with `matplotlib.figure.Figure` and the Agg canvas
(no pyplot, no global backend switch), so plotting is thread-safe and never opens a window.

Colour code used everywhere: dense runs dark grey (dashed reference lines), sparse runs a qualitative
palette (one colour per run, the same in every figure), sweep trials blue, paper numbers red stars.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

DENSE_COLOR = "#333333"
PAPER_COLOR = "#d62728"
TRIAL_COLOR = "#4c72b0"
SPARSE_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
                  "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5")
FAMILY_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "h")

STYLE = {
    "font.size": 10.5, "axes.titlesize": 12, "axes.titleweight": "bold", "axes.labelsize": 10.5,
    "xtick.labelsize": 9.5, "ytick.labelsize": 9.5, "legend.fontsize": 9, "legend.frameon": False,
    "axes.grid": True, "grid.alpha": 0.3, "grid.linestyle": "-", "axes.spines.top": False,
    "axes.spines.right": False, "figure.titlesize": 13, "figure.titleweight": "bold",
}


def new_figure(width: float, height: float) -> Figure:
    """A Figure on its own Agg canvas; size in inches."""
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: Path, dpi: int = 110) -> bytes:
    """Write the figure as PNG to `path` and return the bytes."""
    buffer = io.BytesIO()
    with matplotlib.rc_context(STYLE):
        fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    data = buffer.getvalue()
    Path(path).write_bytes(data)
    return data


def assign_colors(summary: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """run key -> colour: dense grey, sweep-trial runs blue, other sparse runs palette colours in order of
    (family, density)."""
    colors: dict[str, str] = {}
    for row in summary:
        if row.get("sweep"):
            colors[row["run"]] = TRIAL_COLOR
    sparse = sorted((r for r in summary if r["kind"] == "sparse" and not r.get("sweep")),
                    key=lambda r: (r["family"], r["density"] if r["density"] is not None else 2.0, r["run"]))
    for index, row in enumerate(sparse):
        colors[row["run"]] = SPARSE_PALETTE[index % len(SPARSE_PALETTE)]
    for row in summary:
        colors.setdefault(row["run"], DENSE_COLOR)
    return colors


def run_label(row: Mapping[str, Any]) -> str:
    """Legend label: experiment, density, and the status when it did not complete."""
    density = row.get("density")
    text = row["experiment"]
    if row["kind"] == "sparse" and density is not None:
        text += f" (d={density:.2f})"
    elif row["kind"] == "dense":
        text += " (dense)"
    if row.get("status") not in ("completed", None):
        text += f" [{row['status']}]"
    return text


def human(value: float, _pos: Any = None) -> str:
    """Tick label: 140, 2.5k, 1.2M, 3G, 1e+12 (no 10^x notation)."""
    if value == 0:
        return "0"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}" if abs(value) < 1e3 * scale else f"{value:.0e}"
    return f"{value:g}"


def log_axis(axis: Any, span: float = 100.0) -> None:
    """Readable log axis: plain labels at 1, 2, 5 x 10^k (denser when the data `span` = max/min is
    small), no minor labels."""
    subs = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0) if span < 12 else (1.0, 2.0, 5.0)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(human))
    axis.set_minor_locator(LogLocator(base=10, subs=tuple(float(k) for k in range(2, 10) if k not in subs)))
    axis.set_minor_formatter(NullFormatter())


def _maybe_log_y(ax: Any, values: Sequence[float]) -> None:
    finite = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if finite and max(finite) / min(finite) > 3:
        ax.set_yscale("log")
        log_axis(ax.yaxis, max(finite) / min(finite))


def _note_empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#777777", fontsize=10)


def plot_curves(family: str, summary: Sequence[Mapping[str, Any]], epochs: Sequence[Mapping[str, Any]],
                colors: Mapping[str, str]) -> Figure:
    """Validation perplexity per epoch (test perplexity as a star at the best epoch) and training perplexity
    per epoch, every run of one family on shared axes, dense dashed grey."""
    with matplotlib.rc_context(STYLE):
        fig = new_figure(12.5, 4.9)
        ax_val, ax_train = fig.subplots(1, 2)
        by_run: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for row in epochs:
            by_run[row["run"]].append(row)
        all_val, all_train = [], []
        trials_labelled = False
        for row in summary:
            rows = by_run.get(row["run"], [])
            style = {"color": colors[row["run"]], "linestyle": "--" if row["kind"] == "dense" else "-",
                     "linewidth": 1.8, "marker": "o" if len(rows) <= 30 else None, "markersize": 3}
            if row.get("sweep"):  # many sweep-trial runs: thin, translucent, one legend entry
                x = [r["epoch"] for r in rows if r["val_ppl"] is not None]
                y = [r["val_ppl"] for r in rows if r["val_ppl"] is not None]
                n_trials = sum(1 for r in summary if r.get("sweep"))
                label = None if trials_labelled else f"sweep trial runs ({n_trials})"
                ax_val.plot(x, y, color=TRIAL_COLOR, linewidth=0.9, alpha=0.45, label=label, zorder=1)
                xt = [r["epoch"] for r in rows if r["train_ppl"] is not None]
                yt = [r["train_ppl"] for r in rows if r["train_ppl"] is not None]
                ax_train.plot(xt, yt, color=TRIAL_COLOR, linewidth=0.9, alpha=0.45, zorder=1)
                all_val += y
                all_train += yt
                trials_labelled = True
                continue
            x = [r["epoch"] for r in rows if r["val_ppl"] is not None]
            y = [r["val_ppl"] for r in rows if r["val_ppl"] is not None]
            label = run_label(row) + (f" · test {row['test_ppl']:.2f}" if row.get("test_ppl") is not None else "")
            ax_val.plot(x, y, label=label, **style)
            all_val += y
            xt = [r["epoch"] for r in rows if r["train_ppl"] is not None]
            yt = [r["train_ppl"] for r in rows if r["train_ppl"] is not None]
            ax_train.plot(xt, yt, label=run_label(row), **style)
            all_train += yt
            if row.get("test_ppl") is not None:
                at = row.get("best_epoch") or (x[-1] if x else 0)
                ax_val.plot([at], [row["test_ppl"]], marker="*", markersize=13, color=colors[row["run"]],
                            markeredgecolor="black", markeredgewidth=0.6, linestyle="none")
                all_val.append(row["test_ppl"])
        for ax, title, values in ((ax_val, "validation perplexity (★ = test perplexity)", all_val),
                                  (ax_train, "training perplexity", all_train)):
            ax.set_title(title, fontsize=11, fontweight="normal")
            ax.set_xlabel("epoch")
            ax.set_ylabel("perplexity")
            if values:
                _maybe_log_y(ax, values)
            else:
                _note_empty(ax, "no epochs recorded yet")
        handles, labels = ax_val.get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncol=min(len(handles), 3))
        fig.suptitle(f"{family}: perplexity per epoch, sparse vs dense")
    return fig


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Non-dominated points (smaller x and smaller y are both better), sorted by x."""
    front: list[tuple[float, float]] = []
    best = math.inf
    for x, y in sorted(points):
        if y < best:
            front.append((x, y))
            best = y
    return front


def plot_pareto(points: Sequence[Mapping[str, Any]], paper: Sequence[Mapping[str, Any]],
                colors: Mapping[str, str]) -> Figure:
    """Best validation perplexity against density, nonzero parameters and training FLOPs for runs and
    sweep trials; dense runs as horizontal reference lines; the paper's numbers as red stars (density
    panel only: the paper gives no parameter/FLOP counts for its sparse models).

    Each point: `run`, `family`, `kind` (`sparse`|`dense`|`trial`), `label`, `density`, `params_nonzero`,
    `train_flops`, `val_ppl`."""
    families = sorted({p["family"] for p in points if p["kind"] != "trial"})
    marker = {fam: FAMILY_MARKERS[i % len(FAMILY_MARKERS)] for i, fam in enumerate(families)}
    axes_spec = (("density", "density (nonzero / total weights of sparse tensors)", False, "vs density"),
                 ("params_nonzero", "nonzero parameters (log scale)", True, "vs nonzero parameters"),
                 ("train_flops", "training FLOPs, whole run (log scale)", True, "vs training FLOPs"))
    with matplotlib.rc_context(STYLE):
        fig = new_figure(13.5, 5.0)
        axes = fig.subplots(1, 3, sharey=True)
        for ax, (key, xlabel, log_x, title) in zip(axes, axes_spec, strict=True):
            plotted = 0
            dense_seen: set[str] = set()
            by_family: dict[str, list[tuple[float, float]]] = defaultdict(list)
            for p in points:
                if p.get("val_ppl") is None:
                    continue
                if p["kind"] == "dense" and p["run"] not in dense_seen:
                    dense_seen.add(p["run"])
                    ax.axhline(p["val_ppl"], color=DENSE_COLOR, linestyle="--", linewidth=1.1, alpha=0.8)
                    ax.annotate(f"dense {p['label']}: {p['val_ppl']:.1f}", (0.01, p["val_ppl"]),
                                xycoords=("axes fraction", "data"), xytext=(0, 3), textcoords="offset points",
                                fontsize=8, color=DENSE_COLOR)
                x = p.get(key)
                if x is None:
                    continue
                by_family[p["family"]].append((float(x), float(p["val_ppl"])))
                if p["kind"] == "trial":
                    ax.scatter([x], [p["val_ppl"]], s=30, marker=marker.get(p["family"], "o"), facecolors="none",
                               edgecolors=TRIAL_COLOR, linewidths=1.2, alpha=0.85, zorder=3)
                else:
                    ax.scatter([x], [p["val_ppl"]], s=55, marker=marker[p["family"]], color=colors[p["run"]],
                               edgecolors="black", linewidths=0.5, zorder=4)
                plotted += 1
            for pts in by_family.values():
                front = pareto_front(pts)
                if len(front) > 1:
                    fx, fy = zip(*front, strict=True)
                    ax.step(fx, fy, where="post", color="#999999", linewidth=1, alpha=0.8, zorder=2)
            if key == "density":
                for ref in paper:
                    ax.scatter([ref["density"]], [ref["val_ppl"]], s=150, marker="*", color=PAPER_COLOR,
                               edgecolors="black", linewidths=0.5, zorder=5)
                    ax.annotate(f"paper {ref['label'].replace('Selfish ', '')}", (ref["density"], ref["val_ppl"]),
                                xytext=(7, 2), textcoords="offset points", fontsize=7.5, color=PAPER_COLOR)
                    plotted += 1
                ax.set_xlim(0, 1.05)
            if log_x and plotted:
                ax.set_xscale("log")
                log_axis(ax.xaxis)
            if not plotted:
                _note_empty(ax, f"no runs with {key.replace('_', ' ')}")
            ax.set_xlabel(xlabel)
            ax.set_title(f"perplexity {title}", fontsize=11, fontweight="normal")
        axes[0].set_ylabel("best validation perplexity")
        all_y = [p["val_ppl"] for p in points if p.get("val_ppl") is not None] + [r["val_ppl"] for r in paper]
        if all_y:
            _maybe_log_y(axes[0], all_y)
        # one legend for the encoding (colour = kind, shape = family)
        handles = [Line2D([], [], marker="o", color="w", markerfacecolor=SPARSE_PALETTE[0], markeredgecolor="k",
                          markersize=8, label="our sparse run"),
                   Line2D([], [], color=DENSE_COLOR, linestyle="--", label="our dense run (reference)"),
                   Line2D([], [], marker="o", color="w", markerfacecolor="none", markeredgecolor=TRIAL_COLOR,
                          markersize=7, label="sweep trial"),
                   Line2D([], [], color="#999999", label="Pareto front (ours)")]
        if paper:
            handles.append(Line2D([], [], marker="*", color="w", markerfacecolor=PAPER_COLOR, markeredgecolor="k",
                                  markersize=13, label="paper, full scale"))
        handles += [Line2D([], [], marker=marker[f], color="w", markerfacecolor="#bbbbbb", markeredgecolor="k",
                           markersize=7, label=f"family {f}") for f in families]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6))
        fig.suptitle("Sparsity trade-off: perplexity against density, nonzero parameters and training FLOPs")
    return fig


def plot_gate_heatmap(run_title: str, rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Per-gate density over epochs, one heatmap per tensor (gates x epochs), shared colour scale.
    Shows tensors with more than one gate (the recurrent ones); all tensors if none has gates."""
    tensors: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        if row["density"] is not None:
            tensors[row["tensor"]][row["gate"]][row["epoch"]] = row["density"]
    chosen = [t for t in tensors if len(tensors[t]) > 1] or list(tensors)
    epochs = sorted({e for t in chosen for g in tensors[t].values() for e in g})
    values = [v for t in chosen for g in tensors[t].values() for v in g.values()]
    vmin, vmax = (min(values), max(values)) if values else (0.0, 1.0)
    if vmax - vmin < 1e-6:
        vmin, vmax = vmin - 0.01, vmax + 0.01
    n_cols = 2 if len(chosen) > 1 else 1
    n_rows = max(1, math.ceil(len(chosen) / n_cols))
    with matplotlib.rc_context(STYLE):
        fig = new_figure(13 if n_cols == 2 else 8, 0.6 + 2.0 * n_rows)
        axes = np.atleast_1d(fig.subplots(n_rows, n_cols, squeeze=False)).ravel()
        image = None
        for ax, tensor in zip(axes, chosen, strict=False):
            gates = list(tensors[tensor])
            grid = np.full((len(gates), len(epochs)), np.nan)
            for i, gate in enumerate(gates):
                for j, epoch in enumerate(epochs):
                    grid[i, j] = tensors[tensor][gate].get(epoch, np.nan)
            image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_yticks(range(len(gates)), gates)
            step = max(1, math.ceil(len(epochs) / 15))
            ax.set_xticks(range(0, len(epochs), step), [str(epochs[j]) for j in range(0, len(epochs), step)])
            ax.set_xlabel("epoch")
            ax.set_ylabel("gate")
            ax.set_title(tensor, fontsize=10.5, fontweight="normal", family="monospace")
            ax.grid(False)
            if len(epochs) <= 12 and len(gates) <= 8:
                for i in range(len(gates)):
                    for j in range(len(epochs)):
                        if not np.isnan(grid[i, j]):
                            bright = (grid[i, j] - vmin) / (vmax - vmin) > 0.6
                            ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", fontsize=7.5,
                                    color="black" if bright else "white")
        for ax in axes[len(chosen):]:
            ax.set_visible(False)
        if image is not None:
            fig.colorbar(image, ax=list(axes[:len(chosen)]), label="density after update (nonzero / numel)",
                         shrink=0.9)
        else:
            _note_empty(axes[0], "no per-gate statistics")
        fig.suptitle(f"{run_title}: per-gate density over epochs (cell-weight redistribution)")
    return fig


def plot_mask_dynamics(family: str, summary: Sequence[Mapping[str, Any]], epochs: Sequence[Mapping[str, Any]],
                       colors: Mapping[str, str]) -> Figure:
    """Removed and regrown weights, mask turnover, exploration rate and death rate per epoch for the sparse
    runs of one family."""
    by_run: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in epochs:
        by_run[row["run"]].append(row)
    panels = (("removed", "weights removed (solid) / regrown (dashed)", "weights per update"),
              ("turnover", "mask turnover |M_t xor M_t-1| / 2 nnz", "fraction of active weights"),
              ("exploration_rate", "exploration rate (ever active / numel)", "fraction of weights"),
              ("death_rate", "death (prune) rate p_t", "fraction pruned"))
    with matplotlib.rc_context(STYLE):
        fig = new_figure(13, 6.6)
        axes = fig.subplots(2, 2).ravel()
        for ax, (key, title, ylabel) in zip(axes, panels, strict=True):
            drawn = False
            for row in summary:
                rows = by_run.get(row["run"], [])
                color = colors[row["run"]]
                pts = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
                if pts:
                    x, y = zip(*pts, strict=True)
                    ax.plot(x, y, color=color, linewidth=1.8, marker="o", markersize=3, label=run_label(row))
                    drawn = True
                if key == "removed":
                    grown = [(r["epoch"], r["regrown"]) for r in rows if r.get("regrown") is not None]
                    if grown:
                        x, y = zip(*grown, strict=True)
                        ax.plot(x, y, color=color, linewidth=1.4, linestyle="--", marker="x", markersize=4)
            if not drawn:
                _note_empty(ax, "no mask statistics recorded")
            ax.set_title(title, fontsize=10.5, fontweight="normal")
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncol=min(len(handles), 4))
        fig.suptitle(f"{family}: mask dynamics of the sparse runs")
    return fig


def plot_sweep(study_name: str, trials: Sequence[Mapping[str, Any]], importances: Mapping[str, float] | None,
               dense_refs: Sequence[Mapping[str, Any]]) -> Figure:
    """Sweep trials: objective value against density, coloured by state, dense runs as reference lines;
    and the Optuna parameter importances (when available)."""
    state_style = {"complete": (TRIAL_COLOR, "o"), "pruned": ("#ff7f0e", "v"), "fail": (PAPER_COLOR, "x"),
                   "running": ("#2ca02c", "s"), "waiting": ("#999999", "s")}
    with matplotlib.rc_context(STYLE):
        fig = new_figure(13, 4.6)
        ax_scatter, ax_imp = fig.subplots(1, 2, width_ratios=(1.4, 1))
        drawn = False
        for state, (color, mark) in state_style.items():
            pts = [(t["density"], t["value"] if t.get("value") is not None else t.get("last_value")) for t in trials
                   if t["state"] == state and t.get("density") is not None]
            pts = [p for p in pts if p[1] is not None]
            if pts:
                x, y = zip(*pts, strict=True)
                ax_scatter.scatter(x, y, color=color, marker=mark, s=40, label=f"{state} ({len(pts)})", zorder=3)
                drawn = True
        for ref in dense_refs:
            ax_scatter.axhline(ref["val_ppl"], color=DENSE_COLOR, linestyle="--", linewidth=1.1)
            ax_scatter.annotate(f"dense {ref['family']}: {ref['val_ppl']:.1f}", (0.01, ref["val_ppl"]),
                                xycoords=("axes fraction", "data"), xytext=(0, 3), textcoords="offset points",
                                fontsize=8, color=DENSE_COLOR)
        if drawn:
            ax_scatter.legend(title="trial state", loc="upper right")
        else:
            _note_empty(ax_scatter, "no trial with both a density and a value")
        ax_scatter.set_xlabel("density")
        ax_scatter.set_ylabel("best validation perplexity\n(pruned: last reported)")
        ax_scatter.set_title("trials: perplexity vs density", fontsize=11, fontweight="normal")
        if importances:
            names = list(importances)[::-1]
            ax_imp.barh(names, [importances[n] for n in names], color=TRIAL_COLOR)
            ax_imp.set_xlabel("importance (fANOVA, sums to 1)")
            ax_imp.set_xlim(0, 1)
            for i, name in enumerate(names):
                ax_imp.text(importances[name] + 0.01, i, f"{importances[name]:.2f}", va="center", fontsize=8.5)
            ax_imp.grid(axis="y", visible=False)
        else:
            ax_imp.set_axis_off()
            _note_empty(ax_imp, "parameter importances need ≥ 2 completed trials\nand more than one parameter")
        ax_imp.set_title("parameter importances (Optuna)", fontsize=11, fontweight="normal")
        fig.suptitle(f"Sweep {study_name}: {len(trials)} trials")
    return fig
