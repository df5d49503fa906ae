import os
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ports import free_ports  # noqa: E402

from ingestion.readers import write_movielens_slice  # noqa: E402


@pytest.fixture(scope="session")
def movielens_slice(tmp_path_factory) -> Path:
    return write_movielens_slice(tmp_path_factory.mktemp("ml-slice"), users=25)


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield


@pytest.fixture
def free_port() -> int:
    return free_ports(1)[0]
