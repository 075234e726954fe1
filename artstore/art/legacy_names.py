"""Metric names openpipe-art wrote before 0.5.23 (0.5.9), and the names 0.5.23 gives them.

Used by `import-art` on history rows without `training_step` (every 0.5.23 row has one), so a run
imported from 0.5.9 and continued under artstore is one series per metric.
"""

from __future__ import annotations

from artstore.records.metric_names import SECTIONS, current_name


def current_metric_name(name: str) -> str:
    """A history column written by openpipe-art before 0.5.23 (0.5.9), as 0.5.23 names it:
    `s/group_metric_<k>` -> `s/group/<k>`; `s/<section>/...` -> `<section>/...` (`train/loss/train`
    -> `loss/train`, `train/data/step_num_<k>` -> `data/step_num_<k>`), except the per-split
    counts `s/data/step_num_<k>` 0.5.23 itself writes on splits other than train. Other names
    are unchanged."""
    if (renamed := current_name(name)) != name:
        return renamed  # the spellings every reader maps as well
    split, _, rest = name.partition("/")
    section = rest.split("/", 1)[0]
    if "/" in rest and section in SECTIONS and not (split != "train" and rest.startswith("data/step_num_")):
        return rest
    return name
