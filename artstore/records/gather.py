"""Running rollouts: ART 0.5.23's `gather_trajectory_groups`, `gather_trajectories`,
`trajectory_group_batches`, with a tqdm progress bar that shows the running mean reward and
metrics.

    groups = await art.gather_trajectory_groups(
        (art.TrajectoryGroup(rollout(model, s) for _ in range(8)) for s in scenarios),
        max_exceptions=0.1,   # a fraction of the total (below 1) or a count
    )

A rollout that raises is counted; while the count stays within `max_exceptions` the failure is
kept (as the group's exception, or as a group left out), past it the exception propagates. The
bar goes to stderr, as tqdm's does; `TQDM_DISABLE=1` hides it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import Counter
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Iterator,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any

from openai.types.chat.chat_completion import Choice
from tqdm import auto as tqdm

from artstore.errors import UnsupportedError
from artstore.records.trajectory import Trajectory, TrajectoryGroup

COMPLETION_TOKENS_KEY = "art_completion_tokens"  # a Choice's generated-token count, as ART's client attaches it


@dataclass
class GatherContext:
    """The progress bar and running sums of one gather call (ART's)."""

    pbar: Any = None
    metric_sums: Counter[str] = field(default_factory=Counter)
    metric_divisors: Counter[str] = field(default_factory=Counter)
    max_metrics: int | None = None
    max_exceptions: int | float = 0
    increment_pbar: bool = True

    def update_pbar(self, n: int) -> None:
        if self.pbar is None:
            return
        if self.increment_pbar:
            self.pbar.update(n)
        names = list(self.metric_sums)[: self.max_metrics] if self.max_metrics is not None else list(self.metric_sums)
        postfix = {k: self.metric_sums[k] / max(1, self.metric_divisors[k]) for k in names}
        if "completion_tokens" in postfix:
            postfix["completion_tokens"] = postfix.pop("completion_tokens")  # last, as ART shows it
        self.pbar.set_postfix(postfix)

    def too_many_exceptions(self) -> bool:
        """Past `max_exceptions`: a count, or (strictly between 0 and 1) a fraction of the bar's total."""
        exceptions = self.metric_sums["exceptions"]
        if 0 < self.max_exceptions < 1 and self.pbar is not None and self.pbar.total:
            if exceptions / self.pbar.total <= self.max_exceptions:
                return False
        return exceptions > self.max_exceptions

    def reset(self) -> None:
        self.pbar = None
        self.metric_sums, self.metric_divisors = Counter(), Counter()
        self.max_exceptions = 0


_context: contextvars.ContextVar[GatherContext] = contextvars.ContextVar("artstore_gather_context")


def get_gather_context() -> GatherContext:
    """The current gather call's context (a detached one outside any gather)."""
    try:
        return _context.get()
    except LookupError:
        return GatherContext()


@contextlib.contextmanager
def set_gather_context(context: GatherContext) -> Iterator[None]:
    token = _context.set(context)
    try:
        yield
    finally:
        _context.reset(token)


def record_metrics(context: GatherContext, trajectory: Trajectory) -> None:
    """Count a finished trajectory in the bar's running means (and its completion tokens)."""
    choices = [m for h in (trajectory.messages_and_choices, *(a.messages_and_choices for a in trajectory.additional_histories))
               for m in h if isinstance(m, Choice)]
    counts = [(c.model_extra or {}).get(COMPLETION_TOKENS_KEY) for c in choices]
    if choices and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in counts):
        trajectory.metrics["completion_tokens"] = sum(counts)
    context.metric_sums["reward"] += trajectory.reward
    context.metric_divisors["reward"] += 1
    context.metric_sums.update(trajectory.metrics)
    context.metric_divisors.update(trajectory.metrics.keys())


class _AwaitedGroup(Awaitable[TrajectoryGroup]):
    """What `TrajectoryGroup(<awaitables>)` returns: awaitable once; `_num_trajectories` sizes the bar."""

    def __init__(self, coroutine: Coroutine[Any, Any, TrajectoryGroup], awaitables: list[Awaitable[Any]]):
        self.coroutine, self.awaitables = coroutine, awaitables
        self._num_trajectories = len(awaitables)

    def __await__(self) -> Generator[Any, None, TrajectoryGroup]:
        return self.coroutine.__await__()

    def close(self) -> None:
        """Never run it (and its rollouts): no 'never awaited' warning."""
        self.coroutine.close()
        for a in self.awaitables:
            if callable(close := getattr(a, "close", None)):
                close()


