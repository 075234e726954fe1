"""How long old versions stay: the defaults every writer and reader share (no imports, so that
`open_store` and the command line need none of the upkeep's modules to name them)."""

from __future__ import annotations

from datetime import timedelta

# How long old versions are kept before cleanup removes them (tagged versions always stay).
DEFAULT_RETENTION = timedelta(days=7)
# A journal run (its logs hold each log's rows: `artstore.log.journal`) keeps the physical
# versions of its logs and data tables only this long: for readers in flight. Its data tables are
# always read at their latest version, gated by the committed logs, and an older version of its
# logs is answered from the run's version map (`artstore.storage.version_map`), so `as_of` any
# earlier version or time still reads what it read then.
DEFAULT_READER_WINDOW = timedelta(seconds=60)
