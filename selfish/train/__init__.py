"""The training loop, checkpoints and resume (spec §1, §5)."""

from selfish.train.checkpoint import CheckpointError
from selfish.train.loop import Diverged, Sink, SparseSettings, StopTraining, Trainer, TrainSettings

__all__ = [
    "CheckpointError",
    "Diverged",
    "Sink",
    "SparseSettings",
    "StopTraining",
    "TrainSettings",
    "Trainer",
]
