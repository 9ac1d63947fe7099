"""Shared fixtures: where the real corpora are, tiny corpus slices, CPU determinism."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    env = os.environ.get("SELFISH_DATA")
    if env:
        return Path(env)
    return REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder laid out like ../shared/data (penn/, wikitext-2/)."""
    path = _shared_data()
    if not (path / "penn" / "train.txt").exists():
        pytest.skip(f"real corpora not found under {path}")
    return path


@pytest.fixture(autouse=True)
def _cpu_threads():
    torch.set_num_threads(1)
    yield
