"""Where a store lives: a URI plus one `storage_options` mapping, spelled as Lance spells them.

`Location.parse(uri, storage_options)` resolves the mapping once: other spellings Lance accepts
become Lance's canonical key (`region` -> `aws_region`), then the standard environment variables
of the URI's scheme fill the keys the caller did not give (`AWS_*` for s3://, `GOOGLE_*` and
`STORAGE_EMULATOR_HOST` for gs://). Explicit options always win over the environment. From that
one mapping both Lance's options (`lance_options()`, with artstore's retry and timeout defaults
where the user gave none) and fsspec's arguments (`fsspec_arguments()`) are derived, so tables
and files of a store always talk to the same endpoint with the same credentials.

Secrets never appear in `repr()` or in error messages (`redact()`); URIs with credentials in
them (`s3://key:secret@bucket`) are refused.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from artstore.errors import ValidationError
from artstore.storage import secrets as secret_registry

# Retry and timeout defaults for Lance where the user gave none (Lance's own: 3 retries, a 180 s
# retry window, 30 s per request). A persistent failure raises after about 5 retries with backoff
# (seconds), a hung server after at most client_retry_timeout + timeout per request.
LANCE_DEFAULTS: dict[str, str] = {
    "client_max_retries": "5",
    "client_retry_timeout": "60",  # whole seconds: the window in which one request is retried
    "connect_timeout": "5s",
    "timeout": "60s",  # one request, connect to last byte
}

# Other spellings Lance (object_store) accepts -> Lance's canonical key, for every scheme.
ALIASES: dict[str, str] = {
    "access_key_id": "aws_access_key_id",
    "secret_access_key": "aws_secret_access_key",
    "session_token": "aws_session_token",
    "aws_token": "aws_session_token",
    "region": "aws_region",
    "aws_default_region": "aws_region",
    "default_region": "aws_region",
    "aws_endpoint_url": "aws_endpoint",
    "endpoint_url": "aws_endpoint",
    "virtual_hosted_style_request": "aws_virtual_hosted_style_request",
    "service_account": "google_service_account",
    "google_service_account_path": "google_service_account",
    "service_account_path": "google_service_account",
    "service_account_key": "google_service_account_key",
    "application_credentials": "google_application_credentials",
    "google_cloud_project": "google_project",
    "request_timeout": "timeout",
}
# Spellings whose meaning depends on the scheme of the location they are given for.
_SCHEME_ALIASES: dict[str, dict[str, str]] = {
    "s3": {"endpoint": "aws_endpoint", "token": "aws_session_token", "skip_signature": "aws_skip_signature"},
    "gs": {"endpoint": "google_endpoint", "skip_signature": "google_skip_signature",
           "project": "google_project"},
}

# Environment variables read for each scheme, in precedence order: the first one set gives the key.
ENVIRONMENT: dict[str, tuple[tuple[str, str], ...]] = {
    "s3": (
        ("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
        ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
        ("AWS_SESSION_TOKEN", "aws_session_token"),
        ("AWS_REGION", "aws_region"),
        ("AWS_DEFAULT_REGION", "aws_region"),
        ("AWS_ENDPOINT_URL_S3", "aws_endpoint"),
        ("AWS_ENDPOINT_URL", "aws_endpoint"),
        ("AWS_ENDPOINT", "aws_endpoint"),
        ("AWS_ALLOW_HTTP", "allow_http"),
        ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "aws_virtual_hosted_style_request"),
        ("AWS_SKIP_SIGNATURE", "aws_skip_signature"),
        ("AWS_SERVER_SIDE_ENCRYPTION", "aws_server_side_encryption"),
        ("AWS_SSE_KMS_KEY_ID", "aws_sse_kms_key_id"),
    ),
    "gs": (
        ("GOOGLE_SERVICE_ACCOUNT", "google_service_account"),
        ("GOOGLE_SERVICE_ACCOUNT_PATH", "google_service_account"),
        ("GOOGLE_SERVICE_ACCOUNT_KEY", "google_service_account_key"),
        ("GOOGLE_APPLICATION_CREDENTIALS", "google_application_credentials"),
        ("GOOGLE_STORAGE_TOKEN", "google_storage_token"),
        ("GOOGLE_SKIP_SIGNATURE", "google_skip_signature"),
        ("STORAGE_EMULATOR_HOST", "google_endpoint"),  # gcsfs reads it too: Lance must agree
        ("GOOGLE_CLOUD_PROJECT", "google_project"),
    ),
}

SECRET_KEYS = frozenset({
    "aws_secret_access_key", "aws_session_token", "google_service_account_key", "google_storage_token",
    "azure_storage_account_key", "azure_client_secret", "azure_storage_sas_key", "azure_storage_token",
})
# artstore's own keys: Lance has no spelling for them (its GCS endpoint is set through the key).
_ARTSTORE_ONLY = frozenset({"google_endpoint", "google_project"})
_DURATION_KEYS = frozenset({"timeout", "connect_timeout", "pool_idle_timeout"})
_INT_KEYS = frozenset({"client_max_retries", "download_retry_count"})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_REMOTE_SCHEMES = ("s3", "gs", "az", "abfs", "memory")
_SCHEME_SPELLINGS = {"gcs": "gs", "s3a": "s3"}


def _split_scheme(uri: str) -> tuple[str, str]:
    if "://" in uri:
        scheme, rest = uri.split("://", 1)
        return scheme.lower(), rest
    return "file", uri


def truthy(value: str | None) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on", "y")


def duration_seconds(key: str, value: str) -> float:
    """Seconds in a duration as Lance writes them ("30s", "500ms", "2m"; a bare number is seconds)."""
    m = _DURATION.match(str(value))
    if not m:
        raise ValidationError(f"storage_options[{key!r}]", f"{value!r} is not a duration; write e.g. '30s' or '500ms'")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2) or "s"]


def _normalize(key: str, value: Any) -> str:
    """One value as Lance wants it: booleans as true/false, durations with a unit, whole seconds
    for client_retry_timeout, integers where Lance wants integers."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip()
    if key in _DURATION_KEYS:
        seconds = duration_seconds(key, text)
        return f"{int(seconds * 1000)}ms" if seconds != int(seconds) else f"{int(seconds)}s"
    if key == "client_retry_timeout":
        return str(max(1, round(duration_seconds(key, text))))
    if key in _INT_KEYS and not text.isdigit():
        raise ValidationError(f"storage_options[{key!r}]", f"must be a whole number, got {value!r}")
    return text


