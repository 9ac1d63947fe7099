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
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "selfish-checkpoint-v1"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or not one of ours."""


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` through a temp file + fsync + rename (POSIX-atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_rotating(obj: Any, path: Path) -> None:
    """Save ``path`` atomically, keeping the file it replaces as ``<stem>.prev<suffix>``."""
    if path.exists():
        os.replace(path, path.with_name(f"{path.stem}.prev{path.suffix}"))
    save_atomic(obj, path)


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
    candidates = [path, path.with_name(f"{path.stem}.prev{path.suffix}")]
    problems: list[str] = []
    for candidate in candidates:
        if not candidate.exists():
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
