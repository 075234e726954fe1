"""Where a store lives: a URI plus one `storage_options` mapping, spelled as Lance spells them.

From that one mapping both Lance's options and fsspec's arguments are derived, so local disk,
`s3://` and `gs://` behave the same. Secrets never appear in `repr()` or error messages.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from artstore.errors import ValidationError

SECRET_KEYS = frozenset({
    "aws_secret_access_key", "secret_access_key", "aws_session_token", "session_token",
    "google_service_account_key", "service_account_key", "azure_storage_account_key", "token",
})
_REMOTE_SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "memory")


def _split_scheme(uri: str) -> tuple[str, str]:
    if "://" in uri:
        scheme, rest = uri.split("://", 1)
        return scheme.lower(), rest
    return "file", uri


@dataclass(frozen=True)
class Location:
    """A folder in some storage. `uri` is absolute: a local path or `scheme://bucket/path`."""

    uri: str
    storage_options: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, uri: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None) -> Location:
        raw = os.fspath(uri)
        if not raw:
            raise ValidationError("uri", "is empty; give a folder path or an s3:// or gs:// URI")
        scheme, rest = _split_scheme(raw)
        options = {str(k): str(v) for k, v in (storage_options or {}).items()}
        if scheme == "file":
            return cls(os.path.abspath(os.path.expanduser(rest)), options)
        if scheme not in _REMOTE_SCHEMES:
            raise ValidationError("uri", f"unsupported scheme {scheme!r}; use a path, s3://, gs:// or file://")
        scheme = "gs" if scheme == "gcs" else scheme
        return cls(f"{scheme}://{rest.rstrip('/')}", options)

    @property
    def scheme(self) -> str:
        return _split_scheme(self.uri)[0]

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    def child(self, *parts: str) -> Location:
        """A location below this one (parts are joined with '/')."""
        if self.is_local:
            return Location(os.path.join(self.uri, *parts), self.storage_options)
        return Location(posixpath.join(self.uri, *parts), self.storage_options)

    def lance_options(self) -> dict[str, str] | None:
        """storage_options for Lance (None for local paths)."""
        return dict(self.storage_options) if self.storage_options and not self.is_local else None

    def fsspec_arguments(self) -> tuple[str, dict[str, Any]]:
        """(protocol, keyword arguments) for `fsspec.filesystem`, derived from storage_options."""
        o = self.storage_options
        if self.scheme == "s3":
            kw: dict[str, Any] = {}
            if "aws_access_key_id" in o:
                kw["key"] = o["aws_access_key_id"]
            if "aws_secret_access_key" in o:
                kw["secret"] = o["aws_secret_access_key"]
            if "aws_session_token" in o:
                kw["token"] = o["aws_session_token"]
            endpoint = o.get("aws_endpoint") or o.get("endpoint")
            if endpoint:
                kw["endpoint_url"] = endpoint
            region = o.get("aws_region") or o.get("region")
            if region:
                kw["client_kwargs"] = {"region_name": region}
            return "s3", kw
        if self.scheme == "gs":
            kw = {}
            sa = o.get("google_service_account") or o.get("service_account")
            if sa:
                kw["token"] = sa
            endpoint = o.get("google_endpoint") or o.get("endpoint")
            if endpoint:
                kw["endpoint_url"] = endpoint
                kw.setdefault("token", "anon")
            if "google_project" in o:
                kw["project"] = o["google_project"]
            return "gs", kw
        return self.scheme, {}

    def path_for_fsspec(self) -> str:
        """The path as fsspec names it (no scheme for remote stores)."""
        return self.uri if self.is_local else _split_scheme(self.uri)[1]

    def __str__(self) -> str:
        return self.uri

    def redact(self, text: str) -> str:
        """`text` with every secret value of this location replaced by '***'."""
        for k, v in self.storage_options.items():
            if k.lower() in SECRET_KEYS and v:
                text = text.replace(v, "***")
        return text
