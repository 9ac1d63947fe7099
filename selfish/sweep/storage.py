"""Where a study lives: the default Journal file, or an RDB URL (PostgreSQL for several machines).

Why the default is Optuna's ``JournalStorage`` over a ``JournalFileBackend`` and not SQLite:

* The journal is an append-only log of operations guarded by a small lock file; creating it needs
  no schema, so there is no race when several freshly started workers open a new file at once
  (a fresh SQLite file crashes workers that race to create its tables).
* Writers only append and readers replay, so N local worker processes share it without the
  ``database is locked`` errors SQLite gives under concurrent writes, and it needs no server.
* It is one plain file that can be copied, inspected and opened by ``optuna-dashboard``.

Two hardenings over Optuna's own file backend (:class:`SafeJournalBackend`): writers lock with ``flock``
(the kernel releases it when a writer is killed, where Optuna's lock file would block everyone for its
30 s grace period), and a line torn by a writer killed mid-append is cut off before the next append
(Optuna would glue the next record onto it and the study would no longer load).

What the journal lacks is Optuna's heartbeat (only ``RDBStorage`` has one), so dead workers are
found with our own lease files instead (see :mod:`selfish.sweep.lease`). ``postgresql://`` (or any
SQLAlchemy URL Optuna accepts) gives an ``RDBStorage`` with heartbeats and
``RetryHeartbeatStaleTrialCallback`` (Optuna 5's name for ``RetryFailedTrialCallback``), which is how several machines cooperate on one study.

Passwords in URLs never leave this module unredacted: everything printed or saved goes through
:func:`redact_url`.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

JOURNAL_FILE = "journal.log"
_RDB_SCHEMES = ("postgresql", "postgres", "mysql", "sqlite")
_URL_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@?#]*):(?P<password>[^@/?#]*)@")
_QUERY_PASSWORD = re.compile(r"(?i)([?&](?:password|passwd|pwd)=)[^&#]*")


class StorageError(ValueError):
    """A storage URL that is malformed, of an unknown kind, or whose server does not answer."""


def redact_url(url: str | Path | None) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db`` (also ``?password=``)."""
    if url is None:
        return ""
    text = str(url)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}:***@", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m.group(1)}***", text)


def url_password(url: str | None) -> str | None:
    """The password inside ``url`` (or None), so that messages quoting it can be scrubbed."""
    if not url:
        return None
    match = _URL_PASSWORD.match(url)
    if match and match.group("password"):
        return match.group("password")
    query = re.search(r"(?i)[?&](?:password|passwd|pwd)=([^&#]+)", url)
    return query.group(1) if query else None


def scrub(text: str, url: str | None) -> str:
    """``text`` with every URL redacted and the literal password of ``url`` replaced by ``***``."""
    password = url_password(url)
    out = text
    if password:
        out = out.replace(password, "***")
    out = re.sub(r"[A-Za-z][A-Za-z0-9+.\-]*://\S+", lambda m: redact_url(m.group(0)), out)
    return re.sub(r"(?i)(\bpassword\s*=\s*)\S+", lambda m: f"{m.group(1)}***", out)


