"""Metric names as openpipe-art 0.5.23 writes them, and the read-time mapping of 0.5.9's names.

0.5.23's rules (`Model._qualify_metric_key`): a key whose first path part is a metric section
(`loss`, `time`, `data`, `costs`, ...) or a standard split (`train`, `val`, `test`) is kept as
given; any other key is prefixed with the split (`judge/score` logged on "val" is
`val/judge/score`; on a split outside train/val/test even `eval/reward` becomes
`eval/eval/reward`, as 0.5.23 writes it). Every history row also holds `training_step`.

Stores written before (0.5.9's names) are read, not rewritten: `current_name` maps
`s/group_metric_<k>` to `s/group/<k>` and `train/data/step_num_<k>` to `data/step_num_<k>` each
time metrics are read, so an old run and its continuation are one series.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

SECTIONS = frozenset({
    "loss", "objective", "offpolicy", "pipeline", "pipeline_settings", "queue", "sample_efficiency",
    "throughput", "costs", "discarded", "time", "data", "vllm",
})
SPLITS = frozenset({"train", "val", "test"})
SFT_SPLIT = "sft"  # train_sft's per-gradient-step rows: `sft/<k>`
TRAINING_STEP = "training_step"
CUMULATIVE_SECTIONS = frozenset({"costs", "time", "data"})  # each step value also adds to `<section>/cum/...`

_OLD_GROUP = re.compile(r"^([^/]+)/group_metric_(.+)$")
_OLD_TRAIN_DATA = re.compile(r"^train/(data/step_num_.+)$")


def qualify(key: str, split: str) -> str:
    """The history column of metric `key` logged on `split` (0.5.23's rule, see the module doc)."""
    first = key.split("/", 1)[0]
    if split == SFT_SPLIT:
        return key if first == SFT_SPLIT else f"{split}/{key}"
    if "/" in key and (first in SECTIONS or first in SPLITS):
        return key
    return f"{split}/{key}"


def is_builder_managed(key: str) -> bool:
    """Keys summed per step and rolled up by the metrics builder (costs, step times, step counts)."""
    return key.startswith(("costs/", "time/step_", "data/step_"))


def is_cumulative(key: str) -> bool:
    parts = key.split("/", 2)
    return len(parts) >= 2 and parts[1] == "cum"


def cumulative_name(key: str) -> str:
    """`data/step_num_scenarios` -> `data/cum/num_scenarios`, `costs/train/x` -> `costs/cum/train/x`."""
    section, rest = key.split("/", 1)
    return f"{section}/cum/{rest.removeprefix('step_')}"


def current_name(name: str) -> str:
    """A stored metric name as 0.5.23 spells it (0.5.9's spellings mapped; others unchanged)."""
    if m := _OLD_GROUP.match(name):
        return f"{m[1]}/group/{m[2]}"
    if m := _OLD_TRAIN_DATA.match(name):
        return m[1]
    return name


def current_names(names: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """`current_name` over an Arrow string column (vectorised; unchanged when nothing is old). The
    regexes run once per distinct name (a run's long metrics repeat a few names: 6,000 values
    took ~3-5 ms, ~0.5 ms this way)."""
    column = names.combine_chunks() if isinstance(names, pa.ChunkedArray) else names
    encoded = pc.dictionary_encode(column)
    distinct = pc.replace_substring_regex(encoded.dictionary, pattern=_OLD_GROUP.pattern, replacement=r"\1/group/\2")
    distinct = pc.replace_substring_regex(distinct, pattern=_OLD_TRAIN_DATA.pattern, replacement=r"\1")
    mapped = distinct.take(encoded.indices)
    return pa.chunked_array([mapped], mapped.type) if isinstance(names, pa.ChunkedArray) else mapped


def with_current_names(table: pa.Table) -> pa.Table:
    """`table` (with a `name` column of metric names) with its names mapped by `current_name`."""
    if "name" not in table.column_names or table.num_rows == 0:
        return table
    i = table.schema.get_field_index("name")
    return table.set_column(i, table.schema.field(i), current_names(table["name"]))
