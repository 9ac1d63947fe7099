"""Optuna sweeps over experiment specs: sweep spec, study creation, workers, leases/retries, status.

Public API: :func:`run_sweep`, :func:`sweep_status`, :func:`load_sweep`, :func:`redact_url`,
:func:`register_cli` (in :mod:`selfish.sweep.cli`). Storage choice: see :mod:`selfish.sweep.storage`.
"""

from selfish.sweep.run import run_sweep
from selfish.sweep.spec import SweepSpec, SweepSpecError, load_sweep
from selfish.sweep.status import format_status, sweep_status
from selfish.sweep.storage import StorageError, redact_url

__all__ = ["StorageError", "SweepSpec", "SweepSpecError", "format_status", "load_sweep", "redact_url", "run_sweep",
           "sweep_status"]
