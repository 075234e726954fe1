"""Where a model's inference runs: the OpenAI client, litellm parameters and model names.

ART 0.5.23's rules: a prompted `Model` is given `inference_base_url`/`inference_api_key` (and
optionally `inference_model_name`) by the user; a `TrainableModel` gets them from its backend at
`register()` (see `artstore.art.training`). The name sent to the server is the backend's
`_model_inference_name(model, step)` when it has one, else `inference_model_name or name`, with
`@{step}` for a given checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from artstore.errors import InferenceUnavailableError

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from artstore.art.model import Model

REQUEST_TIMEOUT_S = 1200.0  # ART's: long rollouts generate for minutes
CONNECT_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 100_000  # ART's: thousands of concurrent rollouts share one client


def inference_name(model: Model, step: int | None = None) -> str:
    """The model name to send to the inference server (latest checkpoint when `step` is None)."""
    backend = model._backend
    named = getattr(backend, "_model_inference_name", None) if backend is not None else None
    if callable(named):
        return named(model, step=step)
    base = model.inference_model_name or model.name
    return base if step is None else f"{base}@{step}"


def default_extra_body(model: Model) -> dict[str, Any] | None:
    """ART's request defaults for a trained model's server (vLLM: return token ids for training;
    keep reasoning in the chat template). None for a prompted model."""
    if not model.trainable:
        return None
    return {
        "return_token_ids": True,
        "return_tokens_as_token_ids": True,
        "nvext": {"extra_fields": ["engine_data"]},
        "chat_template_kwargs": {"preserve_thinking": True},
    }


def litellm_params(model: Model, step: int | None = None) -> dict[str, Any]:
    """The keyword arguments for `litellm.completion` / `acompletion`, as ART builds them."""
    name = inference_name(model, step)
    params: dict[str, Any] = {
        "model": f"hosted_vllm/{name}" if model.trainable else name,
        "base_url": model.inference_base_url,
        "api_key": model.inference_api_key,
        "temperature": 1,  # sampling, not greedy: RL needs varied rollouts
    }
    if extra := default_extra_body(model):
        params["extra_body"] = extra
    return params


def make_client(model: Model) -> AsyncOpenAI:
    """A new AsyncOpenAI client for the model's endpoint; raises InferenceUnavailableError when
    none is known (a trainable model not registered, a backend serving none, a prompted model
    without a base url and key)."""
    if model.inference_api_key is None or model.inference_base_url is None:
        if not model.trainable:
            raise InferenceUnavailableError(
                f"{model.project}/{model.name} has no inference endpoint: pass inference_base_url= and "
                "inference_api_key= to Model(...)")
        if model._backend is None:
            raise InferenceUnavailableError(
                f"{model.project}/{model.name}: no OpenAI client yet; call `await model.register(backend)` first")
        raise InferenceUnavailableError(
            f"{model.project}/{model.name}: its backend {type(model._backend).__name__} serves no inference "
            "(it has no _prepare_backend_for_training); set model.inference_base_url and "
            "model.inference_api_key to a server of yours, or use a backend that serves one")
    from openai import (
        DEFAULT_CONNECTION_LIMITS,
        DEFAULT_TIMEOUT,
        AsyncOpenAI,
        DefaultAsyncHttpxClient,
    )

    # The timeout and limits types of the HTTP library this openai uses (httpx or httpx2).
    return AsyncOpenAI(
        base_url=model.inference_base_url,
        api_key=model.inference_api_key,
        http_client=DefaultAsyncHttpxClient(
            timeout=type(DEFAULT_TIMEOUT)(timeout=REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
            limits=type(DEFAULT_CONNECTION_LIMITS)(max_connections=MAX_CONNECTIONS,
                                                   max_keepalive_connections=MAX_CONNECTIONS),
        ),
    )


class _CostRecordingCompletions:
    def __init__(self, completions: Any, record: Callable[[Any], None]):
        self._completions, self._record = completions, record

    async def create(self, *args: Any, **kwargs: Any) -> Any:
        response = await self._completions.create(*args, **kwargs)
        if not kwargs.get("stream"):  # a stream has no usage until consumed
            self._record(response)
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._completions, name)


class _CostRecordingChat:
    def __init__(self, chat: Any, record: Callable[[Any], None]):
        self._chat = chat
        self.completions = _CostRecordingCompletions(chat.completions, record)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chat, name)


class CostRecordingClient:
    """An AsyncOpenAI client whose `chat.completions.create` passes each response to `record`
    (ART's managed client: costs of a trained model's own inference)."""

    def __init__(self, client: Any, record: Callable[[Any], None]):
        self._client, self._record = client, record
        self.chat = _CostRecordingChat(client.chat, record)

    def with_options(self, *args: Any, **kwargs: Any) -> CostRecordingClient:
        return CostRecordingClient(self._client.with_options(*args, **kwargs), self._record)

    async def __aenter__(self) -> CostRecordingClient:
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *args: Any) -> Any:
        return await self._client.__aexit__(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
