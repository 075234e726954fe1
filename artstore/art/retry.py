"""`art.retry`: ART's retry decorator (exponential backoff, sync and async), built on tenacity.

    @art.retry(max_attempts=3, delay=0.25, backoff_factor=2.0, exceptions=(TimeoutError,))
    async def rollout(...): ...

Attempt n (from 1) that fails waits `delay * backoff_factor ** (n - 1)` seconds before the next;
the last failure is raised as itself. Each retry calls `on_retry(exception, attempt)`, or logs a
warning when none is given.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import tenacity

logger = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def retry(
    max_attempts: int = 3,
    delay: float = 0.25,
    backoff_factor: float = 2.0,
    exceptions: tuple[type[BaseException], ...] = (Exception,),
    on_retry: Callable[[BaseException, int], None] | None = None,
) -> Callable[[F], F]:
    def decorator(func: F) -> F:
        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            if on_retry is not None:
                on_retry(error, state.attempt_number)
            else:
                logger.warning("Retry %d/%d for %s after error: %s", state.attempt_number, max_attempts,
                               getattr(func, "__name__", func), error)

        settings = {
            "stop": tenacity.stop_after_attempt(max_attempts),
            "wait": tenacity.wait_exponential(multiplier=delay, exp_base=backoff_factor, min=0),
            "retry": tenacity.retry_if_exception_type(exceptions),
            "before_sleep": before_sleep,
            "reraise": True,
        }
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                async for attempt in tenacity.AsyncRetrying(**settings):
                    with attempt:
                        return await func(*args, **kwargs)
            return run_async  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            return tenacity.Retrying(**settings)(func, *args, **kwargs)
        return run  # type: ignore[return-value]
    return decorator
