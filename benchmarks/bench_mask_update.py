"""One end-of-epoch mask update (prune and regrow) of the paper's 2x1500 LSTM.

Issue 2 budget: under 0.5 s (the original takes 6.1 s here). Magnitude death, random growth, death rate
0.8, density 0.33, redistribution none, uniform init, all 66.0M maskable weights (spec §2.2, §3).
The baseline measured beside it is one in-place masked multiply over every maskable weight
(``w.mul_(mask)``), the cheapest pass an update must at least make; the ratio says how many such
passes one update costs. The update is timed in the SGD phase and again after the switch to SNT-ASGD
(where it also restarts averages of regrown weights).
"""

from __future__ import annotations

import cProfile
import pstats
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import Scale, case, interleaved, median, missing_piece, spread
from benchmarks.trainers import lstm_trainer

NAME = "mask_update"
TITLE = "End-of-epoch mask update (prune + regrow)"
BUDGET_S = 0.5


def masked_multiply_unit(masking: Any):
    def unit() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            for name, param in masking.params.items():
                param.mul_(masking.masks[name])
        return time.perf_counter() - start

    return unit


def update_unit(masking: Any):
    def unit() -> float:
        start = time.perf_counter()
        masking.at_end_of_epoch()
        return time.perf_counter() - start

    return unit


def profile_update(masking: Any, top: int = 12) -> list[dict]:
    """One more update under cProfile: the functions (Python and torch builtins) with the most own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    masking.at_end_of_epoch()
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # {(file, line, func): (calls, prim calls, tottime, cumtime, callers)}
    rows = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    return [{"function": f"{Path(file).name}:{line}({func})" if line else func, "calls": calls,
             "self_s": round(tottime, 4), "cumulative_s": round(cumtime, 4)}
            for (file, line, func), (calls, _, tottime, cumtime, _) in rows]


def run(scale: Scale) -> dict:
    cases, notes, skipped = [], [], []
    nhid, vocab, label = (32, 200, "2x32 (tiny)") if scale.tiny else (1500, 10_000, "2x1500")
    repeats = scale.repeats if scale.name != "full" else 3
    try:
        trainer = lstm_trainer(nhid, sparse=True, batches=1, vocab=vocab, density=0.33, death_rate=0.8)
        trainer.train_epoch(1)  # one real batch so weights and optimizer state look like training
        masking = trainer.masking
        assert masking is not None, "sparse trainer has no masking"
    except Exception as exc:
        return {"cases": [], "notes": [], "skipped": [f"{label}: {missing_piece(exc)}"]}
    numel = sum(m.numel() for m in masking.masks.values())
    for phase in ("sgd", "asgd"):
        if phase == "asgd":
            try:
                trainer._switch_to_asgd()
                trainer.train_epoch(2)
            except Exception as exc:
                skipped.append(f"{label} after the SNT-ASGD switch: {missing_piece(exc)}")
                continue
        times = interleaved({"pass": masked_multiply_unit(masking), "update": update_unit(masking)}, repeats=repeats)
        upd, base = median(times["update"]), median(times["pass"])
        cases.append(case(
            f"{label} update ({phase.upper()} phase)", "seconds per at_end_of_epoch()", value=upd, baseline=base,
            unit="s", ratio=upd / base, ratio_means="update time / one masked-multiply pass over the weights",
            target=f"< {BUDGET_S} s" if not scale.tiny else None,
            meets_target=(upd < BUDGET_S) if not scale.tiny else None,
            update_over_budget=upd / BUDGET_S, maskable_weights=numel, density=masking.density(),
            death_rate=masking.death_rate, update_times=spread(times["update"]), pass_times=spread(times["pass"]),
            profile_top=profile_update(masking),
        ))
    notes.append("repeated updates on the same weights (no training between them); the death rate stays at "
                 "its cosine value near step 1 (about 0.8)")
    return {"cases": cases, "notes": notes, "skipped": skipped}
