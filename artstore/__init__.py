"""artstore: a versioned Lance/Arrow store for agent-RL runs, with OpenPipe ART's user API.

Public names are imported on first use (PEP 562 `__getattr__`): `import artstore` costs almost
nothing, so the command line starts fast, and `artstore.Model` imports the model (and openai's
types) only when it is first touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    **dict.fromkeys(("Model", "TrainableModel"), "artstore.art.model"),
    **dict.fromkeys(("Backend", "TrainConfig"), "artstore.art.training"),
    **dict.fromkeys(("Decision", "Ema", "KeepBest", "KeepEvery", "KeepLast", "KeepSql", "KeepSteps", "Mean",
                     "Plan", "Policy", "Window"), "artstore.checkpoints.retention"),
    "Checkpoint": "artstore.checkpoints.table",
    **dict.fromkeys(("ArtstoreError", "BackendError", "CheckpointError", "CommitConflictError", "ImportFormatError",
                     "InvalidNameError", "RetentionError", "RunNotFoundError", "SchemaVersionError", "SqlError",
                     "StorageError", "StoreNotFoundError", "ValidationError", "VersionNotFoundError"),
                    "artstore.errors"),
    "LogRecord": "artstore.log.commit",
    "Run": "artstore.read.run",
    **dict.fromkeys(("Store", "open_store"), "artstore.read.store"),
    **dict.fromkeys(("Choice", "History", "PydanticException", "Trajectory", "TrajectoryGroup"),
                    "artstore.records.trajectory"),
    "shard_range": "artstore.tokens",
}

__all__ = [  # the same names as _EXPORTS (a test holds them equal)
    "ArtstoreError", "Backend", "BackendError", "CheckpointError", "Choice", "CommitConflictError", "History",
    "ImportFormatError", "InvalidNameError", "LogRecord", "Model", "PydanticException", "RetentionError", "Run",
    "RunNotFoundError", "SchemaVersionError", "SqlError", "StorageError", "Store", "StoreNotFoundError", "TrainConfig",
    "TrainableModel", "Trajectory", "TrajectoryGroup", "ValidationError", "VersionNotFoundError", "open_store",
    # checkpoints and retention
    "Checkpoint", "Decision", "Ema", "KeepBest", "KeepEvery", "KeepLast", "KeepSql", "KeepSteps", "Mean", "Plan",
    "Policy", "Window",
    # training tokens
    "shard_range",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'artstore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from artstore.art.model import Model, TrainableModel
    from artstore.art.training import Backend, TrainConfig
    from artstore.checkpoints.retention import (
        Decision,
        Ema,
        KeepBest,
        KeepEvery,
        KeepLast,
        KeepSql,
        KeepSteps,
        Mean,
        Plan,
        Policy,
        Window,
    )
    from artstore.checkpoints.table import Checkpoint
    from artstore.errors import (
        ArtstoreError,
        BackendError,
        CheckpointError,
        CommitConflictError,
        ImportFormatError,
        InvalidNameError,
        RetentionError,
        RunNotFoundError,
        SchemaVersionError,
        SqlError,
        StorageError,
        StoreNotFoundError,
        ValidationError,
        VersionNotFoundError,
    )
    from artstore.log.commit import LogRecord
    from artstore.read.run import Run
    from artstore.read.store import Store, open_store
    from artstore.records.trajectory import (
        Choice,
        History,
        PydanticException,
        Trajectory,
        TrajectoryGroup,
    )
    from artstore.tokens import shard_range
