"""Local object-storage servers for the test suite, as a pytest plugin (see `fixtures`).

One module per server: `moto_s3` (moto, in-memory S3), `seaweedfs` (SeaweedFS, on-disk S3
with real credentials, kill/restart), `fault_proxy` (fault-injecting HTTP proxy),
`fake_gcs` (fake-gcs-server for gcsfs). All bind 127.0.0.1 on ports chosen at run time.
"""
