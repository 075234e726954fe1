"""The `trajectory` command: one stored rollout as a readable transcript (roles, tool calls with
their arguments, tool results, reward, metrics, metadata)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from artstore.cli.common import (
    RunArgument,
    StorageOption,
    StoreOption,
    console,
    get_run,
    get_store,
    handle_errors,
)
from artstore.errors import ValidationError

if TYPE_CHECKING:
    from artstore.records.trajectory import Trajectory, TrajectoryGroup

ROLE_STYLE = {"system": "magenta", "user": "green", "assistant": "cyan", "tool": "yellow", "developer": "magenta"}


def register(app: typer.Typer) -> None:
    app.command("trajectory")(trajectory)


def _pick_split(run: Any, step: int, split: str | None) -> str:
    logs = run.logs()
    splits = sorted({s for s, st in zip(logs["split"].to_pylist(), logs["step"].to_pylist(), strict=True) if st == step})
    if split is not None:
        if split not in splits:
            raise ValidationError("--split", f"nothing logged for split {split!r} at step {step}; there: "
                                             f"{', '.join(splits) or 'nothing'}")
        return split
    if not splits:
        steps = sorted(set(logs["step"].to_pylist()))
        raise ValidationError("--step", f"nothing logged at step {step}; steps logged: {_ranges(steps)}")
    return "val" if "val" in splits else splits[0]


def _ranges(steps: list[int]) -> str:
    if len(steps) <= 12:
        return ", ".join(map(str, steps))
    return f"{', '.join(map(str, steps[:5]))}, ..., {', '.join(map(str, steps[-5:]))}"


def _choose(groups: list[TrajectoryGroup], group: int | None, index: int | None, best: bool,
            worst: bool) -> tuple[int, int]:
    """(group position, trajectory position) at the step: as asked, or the best or worst reward."""
    if sum([index is not None, best, worst]) > 1:
        raise typer.BadParameter("give one of --index, --best, --worst", param_hint="--index")
    if group is not None and not 0 <= group < len(groups):
        raise ValidationError("--group", f"{group} is not a group of this step: it has groups 0..{len(groups) - 1}")
    candidates = [(g, i) for g, grp in enumerate(groups) if group is None or g == group
                  for i in range(len(grp.trajectories))]
    if not candidates:
        raise ValidationError("--group", "no trajectories there (only exceptions)")
    if best or worst:
        def reward(gi: tuple[int, int]) -> float:
            return groups[gi[0]].trajectories[gi[1]].reward
        return max(candidates, key=reward) if best else min(candidates, key=reward)
    g = group or 0
    n = len(groups[g].trajectories)
    i = index or 0
    if not 0 <= i < n:
        raise ValidationError("--index", f"{i} is not a trajectory of group {g}: it has 0..{n - 1}")
    return g, i


@handle_errors
def trajectory(
    run: RunArgument,
    step: Annotated[int, typer.Option("--step", help="The step logged.")],
    split: Annotated[str | None, typer.Option(help="The split (default: val when logged at that step).")] = None,
    group: Annotated[int | None, typer.Option("--group", "-g", help="The group's position in the step (from 0).")]
    = None,
    index: Annotated[int | None, typer.Option("--index", "-i", help="The trajectory's position in its group.")]
    = None,
    best: Annotated[bool, typer.Option("--best", help="The highest reward (of --group, or of the step).")] = False,
    worst: Annotated[bool, typer.Option("--worst", help="The lowest reward (of --group, or of the step).")] = False,
    logprobs: Annotated[bool, typer.Option("--logprobs", help="Show each choice's token logprobs.")] = False,
    store: StoreOption = ".art",
    storage_option: StorageOption = None,
) -> None:
    """Print one trajectory as a transcript: each message with its role, tool calls and their
    arguments, tool results, then reward, metrics and metadata.

    Examples:

        artstore trajectory email-search/agent-001 --step 10 --best

        artstore trajectory email-search/agent-001 --step 10 --split train --group 3 --index 1
    """
    r = get_run(get_store(store, storage_option), run)
    split = _pick_split(r, step, split)
    groups = r.groups(split=split, step=step)
    g, i = _choose(groups, group, index, best, worst)
    t = groups[g].trajectories[i]
    console.print(f"{run}  {split} step {step}, group {g} ({len(groups)} in the step), trajectory {i} "
                  f"({len(groups[g].trajectories)} in the group): reward {t.reward:.4g}",
                  style="bold", markup=False, highlight=False, soft_wrap=True)
    console.print()
    _transcript(t, logprobs)
    _footer(t, groups[g])


def _as_message(item: Any) -> tuple[dict[str, Any], str | None, Any]:
    """(message fields, finish_reason, logprobs) of a message dict or an OpenAI Choice."""
    if isinstance(item, dict):
        return item, None, None
    message = item.message.model_dump(exclude_none=True)
    return message, item.finish_reason, item.logprobs


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:  # multi-part content: text parts as text, others by their type
        kind = part.get("type") if isinstance(part, dict) else None
        parts.append(part.get("text", "") if kind == "text" else f"[{kind or 'part'}]")
    return "\n".join(parts)


def _arguments(text: Any) -> str:
    try:
        return json.dumps(json.loads(text), ensure_ascii=False, indent=2)
    except (TypeError, ValueError):
        return str(text)


def _transcript(t: Trajectory, logprobs: bool) -> None:
    from rich.markup import escape

    names: dict[str, str] = {}  # tool_call_id -> the tool it called
    for n, item in enumerate(t.messages_and_choices):
        message, finish, probs = _as_message(item)
        role = message.get("role", "?")
        head = f"[bold {ROLE_STYLE.get(role, 'white')}]{role}[/]"
        if message.get("name"):
            head += f" ({escape(message['name'])})"
        if role == "tool" and message.get("tool_call_id"):
            head += f" result of {escape(names.get(message['tool_call_id'], '?'))} [dim]({escape(message['tool_call_id'])})[/]"
        if finish:
            head += f" [dim]finish: {finish}[/]"
        console.print(f"[dim]{n:>3}[/] {head}", highlight=False)
        text = _text(message.get("content"))
        if text:
            console.print(text, markup=False, highlight=False)
        if message.get("refusal"):
            console.print(f"refused: {message['refusal']}", style="red", markup=False, highlight=False)
        for call in message.get("tool_calls") or []:
            fn = call.get("function", {})
            names[call.get("id", "")] = fn.get("name", "?")
            console.print(f"[bold]→ {escape(fn.get('name', '?'))}[/]([dim]{escape(call.get('id', ''))}[/])", highlight=False)
            console.print(_arguments(fn.get("arguments")), markup=False, highlight=False)
        if logprobs and probs is not None and getattr(probs, "content", None):
            tokens = " ".join(f"{p.token!r}:{p.logprob:.2f}" for p in probs.content)
            console.print(f"logprobs: {tokens}", style="dim", markup=False, highlight=False)
        console.print()


def _footer(t: Trajectory, group: TrajectoryGroup) -> None:
    out = []
    out.append(f"reward   {t.reward:.6g}")
    if t.metrics:
        out.append("metrics  " + ", ".join(f"{k}={v}" for k, v in t.metrics.items()))
    if t.metadata:
        out.append("metadata " + json.dumps(t.metadata, ensure_ascii=False, default=str))
    if t.tools:
        out.append("tools    " + ", ".join(x.get("function", {}).get("name", "?") for x in t.tools))
    for line in t.logs:
        out.append(f"log      {line}")
    for e in group.exceptions:
        out.append(f"group exception  {e.type}: {e.message}")
    for line in out:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
