"""Leases: how a sweep on the Journal backend finds trials whose worker died.

The journal has no heartbeat, so the worker running trial N keeps a small JSON lease file
``<lease_dir>/t<N>.json`` ({trial, pid, host, owner, renewed_at}) fresh: a heartbeat thread rewrites it
every ``refresh_s`` seconds and the objective renews it every epoch. A RUNNING trial whose lease is
older than ``ttl_s`` -- or, on the same host, whose worker pid no longer exists -- is taken to be
dead (SIGKILL, preemption, power loss); :func:`reap_expired` marks it FAILED and enqueues a retry
with the same params and ``user_attrs={"retry_of": N, "run_dir": ...}`` so the retry resumes from
the dead trial's ``run_dir/last.pt``.

A worker whose lease was taken over (a slow worker wrongly declared dead) sees ``owner`` change on
its next renewal and stops its trial instead of racing the retry on the same run folder.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState


@dataclass(frozen=True)
class Lease:
    """Contents of a lease file; ``renewed_at`` is Unix time in seconds."""

    trial: int
    pid: int
    host: str
    owner: str
    renewed_at: float
    revoked: bool = False


def lease_path(lease_dir: Path, trial_number: int) -> Path:
    return Path(lease_dir) / f"t{trial_number}.json"


def write_lease(lease_dir: Path, lease: Lease) -> None:
    """Atomically (write temp + rename) store ``lease``."""
    lease_dir = Path(lease_dir)
    lease_dir.mkdir(parents=True, exist_ok=True)
    target = lease_path(lease_dir, lease.trial)
    tmp = target.with_suffix(f".{lease.pid}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(lease.__dict__))
    os.replace(tmp, target)


def read_lease(lease_dir: Path, trial_number: int) -> Lease | None:
    try:
        data = json.loads(lease_path(lease_dir, trial_number).read_text())
        return Lease(**data)
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def remove_lease(lease_dir: Path, trial_number: int, owner: str) -> None:
    """Delete the lease of ``trial_number`` if ``owner`` still holds it."""
    current = read_lease(lease_dir, trial_number)
    if current is not None and current.owner == owner:
        lease_path(lease_dir, trial_number).unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs on this host. A zombie (killed, not yet reaped by its parent -- e.g. a worker
    SIGKILLed while ``run_sweep`` still waits on an earlier worker) is dead: ``kill(pid, 0)`` alone says alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS) or it just went away
        return True
    return stat[stat.rindex(")") + 2 :].split(" ", 1)[0] not in ("Z", "X")


def lease_expired(
    lease: Lease | None, *, started_at: float | None, now: float, ttl_s: float, host: str
) -> bool:
    """True when the trial's worker is presumed dead.

    No lease yet: count from the trial's start. Same host: a dead pid expires the lease at once.
    """
    if lease is None:
        return started_at is None or now - started_at > ttl_s
    if lease.revoked:
        return True
    if lease.host == host and not _pid_alive(lease.pid):
        return True
    return now - lease.renewed_at > ttl_s


class LeaseKeeper:
    """Holds the lease of one trial: renews it from a daemon thread and on :meth:`renew` calls.

    ``lost`` becomes True when another worker revoked or took over the lease.
    """

    def __init__(self, lease_dir: Path, trial_number: int, *, host: str, pid: int, refresh_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.lease_dir = Path(lease_dir)
        self.trial_number = trial_number
        self.host = host
        self.pid = pid
        self.owner = f"{host}:{pid}:{trial_number}:{clock():.6f}"
        self.refresh_s = refresh_s
        self._clock = clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.lost = False
        self._thread: threading.Thread | None = None

    def renew(self) -> bool:
        """Refresh the lease; returns False (and sets ``lost``) if someone else holds it now."""
        with self._lock:
            if self.lost:
                return False
            current = read_lease(self.lease_dir, self.trial_number)
            if current is not None and (current.owner != self.owner or current.revoked):
                self.lost = True
                return False
            write_lease(self.lease_dir, Lease(self.trial_number, self.pid, self.host, self.owner, self._clock()))
            return True

    def start(self) -> LeaseKeeper:
        with self._lock:
            write_lease(self.lease_dir, Lease(self.trial_number, self.pid, self.host, self.owner, self._clock()))
        self._thread = threading.Thread(target=self._loop, name=f"lease-t{self.trial_number}", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                if not self.renew():
                    return
            except OSError:
                continue  # a transient file-system error; the next renewal tries again

    def stop(self, remove: bool = True) -> None:
        """Stop renewing; drop the lease (if still ours) unless ``remove`` is False -- then call
        :meth:`release` once the trial's result is in the study, or a reaper could take the finished-but-
        not-yet-told trial for dead."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if remove:
            self.release()

    def release(self) -> None:
        """Delete the lease file if this keeper still holds it."""
        with self._lock:
            if not self.lost:
                remove_lease(self.lease_dir, self.trial_number, self.owner)


def _started_at(trial: FrozenTrial) -> float | None:
    if trial.datetime_start is None:
        return None
    start = trial.datetime_start
    if start.tzinfo is None:  # Optuna stores naive local times
        return start.timestamp()
    return start.astimezone(timezone.utc).timestamp()


def retry_params(trial: FrozenTrial) -> tuple[dict[str, Any], dict[str, Any]]:
    """(params, user_attrs) for the retry of a dead ``trial``: same params, same run folder."""
    original = trial.user_attrs.get("retry_of", trial.number)
    attrs = {
        "retry_of": original,
        "retried_trial": trial.number,
        "retry_count": int(trial.user_attrs.get("retry_count", 0)) + 1,
    }
    for key in ("run_dir", "wandb_id", "run_name"):
        if key in trial.user_attrs:
            attrs[key] = trial.user_attrs[key]
    return dict(trial.params), attrs


def reap_expired(study: optuna.Study, lease_dir: Path, *, ttl_s: float, host: str,
                 max_retry: int | None, now: float | None = None,
                 log: Callable[[str], None] | None = None) -> list[int]:
    """Fail every RUNNING trial of ``study`` whose lease expired and enqueue its retry.

    Returns the numbers of the trials failed here. Safe to call from several workers at once: only
    the worker whose FAIL is accepted by the storage enqueues the retry.
    """
    now = time.time() if now is None else now
    failed: list[int] = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        lease = read_lease(lease_dir, trial.number)
        if not lease_expired(lease, started_at=_started_at(trial), now=now, ttl_s=ttl_s, host=host):
            continue
        if lease is not None:  # revoke first so a live-but-slow owner stops its trial
            write_lease(lease_dir, Lease(lease.trial, lease.pid, lease.host, lease.owner, lease.renewed_at, True))
        reason = (
            f"worker {lease.host}:{lease.pid} lost its lease (last renewed "
            f"{datetime.fromtimestamp(lease.renewed_at).isoformat(timespec='seconds')})"
            if lease is not None else "worker died before writing a lease"
        )
        params, attrs = retry_params(trial)
        retry = max_retry is None or attrs["retry_count"] <= max_retry
        try:  # attrs first: a finished trial accepts no more attrs
            study._storage.set_trial_user_attr(trial._trial_id, "reason", reason)
            study._storage.set_trial_user_attr(trial._trial_id, "retried", retry)
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker got there first, or the trial just finished
        failed.append(trial.number)
        if not retry:
            if log:
                log(f"trial {trial.number}: {reason}; not retried (max_retry={max_retry})")
            continue
        study.enqueue_trial(params, user_attrs=attrs)
        if log:
            log(f"trial {trial.number}: {reason}; re-enqueued (retry of trial {attrs['retry_of']})")
    return failed
