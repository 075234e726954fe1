import pytest

from tests.engines.store import build


@pytest.fixture(scope="session")
def engine_store(tmp_path_factory) -> str:
    """The store of tests/engines/store.py, built once for every engine's tests."""
    return build(tmp_path_factory.mktemp("engines"))