def resolve_options(scheme: str, explicit: Mapping[str, Any] | None,
                    environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The one storage_options mapping of a location on `scheme`: explicit options under Lance's
    canonical names, then the scheme's environment variables for the keys not given."""
    environ = os.environ if environ is None else environ
    aliases = {**ALIASES, **_SCHEME_ALIASES.get(scheme, {})}
    options: dict[str, str] = {}
    given_as: dict[str, str] = {}
    for raw_key, value in (explicit or {}).items():
        if value is None:
            continue
        key = aliases.get(str(raw_key).strip().lower(), str(raw_key).strip().lower())
        normalized = _normalize(key, value)
        if key in options and options[key] != normalized:
            raise ValidationError("storage_options", f"{given_as[key]!r} and {raw_key!r} both set {key!r}, differently")
        options[key], given_as[key] = normalized, str(raw_key)
    from_env: dict[str, str] = {}
    for var, key in ENVIRONMENT.get(scheme, ()):
        if key not in options and key not in from_env and environ.get(var):
            from_env[key] = _normalize(key, environ[var])
    _check_credentials_not_mixed(options, from_env, environ)
    return {**options, **from_env}


def _check_credentials_not_mixed(explicit: Mapping[str, str], from_env: Mapping[str, str],
                                 environ: Mapping[str, str]) -> None:
    # Lance itself fills missing keys from AWS_*: an explicit key would be sent with the
    # environment's session token, which belongs to another key, and fail with a cryptic error.
    if "aws_session_token" in from_env and explicit.get("aws_access_key_id") not in (None, environ.get("AWS_ACCESS_KEY_ID")):
        raise ValidationError(
            "storage_options", "aws_access_key_id is given but AWS_SESSION_TOKEN comes from the environment "
            "(it belongs to another key): give aws_session_token too, or unset AWS_SESSION_TOKEN")


def _with_base_url(key_json: str | None, endpoint: str) -> str:
    """A service-account key (JSON) that points Lance's GCS client at `endpoint` (object_store's
    `gcs_base_url`); without a key, an unsigned one (`disable_oauth`), as for an emulator."""
    try:
        key = json.loads(key_json) if key_json else {
            "disable_oauth": True, "client_email": "", "private_key": "", "private_key_id": ""}
    except json.JSONDecodeError:
        raise ValidationError("storage_options['google_service_account_key']", "is not valid JSON") from None
    return json.dumps({**key, "gcs_base_url": endpoint.rstrip("/")})


@dataclass(frozen=True)
class Location:
    """A folder in some storage. `uri` is absolute: a local path or `scheme://bucket/path`.

    `storage_options` is the resolved mapping (see the module doc); never printed.
    """

    uri: str
    storage_options: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, uri: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None,
              environ: Mapping[str, str] | None = None) -> Location:
        """A path, `file://path`, `s3://bucket/prefix` or `gs://bucket/prefix`, with its options."""
        raw = os.fspath(uri)
        if not isinstance(raw, str) or not raw.strip():
            raise ValidationError("uri", "is empty; give a folder path or an s3:// or gs:// URI")
        scheme, rest = _split_scheme(raw)
        scheme = _SCHEME_SPELLINGS.get(scheme, scheme)
        if scheme == "file":
            return cls(os.path.abspath(os.path.expanduser(rest)), resolve_options("file", storage_options, environ))._registered()
        if scheme not in _REMOTE_SCHEMES:
            raise ValidationError("uri", f"unsupported scheme {scheme!r}; use a path, file://, s3:// or gs://")
        bucket = rest.split("/", 1)[0]
        if "@" in bucket or ":" in bucket:
            raise ValidationError("uri", f"{scheme}:// URIs must not hold credentials or ports; "
                                         "give them in storage_options")
        if not bucket:
            raise ValidationError("uri", f"{scheme}:// URI without a bucket")
        return cls(f"{scheme}://{rest.rstrip('/')}", resolve_options(scheme, storage_options, environ))._registered()

    def _registered(self) -> Location:
        secret_registry.register(self.secrets())  # so that log records never show them
        return self

    @property
    def scheme(self) -> str:
        return _split_scheme(self.uri)[0]

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    def sibling(self, name: str) -> Location:
        """The location named `name` in the same folder as this one."""
        parent = os.path.dirname(self.uri.rstrip("/")) if self.is_local else posixpath.dirname(self.uri.rstrip("/"))
        return Location(parent, self.storage_options).child(name)

    def child(self, *parts: str) -> Location:
        """A location below this one (parts are joined with '/')."""
        if self.is_local:
            return Location(os.path.join(self.uri, *parts), self.storage_options)
        return Location(posixpath.join(self.uri, *parts), self.storage_options)

    # -- what each library is given ---------------------------------------------------------------
    def lance_options(self) -> dict[str, str] | None:
        """storage_options for Lance (None for local paths): the resolved mapping without artstore's
        own keys, `allow_http` when the endpoint is http://, a GCS endpoint carried in the
        service-account key, and LANCE_DEFAULTS for the retry/timeout keys not given."""
        if self.is_local:
            return None
        if self.scheme == "memory":
            return dict(self.storage_options) or None
        o = dict(self.storage_options)
        out = {k: v for k, v in o.items() if k not in _ARTSTORE_ONLY}
        endpoint = o.get("aws_endpoint") if self.scheme == "s3" else o.get("google_endpoint")
        if self.scheme == "gs" and endpoint:
            if "google_service_account" in o and "google_service_account_key" not in o:
                raise ValidationError(
                    "storage_options", "google_endpoint with google_service_account (a file path) cannot be "
                    "given to Lance: give the key inline as google_service_account_key")
            out["google_service_account_key"] = _with_base_url(o.get("google_service_account_key"), endpoint)
        if endpoint and endpoint.lower().startswith("http://"):
            out.setdefault("allow_http", "true")  # else Lance fails with a cryptic "builder error"
        for k, v in LANCE_DEFAULTS.items():
            out.setdefault(k, v)
        return out

    def fsspec_arguments(self) -> tuple[str, dict[str, Any]]:
        """(protocol, keyword arguments) for `fsspec.filesystem`, derived from the same mapping.
        Listings are never cached: other processes write to the same store."""
        o = self.storage_options
        if self.scheme == "s3":
            return "s3", _s3fs_arguments(o)
        if self.scheme == "gs":
            return "gs", _gcsfs_arguments(o)
        return self.scheme, {}

    def path_for_fsspec(self) -> str:
        """The path as fsspec names it (no scheme for remote stores)."""
        return self.uri if self.is_local else _split_scheme(self.uri)[1]

    # -- secrets ------------------------------------------------------------------------------------
    def secrets(self) -> list[str]:
        """Every secret value of this location (and the forms derived from them), longest first."""
        found = set()
        for k, v in self.storage_options.items():
            if k in SECRET_KEYS and v:
                found.add(v)
        key, endpoint = self.storage_options.get("google_service_account_key"), self.storage_options.get("google_endpoint")
        if key:
            found.update(_key_secrets(key))
            if endpoint:
                try:
                    found.add(_with_base_url(key, endpoint))
                except ValidationError:
                    pass
        return sorted(found, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """`text` with every secret value of this location replaced by '***'."""
        for secret in self.secrets():
            text = text.replace(secret, "***")
        return text

    def __str__(self) -> str:
        return self.uri


def _key_secrets(key_json: str) -> list[str]:
    try:
        key = json.loads(key_json)
    except (json.JSONDecodeError, TypeError):
        return []
    return [str(key[k]) for k in ("private_key", "refresh_token", "client_secret") if isinstance(key, dict) and key.get(k)]


def _s3fs_arguments(o: Mapping[str, str]) -> dict[str, Any]:
    kw: dict[str, Any] = {"use_listings_cache": False}
    if truthy(o.get("aws_skip_signature")):
        kw["anon"] = True
    for ours, theirs in (("aws_access_key_id", "key"), ("aws_secret_access_key", "secret"),
                         ("aws_session_token", "token"), ("aws_endpoint", "endpoint_url")):
        if o.get(ours):
            kw[theirs] = o[ours]
    client: dict[str, Any] = {}
    if o.get("aws_region"):
        client["region_name"] = o["aws_region"]
    if truthy(o.get("allow_invalid_certificates")):
        client["verify"] = False
    if client:
        kw["client_kwargs"] = client
    retries = int(o.get("client_max_retries", LANCE_DEFAULTS["client_max_retries"]))
    config: dict[str, Any] = {
        "connect_timeout": duration_seconds("connect_timeout", o.get("connect_timeout", LANCE_DEFAULTS["connect_timeout"])),
        "read_timeout": duration_seconds("timeout", o.get("timeout", LANCE_DEFAULTS["timeout"])),
        "retries": {"max_attempts": retries + 1, "mode": "standard"},
    }
    if "aws_virtual_hosted_style_request" in o:
        config["s3"] = {"addressing_style": "virtual" if truthy(o["aws_virtual_hosted_style_request"]) else "path"}
    if o.get("proxy_url"):
        config["proxies"] = {"http": o["proxy_url"], "https": o["proxy_url"]}
    kw["config_kwargs"] = config
    extra = {}
    if o.get("aws_server_side_encryption"):
        extra["ServerSideEncryption"] = o["aws_server_side_encryption"]
    if o.get("aws_sse_kms_key_id"):
        extra["SSEKMSKeyId"] = o["aws_sse_kms_key_id"]
    if extra:
        kw["s3_additional_kwargs"] = extra
    return kw


def _gcsfs_arguments(o: Mapping[str, str]) -> dict[str, Any]:
    kw: dict[str, Any] = {"use_listings_cache": False}
    if truthy(o.get("google_skip_signature")):
        kw["token"] = "anon"
    elif o.get("google_storage_token"):
        from google.oauth2.credentials import Credentials  # gcsfs's dependency; only when asked for

        kw["token"] = Credentials(o["google_storage_token"])
    elif o.get("google_service_account_key"):
        try:
            kw["token"] = json.loads(o["google_service_account_key"])
        except json.JSONDecodeError:
            raise ValidationError("storage_options['google_service_account_key']", "is not valid JSON") from None
    elif o.get("google_service_account"):
        kw["token"] = o["google_service_account"]
    elif o.get("google_application_credentials"):
        kw["token"] = o["google_application_credentials"]
    if o.get("google_endpoint"):
        kw["endpoint_url"] = o["google_endpoint"].rstrip("/")
    if o.get("google_project"):
        kw["project"] = o["google_project"]
    kw["requests_timeout"] = duration_seconds("timeout", o.get("timeout", LANCE_DEFAULTS["timeout"]))
    return kw
