"""The one exception tree of artstore. Every error says what went wrong and what to do next."""

from __future__ import annotations


class ArtstoreError(Exception):
    """Root of every error artstore raises on purpose."""


class ValidationError(ArtstoreError, ValueError):
    """Bad input: names the offending field. Nothing was written."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class InvalidNameError(ValidationError):
    """A project, model or split name that is not a simple path segment."""


class StoreNotFoundError(ArtstoreError, LookupError):
    """The store, run or table asked for does not exist."""


class RunNotFoundError(StoreNotFoundError):
    """No run with that project and model in the store."""


class VersionNotFoundError(StoreNotFoundError):
    """`as_of` named a version, tag or time the table does not have (or no longer has)."""


class SchemaVersionError(ArtstoreError):
    """A table was written with a schema version this artstore does not read or write."""

    def __init__(self, table: str, found: int, expected: int, what_to_do: str):
        self.table, self.found, self.expected = table, found, expected
        super().__init__(f"the {table} table has schema version {found}; this artstore reads and writes version "
                         f"{expected}: {what_to_do}")


class StorageError(ArtstoreError, OSError):
    """The storage backend (disk, S3, GCS) failed after retries. The store is unchanged.

    It carries no chained exception: the storage library's error it replaces may hold a secret
    (a session token in a URL or header), and `raise ... from None` only hides that chain from
    printing. Its message says all there is, redacted."""

    @property  # type: ignore[override]
    def __context__(self) -> None:
        return None

    @__context__.setter
    def __context__(self, value: BaseException | None) -> None:
        pass  # Python sets the exception being handled when this is raised: not kept

    @property  # type: ignore[override]
    def __cause__(self) -> None:
        return None

    @__cause__.setter
    def __cause__(self, value: BaseException | None) -> None:
        pass


class CommitConflictError(StorageError):
    """Too many concurrent writers raced for the same commit; retry the call."""


class SnapshotRemovedError(StorageError):
    """The files of the versions a read pinned were removed while it read, again after one retry
    on a fresh snapshot: another process's cleanup with a short window (`reader_window`,
    `retention`) is removing versions faster than the read finishes. The store is unchanged."""


class SqlError(ArtstoreError):
    """A statement `Store.sql` refused or DuckDB could not run."""


class BackendError(ArtstoreError):
    """A training backend is missing or failed."""


class CheckpointError(ArtstoreError):
    """A checkpoint could not be registered, found, or pruned safely."""


class RetentionError(CheckpointError):
    """A retention policy cannot be applied as asked (e.g. its metric is missing). Nothing deleted."""


class ImportFormatError(ArtstoreError):
    """An ART folder could not be read; names the file. Nothing was imported."""


class ModelNotRegisteredError(BackendError, ValueError):
    """The model has no backend yet: call `await model.register(backend)` first."""


class InferenceUnavailableError(BackendError, ValueError):
    """No inference endpoint is known for the model (its backend serves none, or none was given)."""


class UnsupportedError(ArtstoreError, NotImplementedError):
    """Something OpenPipe ART does that artstore does not do (yet); the message says what instead."""
