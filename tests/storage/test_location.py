"""One storage_options mapping per store -> Lance's options and fsspec's arguments (no server)."""

from __future__ import annotations

import json

import pytest

from artstore.errors import ValidationError
from artstore.storage.location import LANCE_DEFAULTS, Location, resolve_options

S3 = {"aws_endpoint": "http://127.0.0.1:9000", "aws_access_key_id": "AKID", "aws_secret_access_key": "s3cr3t-key",
      "aws_region": "eu-west-1"}
KEY = {"type": "service_account", "client_email": "sa@p.iam.gserviceaccount.com", "private_key": "-----PRIVATE-----",
       "private_key_id": "kid"}


def parse(uri, options=None, env=None):
    return Location.parse(uri, options, environ=env or {})


# -- URIs ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("uri", "expected"), [
    ("s3://bucket/runs/", "s3://bucket/runs"),
    ("S3://bucket/runs", "s3://bucket/runs"),
    ("s3a://bucket/runs", "s3://bucket/runs"),
    ("gs://bucket/runs", "gs://bucket/runs"),
    ("gcs://bucket/runs", "gs://bucket/runs"),
])
def test_remote_uris_are_normalised(uri, expected):
    assert parse(uri).uri == expected


def test_plain_paths_and_file_uris_are_absolute_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse(".art").uri == str(tmp_path / ".art")
    assert parse(f"file://{tmp_path}/x").uri == str(tmp_path / "x")
    assert parse(tmp_path / "y").uri == str(tmp_path / "y")  # os.PathLike
    assert parse(".art").is_local and parse(".art").lance_options() is None


@pytest.mark.parametrize("uri", ["", "ftp://host/x", "s3://", "s3://AKID:secret@bucket/x", "gs://bucket:443/x"])
def test_bad_uris_are_refused_without_echoing_credentials(uri):
    with pytest.raises(ValidationError) as err:
        parse(uri)
    assert "secret" not in str(err.value)


def test_children_keep_the_options():
    loc = parse("s3://b/store", S3).child("p", "models", "m", "logs.lance")
    assert loc.uri == "s3://b/store/p/models/m/logs.lance"
    assert loc.storage_options["aws_secret_access_key"] == "s3cr3t-key"
    assert loc.path_for_fsspec() == "b/store/p/models/m/logs.lance"


# -- resolving the mapping -------------------------------------------------------------------------

def test_other_spellings_become_lances_canonical_keys():
    o = resolve_options("s3", {"access_key_id": "A", "secret_access_key": "S", "region": "r",
                               "endpoint": "http://e", "token": "T", "request_timeout": 30})
    assert o == {"aws_access_key_id": "A", "aws_secret_access_key": "S", "aws_region": "r",
                 "aws_endpoint": "http://e", "aws_session_token": "T", "timeout": "30s"}
    g = resolve_options("gs", {"service_account": "/k.json", "endpoint": "http://g", "project": "p"})
    assert g == {"google_service_account": "/k.json", "google_endpoint": "http://g", "google_project": "p"}


def test_two_spellings_of_one_key_must_agree():
    assert resolve_options("s3", {"region": "r", "aws_region": "r"}) == {"aws_region": "r"}
    with pytest.raises(ValidationError, match="aws_region"):
        resolve_options("s3", {"region": "a", "aws_region": "b"})


@pytest.mark.parametrize(("key", "given", "lance"), [
    ("timeout", 30, "30s"), ("timeout", "30", "30s"), ("timeout", "1m", "60s"), ("timeout", 0.5, "500ms"),
    ("connect_timeout", "5s", "5s"), ("client_retry_timeout", "20s", "20"), ("client_retry_timeout", 7, "7"),
    ("allow_http", True, "true"), ("allow_http", False, "false"), ("client_max_retries", 2, "2"),
])
def test_values_are_written_as_lance_wants_them(key, given, lance):
    assert resolve_options("s3", {key: given})[key] == lance


@pytest.mark.parametrize(("key", "bad"), [("timeout", "soon"), ("client_max_retries", "many")])
def test_bad_values_name_the_key(key, bad):
    with pytest.raises(ValidationError, match=key):
        resolve_options("s3", {key: bad})