def awaited_group(cls: type[TrajectoryGroup], awaitables: list[Awaitable[Any]], *,
                  exceptions: Iterable[Any] = (), metadata: dict[str, Any] | None = None,
                  metrics: dict[str, Any] | None = None, logs: Iterable[str] = ()) -> _AwaitedGroup:
    async def run() -> TrajectoryGroup:
        context = get_gather_context()
        done: list[Trajectory] = []
        failed: list[Any] = list(exceptions)
        for future in asyncio.as_completed(awaitables):
            try:
                item = await future
                trajectory = item if isinstance(item, Trajectory) else Trajectory.model_validate(item)
                done.append(trajectory)
                record_metrics(context, trajectory)
                context.update_pbar(n=1)
            except BaseException as e:  # noqa: BLE001 - ART keeps any rollout failure as data
                failed.append(e)
                context.metric_sums["exceptions"] += 1
                context.update_pbar(n=0)
                if context.too_many_exceptions():
                    raise
        return cls(done, exceptions=failed, metadata=metadata, metrics=metrics, logs=logs)

    return _AwaitedGroup(run(), awaitables)


async def _group(awaitable: Awaitable[TrajectoryGroup]) -> TrajectoryGroup | None:
    if hasattr(awaitable, "_num_trajectories"):  # its trajectories count themselves
        return await awaitable
    context = get_gather_context()
    try:
        group = await awaitable
        for trajectory in group:
            record_metrics(context, trajectory)
        context.update_pbar(n=len(group))
        return group
    except BaseException:
        context.metric_sums["exceptions"] += 1
        context.update_pbar(n=0)
        if context.too_many_exceptions():
            raise
        return None


async def gather_trajectory_groups(
    groups: Iterable[Awaitable[TrajectoryGroup]],
    *,
    pbar_desc: str | None = "gather",
    pbar_total_completion_tokens: bool = False,
    max_exceptions: int | float = 0,
    max_metrics: int | None = None,
    after_each: Callable[[TrajectoryGroup], Awaitable[TrajectoryGroup | None | list[TrajectoryGroup]]] | None = None,
) -> list[TrajectoryGroup]:
    """Run every group's rollouts concurrently; return the groups in the order given (a group
    that failed as a whole within `max_exceptions` is left out). `after_each(group)` runs as each
    group finishes and may return a replacement group, a list of groups, or None (drop it)."""
    del pbar_total_completion_tokens  # deprecated in ART, no effect
    groups = list(groups)
    context = GatherContext(max_exceptions=max_exceptions, max_metrics=max_metrics)

    async def forward(g: Awaitable[TrajectoryGroup]) -> Any:
        group = await _group(g)
        return group if group is None or after_each is None else await after_each(group)

    with set_gather_context(context):
        future = asyncio.gather(*[forward(g) for g in groups])
        context.pbar = tqdm.tqdm(desc=pbar_desc, total=sum(getattr(g, "_num_trajectories", 1) for g in groups))
        try:
            results = await future
        finally:
            context.pbar.close()
    out: list[TrajectoryGroup] = []
    for r in results:
        if isinstance(r, list):
            out.extend(r)
        elif isinstance(r, TrajectoryGroup):
            out.append(r)
    return out


async def _trajectories(awaitable: Awaitable[Any]) -> Trajectory | list[Trajectory] | BaseException:
    context = get_gather_context()
    try:
        result = await awaitable
        if isinstance(result, Trajectory):
            record_metrics(context, result)
        else:
            result = list(result)
            for t in result:
                record_metrics(context, t)
        context.update_pbar(n=1)
        return result
    except BaseException as e:
        context.metric_sums["exceptions"] += 1
        context.update_pbar(n=0)
        if context.too_many_exceptions():
            raise
        return e


async def gather_trajectories(
    trajectories: Iterable[Awaitable[Trajectory]] | Iterable[Awaitable[Iterable[Trajectory]]],
    *,
    pbar_desc: str | None = "gather",
    pbar_total_completion_tokens: bool = False,
    max_exceptions: int | float = 0,
) -> Sequence[Trajectory | list[Trajectory] | BaseException]:
    """Run the rollouts concurrently; results in the order given, a failure within
    `max_exceptions` in its place as the exception itself."""
    del pbar_total_completion_tokens
    items = list(trajectories)
    context = GatherContext(pbar=tqdm.tqdm(desc=pbar_desc, total=len(items)), max_exceptions=max_exceptions)
    try:
        with set_gather_context(context):
            return await asyncio.gather(*[_trajectories(t) for t in items])
    finally:
        context.pbar.close()


