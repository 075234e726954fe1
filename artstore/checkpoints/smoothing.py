"""Smoothing of per-step means, as data (pydantic models) and applied (`smoothed`): how a ranked
retention rule (`artstore.checkpoints.retention.KeepBest`) scores a step, and how the plots smooth
a metric's series. Smoothing runs over the steps that have a value, in step order:
- `Mean()`: the per-step mean;
- `Window(size=W)`: the mean of the per-step means of the last W steps with a value;
- `Ema(alpha=a)`: e_0 = m_0, e_i = a * m_i + (1 - a) * e_(i-1) (pandas' `ewm(alpha=a, adjust=False)`).
"""

from __future__ import annotations

from typing import Annotated, Literal

import pydantic

from artstore.errors import ValidationError

_FROZEN = pydantic.ConfigDict(extra="forbid", frozen=True)


class Mean(pydantic.BaseModel):
    """The per-step mean (ART's ranking)."""

    model_config = _FROZEN
    kind: Literal["mean"] = "mean"

    def describe(self) -> str:
        return "mean"


class Window(pydantic.BaseModel):
    """Moving average of the per-step means over the last `size` steps that have a value."""

    model_config = _FROZEN
    kind: Literal["window"] = "window"
    size: int = pydantic.Field(ge=1)

    def describe(self) -> str:
        return f"window:{self.size}"


class Ema(pydantic.BaseModel):
    """Exponential moving average of the per-step means; `alpha` weighs the newest step."""

    model_config = _FROZEN
    kind: Literal["ema"] = "ema"
    alpha: float = pydantic.Field(gt=0, le=1)

    def describe(self) -> str:
        return f"ema:{self.alpha:g}"


Smoothing = Annotated[Mean | Window | Ema, pydantic.Field(discriminator="kind")]


def parse_smoothing(text: str) -> Mean | Window | Ema:
    """'mean', 'window:5' or 'ema:0.9' -> a smoothing."""
    kind, _, arg = text.strip().partition(":")
    try:
        if kind == "mean" and not arg:
            return Mean()
        if kind == "window":
            return Window(size=int(arg))
        if kind == "ema":
            return Ema(alpha=float(arg))
    except (ValueError, pydantic.ValidationError):
        pass
    raise ValidationError("smooth", f"{text!r}: use mean, window:N (N >= 1) or ema:ALPHA (0 < ALPHA <= 1)")


def smoothed(means: dict[int, float], smooth: Mean | Window | Ema) -> dict[int, float]:
    """Smooth per-step means (in step order, over the steps that have a value)."""
    steps = sorted(means)
    values = [means[s] for s in steps]
    if isinstance(smooth, Window):
        out = []
        for i in range(len(values)):
            window = values[max(0, i - smooth.size + 1): i + 1]
            out.append(sum(window) / len(window))
        values = out
    elif isinstance(smooth, Ema):
        out = []
        for i, v in enumerate(values):
            out.append(v if i == 0 else smooth.alpha * v + (1 - smooth.alpha) * out[-1])
        values = out
    return dict(zip(steps, values, strict=True))