class FlockLock:
    """Exclusive ``flock`` on ``path`` (created if missing): released by the kernel when its holder dies.

    Local file systems only (``flock`` over NFS depends on the server); threads of one process take turns.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._threads = threading.Lock()
        self._fd: int | None = None

    def acquire(self) -> bool:
        self._threads.acquire()
        try:
            fd = os.open(self._path, os.O_CREAT | os.O_RDWR, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        finally:
            self._threads.release()


def cut_torn_tail(path: str) -> int:
    """Drop a last line without its newline (a writer killed mid-append); returns the bytes removed.

    Call with the journal's write lock held. The torn record never completed, and Optuna's reader never
    applies a line without its newline, so no reader has seen it.
    """
    with open(path, "rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        end = size
        while end > 0:
            start = max(0, end - 65536)
            handle.seek(start)
            newline = handle.read(end - start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        else:
            keep = 0
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
        return size - keep


class SafeJournalBackend(JournalFileBackend):
    """Optuna's journal file backend with an ``flock`` write lock and torn-line repair (see the module doc)."""

    def __init__(self, file_path: str) -> None:
        super().__init__(file_path, lock_obj=FlockLock(file_path + ".flock"))

    def append_logs(self, logs: list[dict]) -> None:
        self._lock.acquire()
        try:
            cut_torn_tail(self._file_path)
            text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
            with open(self._file_path, "ab") as handle:
                handle.write(text.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            self._lock.release()


@dataclass(frozen=True)
class StorageConfig:
    """Resolved storage: either a journal file path or an RDB URL (never both).

    ``heartbeat_interval_s`` / ``grace_period_s`` / ``max_retry`` only matter for RDB storage; the
    journal uses lease files in ``lease_dir`` instead.
    """

    journal_path: Path | None = None
    url: str | None = None
    heartbeat_interval_s: int = 30
    grace_period_s: int = 120
    max_retry: int | None = 3

    @property
    def is_journal(self) -> bool:
        return self.journal_path is not None

    @property
    def lease_dir(self) -> Path | None:
        """Folder of lease files next to the journal (None for RDB storage)."""
        return None if self.journal_path is None else self.journal_path.parent / "leases"

    def display(self) -> str:
        """The storage as it may be printed or saved (password redacted)."""
        return str(self.journal_path) if self.journal_path is not None else redact_url(self.url)

    def dashboard_arg(self) -> str:
        """Argument for ``optuna-dashboard`` (redacted: the user re-inserts the password)."""
        return str(self.journal_path) if self.journal_path is not None else redact_url(self.url)


def default_journal_path(run_root: Path, study: str) -> Path:
    """``<run_root>/sweeps/<study>/journal.log``."""
    return Path(run_root) / "sweeps" / study / JOURNAL_FILE


def resolve_storage(
    storage: str | Path | None,
    *,
    run_root: Path,
    study: str,
    base_dir: Path | None = None,
    heartbeat_interval_s: int = 30,
    grace_period_s: int = 120,
    max_retry: int | None = 3,
) -> StorageConfig:
    """Turn ``None`` / a file path / ``journal:PATH`` / an RDB URL into a :class:`StorageConfig`.

    A relative journal path is taken relative to ``base_dir`` (the sweep file's folder) when given.
    Raises :class:`StorageError` for URLs of an unknown scheme (message redacted).
    """
    common = dict(heartbeat_interval_s=heartbeat_interval_s, grace_period_s=grace_period_s, max_retry=max_retry)
    if storage is None or str(storage) == "":
        return StorageConfig(journal_path=default_journal_path(run_root, study), **common)
    text = str(storage)
    if text.startswith("journal:"):
        text = text[len("journal:") :]
        if text.startswith("//"):
            text = text[2:]
        return StorageConfig(journal_path=_relative(Path(text), base_dir), **common)
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*)://", text)
    if match is None:
        return StorageConfig(journal_path=_relative(Path(text), base_dir), **common)
    scheme = match.group(1).split("+")[0].lower()
    if scheme not in _RDB_SCHEMES:
        raise StorageError(
            f"storage {redact_url(text)!r}: unknown scheme {scheme!r}; use a journal file path, "
            "postgresql://user:pass@host/db or sqlite:///file.db"
        )
    rest = text[len(match.group(0)) :]
    if not rest:
        raise StorageError(f"storage {redact_url(text)!r}: the URL names no host or database")
    if scheme == "sqlite" and (rest in ("", "/") or ":memory:" in rest or "mode=memory" in rest):
        raise StorageError(f"storage {redact_url(text)!r}: an in-memory database is private to one process; "
                           "workers need a file (sqlite:///path.db) or a journal file path")
    return StorageConfig(url=text, **common)


def _relative(path: Path, base_dir: Path | None) -> Path:
    return path if path.is_absolute() or base_dir is None else base_dir / path


def sqlalchemy_url(url: str) -> str:
    """``postgres(ql)://`` with an installed driver: SQLAlchemy 2.1 defaults to psycopg 3, which may be
    missing where psycopg2 is installed (this project depends on ``psycopg2-binary``)."""
    match = re.match(r"^(postgres|postgresql)://", url)
    if match is None:
        return url
    driver = "psycopg2"
    if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
        driver = "psycopg"
    return f"postgresql+{driver}://" + url[len(match.group(0)) :]


def open_storage(config: StorageConfig) -> optuna.storages.BaseStorage:
    """Open the storage: a ``JournalStorage`` (creating its folder) or an ``RDBStorage`` with heartbeat.

    RDB: heartbeats every ``heartbeat_interval_s``; a trial silent for ``grace_period_s`` is failed
    and re-enqueued (``RetryHeartbeatStaleTrialCallback``, intermediate values kept). Raises
    :class:`StorageError` (redacted message) when the database cannot be reached.
    """
    if config.journal_path is not None:
        try:
            config.journal_path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(SafeJournalBackend(str(config.journal_path)))
        except OSError as exc:
            raise StorageError(f"cannot open journal storage {config.journal_path}: "
                               f"{exc.strerror or type(exc).__name__}") from None
    assert config.url is not None
    url = sqlalchemy_url(config.url)
    try:
        with warnings.catch_warnings():  # heartbeat options are marked experimental by Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None,
                heartbeat_interval=config.heartbeat_interval_s,
                grace_period=config.grace_period_s,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                    max_retry=config.max_retry, inherit_intermediate_values=True
                ),
            )
    except Exception as exc:  # sqlalchemy/psycopg2 errors may quote the URL; never show it raw
        raise StorageError(
            f"cannot open storage {redact_url(config.url)}: {scrub(_first_line(exc), config.url)}"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