def test_aws_environment_fills_what_was_not_given_and_explicit_wins():
    env = {"AWS_ACCESS_KEY_ID": "ENVKEY", "AWS_SECRET_ACCESS_KEY": "envsecret", "AWS_DEFAULT_REGION": "us-west-2",
           "AWS_REGION": "eu-central-1", "AWS_ENDPOINT_URL": "http://env:9000", "AWS_ENDPOINT": "http://older",
           "GOOGLE_SERVICE_ACCOUNT": "/ignored-for-s3.json", "UNRELATED": "x"}
    assert resolve_options("s3", None, env) == {
        "aws_access_key_id": "ENVKEY", "aws_secret_access_key": "envsecret", "aws_region": "eu-central-1",
        "aws_endpoint": "http://env:9000"}
    o = resolve_options("s3", {"region": "ap-south-1", "aws_endpoint": "http://mine"}, env)
    assert o["aws_region"] == "ap-south-1" and o["aws_endpoint"] == "http://mine"
    assert o["aws_access_key_id"] == "ENVKEY"


def test_google_environment_fills_gs_locations_only():
    env = {"GOOGLE_SERVICE_ACCOUNT_KEY": json.dumps(KEY), "GOOGLE_CLOUD_PROJECT": "proj",
           "STORAGE_EMULATOR_HOST": "http://127.0.0.1:4443", "AWS_ACCESS_KEY_ID": "x"}
    assert resolve_options("gs", None, env) == {"google_service_account_key": json.dumps(KEY),
                                                "google_project": "proj", "google_endpoint": "http://127.0.0.1:4443"}
    assert resolve_options("file", None, env) == {}
    assert resolve_options("gs", {"google_project": "mine"}, env)["google_project"] == "mine"


def test_an_explicit_key_is_not_mixed_with_the_environments_session_token():
    env = {"AWS_ACCESS_KEY_ID": "ENVKEY", "AWS_SESSION_TOKEN": "envtoken"}
    with pytest.raises(ValidationError, match="AWS_SESSION_TOKEN"):
        resolve_options("s3", {"aws_access_key_id": "OTHER", "aws_secret_access_key": "s"}, env)
    same = resolve_options("s3", {"aws_access_key_id": "ENVKEY"}, env)  # the same key: its token fits
    assert same["aws_session_token"] == "envtoken"
    own = resolve_options("s3", {"aws_access_key_id": "OTHER", "aws_session_token": "mine"}, env)
    assert own["aws_session_token"] == "mine"


def test_parse_reads_the_process_environment(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "sa-east-1")
    assert Location.parse("s3://b/x").storage_options["aws_region"] == "sa-east-1"
    assert Location.parse("s3://b/x", {"aws_region": "us-east-1"}).storage_options["aws_region"] == "us-east-1"


# -- Lance ---------------------------------------------------------------------------------------

def test_lance_gets_the_mapping_plus_defaults_for_what_the_user_did_not_set():
    o = parse("s3://b/x", S3).lance_options()
    assert o == {**S3, "allow_http": "true", **LANCE_DEFAULTS}  # allow_http: the endpoint is http://
    mine = parse("s3://b/x", {**S3, "client_max_retries": 1, "timeout": "5s", "allow_http": False}).lance_options()
    assert mine["client_max_retries"] == "1" and mine["timeout"] == "5s" and mine["allow_http"] == "false"
    assert mine["client_retry_timeout"] == LANCE_DEFAULTS["client_retry_timeout"]
    assert "allow_http" not in parse("s3://b/x", {"aws_endpoint": "https://minio.example"}).lance_options()


