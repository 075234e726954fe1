"""The storage boundary: the only code that imports lance and fsspec.

`location` turns a URI plus one `storage_options` mapping into what Lance and fsspec each need;
`failures` what a failed call means. Lance datasets: `datasets` opens one at a version (latest,
version, tag or time) and lists its versions, `handles` keeps a writer's latest open, `writes`
writes and commits, `scans` reads rows, `keys` reads by key in commit order (with the key
caches), `fragments` and `data_files` what a version is made of, `transactions` what its
versions did, `tags` the names of a run's points (records answered after cleanup; a Lance tag
only where a version is pinned), `compaction` compacts and cleans up (on S3 through
`version_cleanup`: a few requests per cleanup), `version_map` answers versions cleanup removed.
`files` holds every fsspec file operation.
"""

import os

# Lance's Rust logger reads LANCE_LOG once, when lance is first imported, and otherwise warns
# "No existing dataset ... it will be created" on every new table. This package is imported
# before any module of it imports lance, so the default takes effect; a user's LANCE_LOG wins.
os.environ.setdefault("LANCE_LOG", "error")

from artstore.storage.location import Location  # noqa: E402

__all__ = ["Location"]
