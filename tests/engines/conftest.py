import gc

import pytest

from tests.engines.store import build


@pytest.fixture(scope="session")
def engine_store(tmp_path_factory) -> str:
    """The store of tests/engines/store.py, built once for every engine's tests."""
    return build(tmp_path_factory.mktemp("engines"))


@pytest.fixture(autouse=True, scope="module")
def _collect_stores():
    """Collect this module's Stores (held in cycles by snapshots and engine closures) before
    later modules count live SQL catalogs (tests/test_sql.py)."""
    yield
    gc.collect()
