"""A training run's state after each epoch, so that an interrupted run (Ctrl-C, SIGTERM, a machine
that goes away) continues where it stopped: `python -m training.train --resume DIR`.

Saved in DIR/checkpoint/: every model variable (weights, batch-norm statistics and the dropout layers'
random-generator states, which a `.keras` file leaves out), the optimizer's variables (step count,
learning rate, Adam moments), the best weights so far for early stopping, the run's arguments and
split, and the `Progress` below. Which images and augmentations an epoch sees follow from the seed and
the epoch number alone (`training.sampling.epoch_order`, stateless augmentation), so nothing else is
needed to continue exactly.

Invariant: `progress.json` names the arrays file of the same epoch and is replaced last, atomically, so
an interruption while saving leaves the previous epoch's checkpoint whole.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINT_DIR = "checkpoint"
PROGRESS_FILE = "progress.json"

# ReduceLROnPlateau on the validation loss, as the run used through Keras' callback before it was resumable.
LR_FACTOR, LR_PATIENCE, LR_MIN, LR_MIN_DELTA = 0.3, 3, 1e-5, 1e-4


@dataclass
class Progress:
    """Where a run stands after `epochs_done` epochs, with Keras' EarlyStopping(restore_best_weights=True,
    start_from_epoch=warm-up) and ReduceLROnPlateau rules kept here, where they can be saved."""

    epochs_done: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)
    best_val_loss: float | None = None  # lowest validation loss since the warm-up
    best_epoch: int | None = None
    stale_epochs: int = 0  # epochs since that best
    plateau_best: float | None = None  # learning-rate schedule: best validation loss so far
    plateau_epochs: int = 0  # epochs without an improvement of LR_MIN_DELTA
    stopped_early: bool = False
    seconds: float = 0.0  # wall time of the completed epochs, validation and recalibration included

    def record(self, logs: dict[str, float], seconds: float) -> None:
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        self.seconds += seconds

    def is_best_epoch(self, val_loss: float, patience: int, warmup: int) -> bool:
        """Whether the epoch `epochs_done` (0-based) just finished is the best so far (its weights are kept),
        after updating early stopping: `stopped_early` is set once `patience` epochs passed without a better one."""
        epoch = self.epochs_done
        if epoch < warmup:
            return False
        self.stale_epochs += 1
        if self.best_val_loss is None or val_loss < self.best_val_loss:
            self.best_val_loss, self.best_epoch, self.stale_epochs = val_loss, epoch, 0
            return True
        self.stopped_early = self.stale_epochs >= patience and epoch > 0
        return False

    def learning_rate(self, val_loss: float, current: float) -> float:
        """The learning rate for the next epoch."""
        if self.plateau_best is None or val_loss < self.plateau_best - LR_MIN_DELTA:
            self.plateau_best, self.plateau_epochs = val_loss, 0
            return current
        self.plateau_epochs += 1
        if self.plateau_epochs >= LR_PATIENCE and current > np.float32(LR_MIN):
            self.plateau_epochs = 0
            return max(current * LR_FACTOR, LR_MIN)
        return current


def save(
    directory: Path, progress: Progress, model: Any, best_weights: list[np.ndarray] | None, arguments: dict[str, Any]
) -> None:
    """Write the checkpoint of the epoch just completed into the existing `directory`."""
    arrays = {f"model_{i:04d}": np.asarray(v) for i, v in enumerate(model.variables)}
    arrays |= {f"optimizer_{i:04d}": np.asarray(v) for i, v in enumerate(model.optimizer.variables)}
    arrays |= {f"best_{i:04d}": w for i, w in enumerate(best_weights or [])}
    name = f"state-{progress.epochs_done:04d}.npz"
    with open(directory / (name + ".tmp"), "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(directory / (name + ".tmp"), directory / name)
    text = json.dumps({"arrays": name, "arguments": arguments, "progress": asdict(progress)}, indent=1)
    (directory / (PROGRESS_FILE + ".tmp")).write_text(text + "\n")
    os.replace(directory / (PROGRESS_FILE + ".tmp"), directory / PROGRESS_FILE)
    for old in directory.glob("state-*.npz"):
        if old.name != name:
            old.unlink()


def saved_arguments(directory: Path) -> dict[str, Any]:
    """The arguments of the run whose checkpoint is in `directory`."""
    return json.loads((directory / PROGRESS_FILE).read_text())["arguments"]


def restore(directory: Path, model: Any) -> tuple[Progress, list[np.ndarray] | None]:
    """Load the checkpoint into a compiled `model` built as the run built it; its progress and best weights."""
    saved = json.loads((directory / PROGRESS_FILE).read_text())
    model.optimizer.build(model.trainable_variables)
    with np.load(directory / saved["arrays"]) as arrays:
        for prefix, variables in (("model", model.variables), ("optimizer", model.optimizer.variables)):
            for i, variable in enumerate(variables):
                variable.assign(arrays[f"{prefix}_{i:04d}"])
        best = sorted(k for k in arrays.files if k.startswith("best_"))
        best_weights = [arrays[k] for k in best] or None
    return Progress(**saved["progress"]), best_weights
