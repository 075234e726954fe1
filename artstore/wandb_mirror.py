"""wandb as a mirror of the store: the only importer of wandb.

After the store commits, each history row goes to wandb with `training_step` as the x axis. The
store is the record: any wandb failure is a warning, never an exception, and loses nothing.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)


def wants_wandb(report_metrics: list[str] | None) -> bool:
    """ART's rule: None means 'when WANDB_API_KEY is set'; a list must name "wandb". artstore
    also mirrors with WANDB_MODE=offline and no key when "wandb" is named (ART cannot)."""
    if report_metrics is None:
        return bool(os.environ.get("WANDB_API_KEY"))
    return "wandb" in report_metrics


def run_id(project: str, model: str) -> str:
    """A stable wandb run id for project/model (wandb allows letters, digits, '-' and '_')."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{project}--{model}")[:128]


class WandbMirror:
    """Mirrors history rows of one run to wandb. Lazily starts the wandb run on first use."""

    def __init__(self, project: str, model: str, config: Mapping[str, Any] | None = None):
        self.project = project
        self.model = model
        self.config = dict(config or {})
        self._run: Any = None
        self._broken = False

    def _start(self) -> Any:
        import wandb

        run = wandb.init(
            project=self.project, name=self.model, id=run_id(self.project, self.model), resume="allow",
            config=self.config, reinit="create_new",
        )
        run.define_metric("training_step")
        run.define_metric("*", step_metric="training_step")
        return run

    def log(self, metrics: Mapping[str, float], step: int) -> bool:
        """Send one history row. Returns False (with a warning) when wandb failed."""
        if self._broken:
            return False
        try:
            if self._run is None:
                self._run = self._start()
            self._run.log({**metrics, "training_step": step})
            return True
        except Exception as e:  # noqa: BLE001 - wandb failures must never break logging
            self._broken = True
            warnings.warn(f"wandb mirror failed ({type(e).__name__}: {e}); the store has the data", stacklevel=3)
            logger.warning("wandb mirror failed", exc_info=True)
            return False

    def update_config(self, config: Mapping[str, Any]) -> None:
        """Merge `config` into the run's config (now if the wandb run has started, else at start)."""
        self.config.update(config)
        if self._run is None or self._broken:
            return
        try:
            self._run.config.update(dict(config))
        except Exception as e:  # noqa: BLE001 - wandb failures must never break the caller
            warnings.warn(f"wandb config update failed ({type(e).__name__}: {e})", stacklevel=3)

    def close(self) -> None:
        if self._run is not None:
            try:
                self._run.finish()
            except Exception:  # noqa: BLE001
                logger.warning("wandb finish failed", exc_info=True)
            self._run = None
