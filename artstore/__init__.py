"""artstore: a versioned Lance/Arrow store for agent-RL runs, with OpenPipe ART's user API."""

from artstore.art.model import Model
from artstore.art.retry import retry
from artstore.art.trainable import TrainableModel
from artstore.art.training import Backend, TrainConfig
from artstore.art.types import (
    LocalTrainResult,
    LoRAConfig,
    Message,
    MessageOrChoice,
    Messages,
    MessagesAndChoices,
    Tools,
    TrainResult,
    TrainSFTConfig,
)
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
    InferenceUnavailableError,
    InvalidNameError,
    ModelNotRegisteredError,
    RetentionError,
    RunNotFoundError,
    SchemaVersionError,
    SqlError,
    StorageError,
    StoreNotFoundError,
    UnsupportedError,
    ValidationError,
    VersionNotFoundError,
)
from artstore.log.commit import LogRecord
from artstore.read.run import Run
from artstore.read.store import Store, open_store
from artstore.records.gather import (
    gather_trajectories,
    gather_trajectory_groups,
    trajectory,
    trajectory_group,
    trajectory_group_batches,
)
from artstore.records.metrics_builder import MetricsBuilder
from artstore.records.trajectory import (
    Choice,
    History,
    PydanticException,
    Trajectory,
    TrajectoryGroup,
)
from artstore.tokens import shard_range

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
    # ART 0.5.23's front end
    "InferenceUnavailableError", "LoRAConfig", "LocalTrainResult", "Message", "MessageOrChoice", "Messages",
    "MessagesAndChoices", "MetricsBuilder", "ModelNotRegisteredError", "Tools", "TrainResult", "TrainSFTConfig",
    "UnsupportedError", "gather_trajectories", "gather_trajectory_groups", "retry", "trajectory", "trajectory_group",
    "trajectory_group_batches",
]