def test_lance_on_gcs_gets_google_keys_and_the_endpoint_inside_the_key():
    plain = parse("gs://b/x", {"google_service_account": "/sa.json"}).lance_options()
    assert plain == {"google_service_account": "/sa.json", **LANCE_DEFAULTS}
    # An endpoint (an emulator, a private endpoint): object_store reads it from the key's gcs_base_url.
    o = parse("gs://b/x", {"google_service_account_key": json.dumps(KEY), "google_endpoint": "https://gcs.corp/",
                           "google_project": "p"}).lance_options()
    assert "google_endpoint" not in o and "google_project" not in o  # artstore's own keys
    assert json.loads(o["google_service_account_key"]) == {**KEY, "gcs_base_url": "https://gcs.corp"}
    anon = parse("gs://b/x", {"google_endpoint": "http://127.0.0.1:4443", "google_skip_signature": True}).lance_options()
    key = json.loads(anon["google_service_account_key"])
    assert key["gcs_base_url"] == "http://127.0.0.1:4443" and key["disable_oauth"] is True
    assert anon["allow_http"] == "true" and anon["google_skip_signature"] == "true"
    with pytest.raises(ValidationError, match="google_service_account_key"):
        parse("gs://b/x", {"google_service_account": "/sa.json", "google_endpoint": "http://e"}).lance_options()


# -- fsspec ----------------------------------------------------------------------------------------

def test_s3fs_arguments_come_from_the_same_mapping():
    protocol, kw = parse("s3://b/x", {**S3, "aws_session_token": "tok", "client_max_retries": 2, "timeout": "9s",
                                      "connect_timeout": 3, "aws_virtual_hosted_style_request": True,
                                      "aws_server_side_encryption": "aws:kms", "aws_sse_kms_key_id": "k1"}).fsspec_arguments()
    assert protocol == "s3"
    assert kw == {
        "use_listings_cache": False, "key": "AKID", "secret": "s3cr3t-key", "token": "tok",
        "endpoint_url": "http://127.0.0.1:9000", "client_kwargs": {"region_name": "eu-west-1"},
        "config_kwargs": {"connect_timeout": 3.0, "read_timeout": 9.0, "retries": {"max_attempts": 3, "mode": "standard"},
                          "s3": {"addressing_style": "virtual"}},
        "s3_additional_kwargs": {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "k1"},
    }
    _, anon = parse("s3://b/x", {"aws_skip_signature": "true"}).fsspec_arguments()
    assert anon["anon"] is True and "key" not in anon


@pytest.mark.parametrize(("options", "token"), [
    ({"google_skip_signature": "true", "google_service_account": "/sa.json"}, "anon"),
    ({"google_service_account_key": json.dumps(KEY)}, KEY),
    ({"google_service_account": "/sa.json"}, "/sa.json"),
    ({"google_application_credentials": "/adc.json"}, "/adc.json"),
    ({}, None),
])
def test_gcsfs_token_follows_the_google_credentials(options, token):
    _, kw = parse("gs://b/x", options).fsspec_arguments()
    assert kw.get("token") == token


def test_gcsfs_gets_endpoint_project_timeout_and_a_bearer_token():
    _, kw = parse("gs://b/x", {"google_endpoint": "http://127.0.0.1:4443/", "google_project": "p",
                               "timeout": "12s", "google_storage_token": "ya29.tok"}).fsspec_arguments()
    assert kw["endpoint_url"] == "http://127.0.0.1:4443" and kw["project"] == "p"
    assert kw["requests_timeout"] == 12.0 and kw["use_listings_cache"] is False
    assert kw["token"].token == "ya29.tok"  # google.oauth2 Credentials


def test_local_paths_have_no_fsspec_arguments(tmp_path):
    assert parse(tmp_path).fsspec_arguments() == ("file", {})


# -- secrets -----------------------------------------------------------------------------------------

def test_repr_and_str_hold_no_secret():
    loc = parse("s3://b/x", {**S3, "aws_session_token": "sessiontok"})
    for text in (repr(loc), str(loc), repr(loc.child("y"))):
        assert "s3cr3t-key" not in text and "sessiontok" not in text


def test_redact_hides_every_secret_form():
    loc = parse("gs://b/x", {"google_service_account_key": json.dumps(KEY), "google_endpoint": "http://e"})
    derived = loc.lance_options()["google_service_account_key"]
    text = f"bad key {derived} / {json.dumps(KEY)} / {KEY['private_key']}"
    assert "PRIVATE" not in loc.redact(text)
    s3 = parse("s3://b/x", {**S3, "aws_session_token": "sessiontok"})
    assert s3.redact("sig s3cr3t-key tok sessiontok AKID") == "sig *** tok *** AKID"  # key ids are not secret
