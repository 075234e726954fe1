"""Secrets given in storage_options (or the environment) never appear in repr(), dumps, the wandb
config, error messages, logs, Lance commit metadata, or any byte the store writes."""

from __future__ import annotations

import logging

import pytest

import artstore as art
from artstore.log import fold
from artstore.storage import Location, datasets, files, scans
from tests.conftest import tool_call_trajectory

pytestmark = pytest.mark.s3
SECRET = "SeCrEt-5f4dcc3b5aa765d61d8327deb882cf99"  # moto accepts any secret
TOKEN = "SeSsIoN-8f14e45fceea167a5a36dedd4bea2543"


@pytest.fixture
def secret_store(s3_bucket):
    opts = {**s3_bucket.storage_options, "aws_secret_access_key": SECRET, "aws_session_token": TOKEN}
    return s3_bucket, opts


def _clean(text: str) -> None:
    assert SECRET not in text and TOKEN not in text, text


def test_repr_dumps_and_the_wandb_config_hold_no_secret(secret_store):
    bucket, opts = secret_store
    model = art.TrainableModel(name="m", project="p", base_model="b", base_path=bucket.uri, storage_options=opts)
    store = art.open_store(bucket.uri, opts)
    for thing in (model, store, store.location, model.run, model.run.location, model.run.table_location("logs")):
        _clean(repr(thing))
        _clean(str(thing))
    _clean(str(model.model_dump()))
    _clean(model.model_dump_json())
    config = model._wandb_dump()
    assert "storage_options" not in config
    _clean(str(config))
    assert model.storage_options["aws_secret_access_key"] == SECRET  # still there for the store to use


def test_secrets_from_the_environment_are_redacted_too(monkeypatch, s3_bucket):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    loc = Location.parse(s3_bucket.uri, {"aws_access_key_id": "k"})
    _clean(repr(loc))
    _clean(loc.redact(f"server said: bad signature for {SECRET}"))


def test_nothing_the_store_writes_holds_a_secret(secret_store, caplog):
    bucket, opts = secret_store
    caplog.set_level(logging.DEBUG)
    model = art.TrainableModel(name="m", project="p", base_model="b", base_path=bucket.uri, storage_options=opts,
                               report_metrics=[])
    model.log_sync([art.TrajectoryGroup([tool_call_trajectory(0.5, i) for i in range(2)])], split="train")
    model.log_sync(None, split="val", metrics={"reward": 0.5})
    ckpts = model.run.checkpoints_table()
    ckpts.begin(1)
    files.put_bytes(ckpts.files_location(1).child("adapter_config.json"), b"{}")
    ckpts.mark_ready(1)
    run = model.run
    fold.fold(run.location)  # the data tables too (a log's rows are in its logs row until then)
    # the logs table and every other table, row by row
    for table in art.open_store(bucket.uri, opts).table_names(run):
        _clean(str(scans.scan(run.table_location(table)).to_pylist()))
    # Lance's commit messages and transaction properties, version by version
    for table in ("trajectories", "logs", "checkpoints"):
        loc = run.table_location(table)
        ds = datasets.open_dataset(loc)
        for v in ds.versions():
            _clean(repr(ds.read_transaction(v["version"])))
    # every object in the bucket, byte by byte
    client = bucket.boto3_client()
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket.bucket)
            for o in page.get("Contents", [])]
    assert any(k.endswith(".manifest") for k in keys) and any("checkpoints/0001" in k for k in keys)
    for key in keys:
        body = client.get_object(Bucket=bucket.bucket, Key=key)["Body"].read()
        assert SECRET.encode() not in body and TOKEN.encode() not in body, key
    # and what Python logging saw at DEBUG (botocore, s3fs, artstore)
    _clean(caplog.text)


def test_error_messages_hold_no_secret(secret_store, make_fault_proxy):
    bucket, opts = secret_store
    proxy = make_fault_proxy(bucket.endpoint)
    proxy.fail_all(500)
    opts = {**opts, "aws_endpoint": proxy.endpoint, "client_max_retries": 0}
    with pytest.raises(art.StorageError) as err:
        art.Model(name="m", project="p", base_path=bucket.uri, storage_options=opts,
                  report_metrics=[]).log_sync(art.TrajectoryGroup([tool_call_trajectory(1.0)]))
    _clean(str(err.value))
    _clean(repr(err.value))
    with pytest.raises(art.StorageError) as err:
        art.open_store(bucket.uri, opts).runs()
    _clean(str(err.value))
