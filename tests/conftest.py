import os
import socket
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llmseqrec.datasets import BUNDLED_MOVIELENS  # noqa: E402


def write_movielens_slice(target: Path, users: int) -> Path:
    """The bundled data cut to the first `users` users and the movies they rated."""
    target.mkdir(parents=True, exist_ok=True)
    ratings = pd.read_csv(BUNDLED_MOVIELENS / "ratings.csv", dtype=str)
    ratings = ratings[ratings["userId"].astype(int) <= users]
    movies = pd.read_csv(BUNDLED_MOVIELENS / "movies.csv", dtype=str)
    movies = movies[movies["movieId"].isin(ratings["movieId"])]
    tags = pd.read_csv(BUNDLED_MOVIELENS / "tags.csv", dtype=str)
    ratings.to_csv(target / "ratings.csv", index=False)
    movies.to_csv(target / "movies.csv", index=False)
    tags[tags["movieId"].isin(movies["movieId"])].to_csv(target / "tags.csv", index=False)
    return target


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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
