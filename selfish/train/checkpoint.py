"""Atomic checkpoints and RNG state capture (issue: core engine, item 5).

A checkpoint is a dict of plain containers, numbers, strings and tensors, so it loads with
``torch.load(weights_only=True)``. Writes go to a temporary file in the same folder, are fsynced, then
renamed over the target: a crash or a kill during the write leaves the previous file intact. The previous
``last.pt`` is kept as ``last.prev.pt`` so that a checkpoint damaged after the fact (disk, a bad copy)
still has a good predecessor to fall back to.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "selfish-checkpoint-v1"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or not one of ours."""


FaultHook = Callable[[str], None]
"""Called with the name of a point in the write (``checkpoint_written``, ``checkpoint_rotated``); tests use
it to kill the process exactly there. ``None`` in normal runs."""


def _write_temp(obj: Any, path: Path) -> Path:
    """``torch.save`` to a temp file beside ``path``, flushed and fsynced; returns the temp path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_atomic(obj: Any, path: Path, fault_hook: FaultHook | None = None) -> None:
    """``torch.save`` to ``path`` through a temp file + fsync + rename (POSIX-atomic)."""
    tmp = _write_temp(obj, path)
    try:
        if fault_hook is not None:
            fault_hook("checkpoint_written")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def previous_path(path: Path) -> Path:
    """``last.pt`` -> ``last.prev.pt``."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_rotating(obj: Any, path: Path, fault_hook: FaultHook | None = None) -> None:
    """Save ``path`` atomically, keeping the file it replaces as ``<stem>.prev<suffix>``.

    Order: the new file is written completely to a temp file first; then the current file is hard-linked
    (copied where links are not supported) to the ``.prev`` name; then the temp file is renamed over
    ``path``. So at every instant ``path`` holds a complete checkpoint (the old or the new one), and a kill
    at any point loses at most the epoch being written.
    """
    tmp = _write_temp(obj, path)
    try:
        if fault_hook is not None:
            fault_hook("checkpoint_written")
        prev = previous_path(path)
        # already the same file: a kill after the last rotation (rename() of one hard link over another is a no-op)
        if path.exists() and not (prev.exists() and os.path.samefile(path, prev)):
            prev_tmp = prev.with_name(f".{prev.name}.{os.getpid()}.tmp")
            prev_tmp.unlink(missing_ok=True)
            try:
                try:
                    os.link(path, prev_tmp)
                except OSError:  # no hard links here (some network file systems): copy instead
                    shutil.copyfile(path, prev_tmp)
                os.replace(prev_tmp, prev)
            finally:
                prev_tmp.unlink(missing_ok=True)
            if fault_hook is not None:
                fault_hook("checkpoint_rotated")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def load(path: Path) -> dict:
    """Load one checkpoint (weights only); raise CheckpointError with the path on any damage."""
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, wrong types
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a selfish-rnn checkpoint (a {type(obj).__name__})")
    return obj


def load_latest(path: Path) -> tuple[dict, Path, list[str]]:
    """Load ``path``, falling back to its ``.prev`` sibling when it is damaged.

    Returns (checkpoint, the path used, warnings). Raises CheckpointError when neither loads.
    """
    candidates = [path, previous_path(path)]
    problems: list[str] = []
    for candidate in candidates:
        if not candidate.exists():
            if candidate == path and candidates[1].exists():
                problems.append(f"{path}: checkpoint not found")
            continue
        try:
            ckpt = load(candidate)
            if ckpt.get("format") != FORMAT:
                raise CheckpointError(f"{candidate}: not a selfish-rnn training checkpoint")
            return ckpt, candidate, problems
        except CheckpointError as exc:
            problems.append(str(exc))
    detail = "; ".join(problems) if problems else f"{path}: checkpoint not found"
    raise CheckpointError(detail)


def rng_state() -> dict:
    """Torch (CPU and CUDA), numpy and Python RNG states as plain containers."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    random.setstate(_python_state_from_plain(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state_to_plain(state: tuple) -> dict:
    version, internal, gauss = state
    return {"version": version, "internal": list(internal), "gauss": gauss}


def _python_state_from_plain(plain: dict) -> tuple:
    return (plain["version"], tuple(plain["internal"]), plain["gauss"])