async def trajectory_group_batches(
    groups: Iterable[Awaitable[TrajectoryGroup]],
    *,
    batch_size: int,
    max_batch_exceptions: int | float = 0,
    max_concurrent_batches: int = 4,
    skip_batches: int = 0,
    pbar_desc: str | None = "batches",
    pbar_total_completion_tokens: bool = False,
) -> AsyncIterator[list[TrajectoryGroup]]:
    """Yield batches of `batch_size` groups as they finish (the last may be smaller), keeping up
    to `batch_size * max_concurrent_batches` groups running; the first `skip_batches` batches'
    groups are never started (resuming)."""
    del pbar_total_completion_tokens
    unstarted = list(groups)
    for skipped in unstarted[:batch_size * skip_batches]:  # resuming: these never run
        if callable(close := getattr(skipped, "close", None)):
            close()
    unstarted = unstarted[batch_size * skip_batches:]
    pending: set[asyncio.Task[TrajectoryGroup | None]] = set()
    batch: list[TrajectoryGroup] = []
    context = GatherContext(max_exceptions=max_batch_exceptions, increment_pbar=False)
    with set_gather_context(context):
        while unstarted or pending or len(batch) >= batch_size:
            if context.pbar is None:
                context.pbar = tqdm.tqdm(desc=pbar_desc, total=batch_size)
            while len(pending) < batch_size * max_concurrent_batches and unstarted:
                pending.add(asyncio.ensure_future(_group(unstarted.pop(0))))
            if pending:
                done, pending = await asyncio.wait(pending, timeout=0 if len(batch) >= batch_size else None,
                                                   return_when=asyncio.FIRST_COMPLETED)
                context.pbar.update(len(done))
                batch.extend(g for task in done if (g := task.result()) is not None)
            if len(batch) >= batch_size:
                context.pbar.close()
                context.reset()
                context.max_exceptions = max_batch_exceptions
                yield batch[:batch_size]
                batch = batch[batch_size:]
        if context.pbar is not None:
            context.pbar.close()
        if batch:
            yield batch


async def trajectory_group(
    trajectories: Iterable[Trajectory | BaseException | Awaitable[Trajectory]],
    *,
    exceptions: Iterable[Any] = (),
    metadata: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    logs: list[str] | None = None,
    return_exceptions: bool = False,
) -> TrajectoryGroup:
    """ART 0.5.23's `await art.trajectory_group(...)`: run the awaitables concurrently and build
    the group with the trajectories in the order given. A rollout that raises fails the call
    (the others are cancelled), or, with `return_exceptions=True`, becomes one of the group's
    exceptions. An exception that is not an `Exception` (KeyboardInterrupt, ...) always raises."""
    results: list[Any] = []
    pending: dict[asyncio.Future[Any], list[int]] = {}
    futures: dict[int, asyncio.Future[Any]] = {}  # one task per awaitable object, even if given twice
    try:
        for item in trajectories:
            if isinstance(item, (Trajectory, BaseException)):
                if isinstance(item, BaseException) and not isinstance(item, Exception):
                    raise item
                results.append(item)
                continue
            results.append(None)
            task = futures.get(id(item))
            if task is None:
                task = futures[id(item)] = asyncio.ensure_future(item)
                pending[task] = []
            pending[task].append(len(results) - 1)
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                indexes = pending.pop(task)
                try:
                    result = task.result()
                except Exception as e:
                    if not return_exceptions:
                        raise
                    result = e
                for i in indexes:
                    results[i] = result
    except BaseException:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        raise
    return TrajectoryGroup(results, exceptions=exceptions, metadata=metadata, metrics=metrics, logs=logs or ())


async def trajectory(coroutine: Coroutine[Any, Any, object]) -> Trajectory:
    """ART 0.5.23 builds a Trajectory from the OpenAI calls a rollout makes (its `exchanges`);
    artstore does not capture calls: UnsupportedError, which says what to do instead."""
    coroutine.close()
    raise UnsupportedError("art.trajectory(...) captures a rollout's OpenAI calls, which artstore does not do: "
                           "build art.Trajectory(messages_and_choices=[...], reward=...) in the rollout and return it")
