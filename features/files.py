"""Files that readers in other processes may open at any moment: written whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """`frame` to `path` through a temporary file beside it and an atomic rename, so a
    concurrent reader sees the old file or the new one, never half of one."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    frame.to_parquet(partial, index=False)
    os.replace(partial, path)
