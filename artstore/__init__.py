"""artstore: a versioned Lance/Arrow store for agent-RL runs, with OpenPipe ART's user API.

Public names are imported on first use (PEP 562 `__getattr__`): `import artstore` costs almost
nothing, so the command line starts fast, and `artstore.Model` imports the model (and openai's
types) only when it is first touched.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# the module that defines them -> the public names
_MODULES = {
    "artstore.art.model": ("Model",),
    "artstore.art.trainable": ("TrainableModel",),
    "artstore.art.retry": ("retry",),
    "artstore.art.training": ("Backend", "TrainConfig"),
    "artstore.art.types": ("LocalTrainResult", "LoRAConfig", "Message", "MessageOrChoice", "Messages",
                           "MessagesAndChoices", "Tools", "TrainResult", "TrainSFTConfig"),
    "artstore.checkpoints.retention": ("Decision", "KeepBest", "KeepEvery", "KeepLast", "KeepSql", "KeepSteps",
                                       "Plan", "Policy"),
    "artstore.checkpoints.smoothing": ("Ema", "Mean", "Window"),
    "artstore.checkpoints.table": ("Checkpoint",),
    "artstore.errors": ("ArtstoreError", "BackendError", "CheckpointError", "CommitConflictError",
                        "ImportFormatError", "InferenceUnavailableError", "InvalidNameError",
                        "ModelNotRegisteredError", "RetentionError", "RunNotFoundError", "SchemaVersionError",
                        "SnapshotRemovedError", "SqlError", "StorageError", "StoreNotFoundError", "UnsupportedError",
                        "ValidationError", "VersionNotFoundError"),
    "artstore.log.commit": ("LogRecord",),
    "artstore.read.run": ("Run",),
    "artstore.read.store": ("Store", "open_store"),
    "artstore.records.gather": ("gather_trajectories", "gather_trajectory_groups", "trajectory", "trajectory_group",
                                "trajectory_group_batches"),
    "artstore.records.metrics_builder": ("MetricsBuilder",),
    "artstore.records.trajectory": ("Choice", "History", "PydanticException", "Trajectory", "TrajectoryGroup"),
    "artstore.storage.tags": ("Tag",),
    "artstore.tokens": ("shard_range",),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'artstore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
