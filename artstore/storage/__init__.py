"""The storage boundary: the only code that imports lance and fsspec.

`location` turns a URI plus one `storage_options` mapping into what Lance and fsspec each need;
`tables` holds every Lance operation but compaction and cleanup, which live in `compaction`;
`files` every fsspec file operation.
"""

from artstore.storage.location import Location

__all__ = ["Location"]
