"""artstore: a versioned Lance/Arrow store for agent-RL runs, with OpenPipe ART's user API."""

from artstore.checkpoints import Checkpoint
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
from artstore.model import Model, TrainableModel
from artstore.records import Choice, History, PydanticException, Trajectory, TrajectoryGroup
from artstore.retention import (
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
from artstore.store import Run, Store, open_store
from artstore.tokens import shard_range
from artstore.training import Backend, TrainConfig
from artstore.writer import LogRecord

__version__ = "0.1.0"

__all__ = [
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
