"""The OpenAI-compatible HTTP API (FastAPI) over the models a backend trains.

    GET  /v1/models             the names served (see `trainer.serve.adapters`)
    POST /v1/chat/completions   messages, tools, n, temperature, top_p, max_tokens
                                (or max_completion_tokens), stop, logprobs, top_logprobs, seed,
                                and vLLM's return_token_ids, return_tokens_as_token_ids,
                                chat_template_kwargs (what ART's litellm params send)

Requests must carry `Authorization: Bearer <api_key>`. Errors are OpenAI's error object
(`{"error": {"message", "type", "param", "code"}}`): 401 for a wrong key, 404 for an unknown
model or step, 400 for a request this server cannot honour (streaming, penalties, logit bias,
response formats, forced tool choice): it says so instead of ignoring the field.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from trainer.serve.adapters import ServedModels, UnknownModelError
from trainer.serve.generate import Sampling, complete


class ChatRequest(pydantic.BaseModel):
    """The fields of a chat completion request this server reads; others must be unset/default."""

    model_config = pydantic.ConfigDict(extra="allow")

    model: str
    messages: list[dict[str, Any]] = pydantic.Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["auto", "none"] | dict[str, Any] | None = None
    n: int = pydantic.Field(1, ge=1, le=128)
    temperature: float = pydantic.Field(1.0, ge=0, le=2)
    top_p: float = pydantic.Field(1.0, gt=0, le=1)
    max_tokens: int | None = pydantic.Field(None, ge=1)
    max_completion_tokens: int | None = pydantic.Field(None, ge=1)
    stop: str | list[str] | None = None
    logprobs: bool = False
    top_logprobs: int | None = pydantic.Field(None, ge=0, le=20)
    seed: int | None = None
    stream: bool = False
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    response_format: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    store: bool | None = None
    metadata: dict[str, Any] | None = None
    # vLLM's extensions that ART's litellm_completion_params() sends by default.
    return_token_ids: bool = False
    return_tokens_as_token_ids: bool = False
    chat_template_kwargs: dict[str, Any] | None = None
    nvext: dict[str, Any] | None = None  # NVIDIA Dynamo's: it has no engine data to return here


# Fields read above but not supported: a non-default value is a 400 naming the field.
UNSUPPORTED = {"stream": False, "frequency_penalty": 0.0, "presence_penalty": 0.0, "logit_bias": None,
               "response_format": None}
DEFAULT_MAX_TOKENS = 1024


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def sampling_of(request: ChatRequest) -> Sampling:
    """The request's sampling settings, or BadRequest naming a field this server cannot honour."""
    for name, default in UNSUPPORTED.items():
        if getattr(request, name) != default:
            raise BadRequest(f"{name}={getattr(request, name)!r} is not supported by this server", name)
    if request.model_extra:
        name = sorted(request.model_extra)[0]
        raise BadRequest(f"unknown field {name!r}: this server does not implement it", name)
    if isinstance(request.tool_choice, dict) or (request.tool_choice == "none" and request.tools):
        raise BadRequest("tool_choice other than 'auto' is not supported (the model decides)", "tool_choice")
    if request.top_logprobs and not request.logprobs:
        raise BadRequest("top_logprobs needs logprobs=true", "top_logprobs")
    stop = (request.stop,) if isinstance(request.stop, str) else tuple(request.stop or ())
    return Sampling(
        n=request.n, temperature=request.temperature, top_p=request.top_p,
        max_tokens=request.max_completion_tokens or request.max_tokens or DEFAULT_MAX_TOKENS,
        stop=stop, logprobs=request.logprobs, top_logprobs=request.top_logprobs or 0, seed=request.seed,
        token_ids=request.return_token_ids, tokens_as_ids=request.return_tokens_as_token_ids,
        template_kwargs=tuple(sorted((request.chat_template_kwargs or {}).items())),
    )  # fmt: skip


def build_app(models: ServedModels, api_key: str) -> FastAPI:
    """The FastAPI app serving `models`; requests must present `api_key`."""
    app = FastAPI(title="artstore trainer", openapi_url=None, docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def check_key(request: Request, call_next: Any) -> Any:
        if request.headers.get("authorization") != f"Bearer {api_key}":
            return _error(401, "invalid API key", "authentication_error")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"][1:]) or None
        return _error(400, f"{param}: {first['msg']}", "invalid_request_error", param)

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        names = [n for served in models.all() for n in served.names()]
        return {"object": "list",
                "data": [{"id": n, "object": "model", "created": 0, "owned_by": "artstore"} for n in names]}

    @app.post("/v1/chat/completions")
    def chat_completions(request: ChatRequest) -> Any:  # sync: FastAPI runs it in its threadpool
        try:
            sampling = sampling_of(request)
            served, step = models.resolve(request.model)
            with served.weights(step):
                choices, usage = complete(served.model, served.tokenizer, request.messages, request.tools,
                                          sampling)
        except BadRequest as e:
            return _error(400, str(e), "invalid_request_error", e.param)
        except UnknownModelError as e:
            return _error(404, str(e), "not_found_error", "model", code="model_not_found")
        response = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                    "model": request.model, "choices": choices, "usage": usage}
        if "prompt_token_ids" in usage:  # vLLM puts them at the top level
            response["prompt_token_ids"] = usage.pop("prompt_token_ids")
        return response

    return app


def _error(status: int, message: str, kind: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(status_code=status,
                        content={"error": {"message": message, "type": kind, "param": param, "code": code}})
