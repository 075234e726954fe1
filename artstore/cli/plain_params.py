"""Option values read without pydantic: what keeps `artstore runs` under a second.

typer (0.2x) turns every option's text into its Python value through a pydantic TypeAdapter,
built when the option is first read. Importing pydantic for that costs 0.1 s of a command's
start-up (benchmarks/cli_startup.py), although artstore's options are plain: text, repeated
text, a choice of an Enum, a path. `Group` (the app's click group) gives those options a
coercion that does what typer's adapters do for them, without pydantic; any other option (a
number with bounds, a date, a custom parser) keeps typer's own. A typer without this mechanism
(older releases use click's types, no pydantic) is left as it is.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any, get_args, get_origin

from typer.core import TyperGroup

try:  # typer's runtime coercion (0.2x); absent in older releases, which need none of this
    from typer._coercion import RuntimeParam
    from typer._param_types import coerce_cli_choice, coerce_cli_path, routes_to_path
except ImportError:  # pragma: no cover - depends on the installed typer
    RuntimeParam = None


def _kind(annotation: Any, info: Any) -> str | None:
    """Which plain coercion an option of `annotation` takes (None: typer's own)."""
    if getattr(info, "parser", None) is not None or getattr(info, "click_type", None) is not None:
        return None
    if annotation is str:
        return "text"
    if annotation is bool:
        return "flag"
    if get_origin(annotation) is list and get_args(annotation) == (str,):
        return "texts"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "choice"
    if annotation is Path and getattr(info, "path_type", None) is None and routes_to_path(annotation, info):
        return "path"
    return None


if RuntimeParam is not None:
    from dataclasses import dataclass

    from typer._click.exceptions import BadParameter

    @dataclass(frozen=True)
    class _Plain(RuntimeParam):  # type: ignore[misc,valid-type]
        """typer's coercion of text, repeated text, a flag, an Enum choice or a Path, minus pydantic."""

        kind: str = "text"

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            if self.kind == "text" and isinstance(value, str) or self.kind == "flag" and isinstance(value, bool):
                return value
            if self.kind == "texts" and all(isinstance(v, str) for v in value):
                return list(value)
            if self.kind == "choice":
                try:
                    return coerce_cli_choice(value, choices=tuple(self.annotation),
                                             case_sensitive=self.parameter_info.case_sensitive, ctx=ctx)
                except ValueError as e:
                    raise BadParameter(str(e), ctx=ctx, param=param) from None
            if self.kind == "path" and isinstance(value, (str, Path)):  # a Path: typer's checks build no adapter
                return coerce_cli_path(Path(value), self.parameter_info, path_type=Path, param=param, ctx=ctx)
            # anything else (bytes, ...): typer's own
            from typer._coercion import build_runtime_param

            return build_runtime_param(param.type_descriptor)._coerce_value(value, param=param, ctx=ctx)


def install(command: Any, ctx: Any) -> None:
    """Give `command`'s plain options (text, repeated text, a flag, an Enum, a Path), --help
    included, the coercion above."""
    if RuntimeParam is None:
        return
    for param in command.get_params(ctx):
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is None or getattr(param, "_runtime_param", "absent") is not None:
            continue  # not typer's kind of parameter, or its coercion is built already
        kind = _kind(descriptor.annotation, descriptor.parameter_info)
        if kind is not None:
            param._runtime_param = _Plain(parameter_info=descriptor.parameter_info, annotation=descriptor.annotation,
                                          kind=kind)


class Group(TyperGroup):
    """The app's command group: it, and each command it resolves, read plain options without pydantic."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        install(self, ctx)  # its own options (--version, the completion flags)
        return super().parse_args(ctx, args)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            install(command, ctx)
        return command
