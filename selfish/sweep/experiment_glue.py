"""The sweep's links to the rest of selfish: experiment spec validation and the per-trial sinks.

Kept in one small module so the sweep core can be tested with fakes injected in their place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from selfish.sweep.objective import WandbTrial


@lru_cache(maxsize=8)
def _base_spec(path: str, mtime_ns: int) -> Any:
    from selfish.spec import load_spec

    return load_spec(path)


def load_trial_spec(base: Path, overrides: Mapping[str, Any]) -> Any:
    """``base`` (with its ``base:`` chain) plus ``{key path: value}`` overrides, validated.

    Raises ``selfish.spec.SpecError`` (a ``ValueError``) naming the file and the key path.
    """
    from selfish.spec import spec_with

    base = Path(base)
    spec = _base_spec(str(base), base.stat().st_mtime_ns)
    if not overrides:
        return spec
    return spec_with(spec, dict(overrides), source="sweep override")


def trial_sinks(spec: Any, run_dir: Path, wandb: WandbTrial) -> Sequence[Any]:
    """Sinks of one trial: its run folder and a W&B run named ``<study>-t<n>`` grouped by study.

    ``selfish.tracking`` keeps the W&B run id in the run folder, so a retried trial (same folder)
    continues the same W&B run.
    """
    from selfish.tracking import trial_sinks as tracking_trial_sinks

    return tracking_trial_sinks(spec, run_dir, wandb)
