"""The storage boundary: the only code that imports lance and fsspec.

`location` turns a URI plus one `storage_options` mapping into what Lance and fsspec each need;
`tables` holds every Lance operation but compaction and cleanup, which live in `compaction`, and
the reads by key in commit order (with their key caches), which live in `keys`;
`files` every fsspec file operation.
"""

import os

# Lance's Rust logger reads LANCE_LOG once, when lance is first imported, and otherwise warns
# "No existing dataset ... it will be created" on every new table. This package is imported
# before any module of it imports lance, so the default takes effect; a user's LANCE_LOG wins.
os.environ.setdefault("LANCE_LOG", "error")

from artstore.storage.location import Location  # noqa: E402

__all__ = ["Location"]
