"""The `plot` command: a metric's per-step curve for one or more runs, drawn in the terminal
(plotext) or written as a PNG, SVG or PDF (matplotlib). Both come with `pip install 'artstore[plot]'`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from artstore.cli.common import (
    StorageOption,
    StoreOption,
    console,
    did_you_mean,
    get_run,
    get_store,
    handle_errors,
)
from artstore.errors import ArtstoreError, ValidationError

if TYPE_CHECKING:
    from artstore.read.run import Run

FILE_SUFFIXES = (".png", ".svg", ".pdf")


def register(app: typer.Typer) -> None:
    app.command("plot")(plot)


def _need(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ArtstoreError(f"`artstore plot` needs {module.split('.')[0]}: pip install 'artstore[plot]'") from None


def series(runs: list[Run], metrics: list[str], smooth: str | None) -> list[tuple[str, list[int], list[float],
                                                                                   list[float] | None]]:
    """(label, steps, per-step means, smoothed means or None) for each run and metric."""
    from artstore.checkpoints.smoothing import parse_smoothing, smoothed

    smoothing = parse_smoothing(smooth) if smooth else None
    out = []
    for r in runs:
        summary = r.step_summary()
        for m in metrics:
            means = summary.means(m)
            if not means:
                raise ValidationError("--metric", f"{m!r} is not logged in {r.project}/{r.name}"
                                                  f"{did_you_mean(m, sorted(summary.names()))}")
            steps = sorted(means)
            label = f"{r.project}/{r.name} {m}" if len(metrics) > 1 else f"{r.project}/{r.name}"
            smooth_values = None if smoothing is None else [smoothed(means, smoothing)[s] for s in steps]
            out.append((label, steps, [means[s] for s in steps], smooth_values))
    return out


@handle_errors
def plot(
    runs: Annotated[list[str], typer.Argument(metavar="PROJECT/MODEL...", help="One or more runs, overlaid.")],
    metric: Annotated[list[str], typer.Option("--metric", "-m", help="The metric (repeatable), e.g. val/reward.")],
    smooth: Annotated[str | None, typer.Option(
        "--smooth", metavar="ema:ALPHA|window:N",
        help="Also draw a smoothed curve: an EMA (ALPHA weighs the newest step, as in `prune --smooth`) or a "
             "moving average over N steps.")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-O", dir_okay=False, help="Write a PNG, SVG or PDF (by its suffix) instead of drawing here.")] = None,
    width: Annotated[int | None, typer.Option(help="Terminal chart width in characters (default: the terminal's).")]
    = None,
    height: Annotated[int, typer.Option(help="Terminal chart height in lines.")] = 20,
    store: StoreOption = ".art",
    storage_option: StorageOption = None,
) -> None:
    """Plot a metric's per-step mean against the step, for one or more runs.

    Examples:

        artstore plot email-search/agent-001 -m val/reward --smooth ema:0.3

        artstore plot email-search/agent-001 email-search/agent-002 -m val/reward --output curves.png
    """
    if output is not None and output.suffix.lower() not in FILE_SUFFIXES:
        raise typer.BadParameter(f"write one of {', '.join(FILE_SUFFIXES)}", param_hint="--output")
    s = get_store(store, storage_option)
    lines = series([get_run(s, r) for r in runs], metric, smooth)
    title = ", ".join(metric) + (f" (smoothed: {smooth})" if smooth else "")
    if output is not None:
        _to_file(lines, title, output)
        console.print(f"wrote {output}", markup=False, highlight=False)
    else:
        _to_terminal(lines, title, width, height)


def _to_file(lines: list, title: str, output: Path) -> None:
    matplotlib = _need("matplotlib")
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    for label, steps, values, smoothed_values in lines:
        if smoothed_values is None:
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=label)
        else:
            (raw,) = ax.plot(steps, values, alpha=0.3)
            ax.plot(steps, smoothed_values, color=raw.get_color(), label=label)
    ax.set(title=title, xlabel="step")
    ax.grid(alpha=0.3)
    ax.legend()
    try:
        fig.savefig(output)
    finally:
        plt.close(fig)


def _to_terminal(lines: list, title: str, width: int | None, height: int) -> None:
    plt = _need("plotext")
    plt.clear_figure()
    colour = sys.stdout.isatty()
    if not colour:
        plt.theme("clear")
    for label, steps, values, smoothed_values in lines:
        if smoothed_values is None:
            plt.plot(steps, values, label=label, marker="braille")
        else:
            plt.scatter(steps, values, marker="dot")
            plt.plot(steps, smoothed_values, label=label, marker="braille")
    plt.title(title)
    plt.xlabel("step")
    steps = sorted({s for _, xs, _, _ in lines for s in xs})
    if len(steps) <= 12:
        plt.xticks(steps)  # whole steps, not 1.2 and 2.5
    plt.plotsize(width or min(console.width, 120), height)
    text = plt.build()
    sys.stdout.write((text if colour else plt.uncolorize(text)) + "\n")  # no colour codes in a file or pipe
    sys.stdout.flush()
