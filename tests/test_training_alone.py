"""The training stage and its benchmarks run where only torch and transformers are installed
(the GPU machine): nothing they import needs Prefect, MLflow, Feast, Great Expectations or
Optuna."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPERATORS = ("prefect", "mlflow", "feast", "great_expectations", "optuna")

# run in a fresh interpreter where importing any of OPERATORS fails
WITHOUT_OPERATORS = f"""
import importlib.abc, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {OPERATORS!r}:
            raise ImportError(f"{{name}} is not installed here")

sys.meta_path.insert(0, Refuse())
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "bench")!r}]
import new_items, quality, scale_catalog, time_to_quality  # the benchmarks
import pandas as pd
from training.params import RetrainParams
from training.retrain import compare, fit

rows = [(u, 1 + (u + k) % 12, k) for u in range(1, 31) for k in range(8)]
interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
fitted = fit(interactions, interactions["item_id"], None,
             RetrainParams(item_repr="id", hidden=8, layers=1, epochs=1), progress=False)
print(compare(fitted, None, fitted.split)["model"]["test_ndcg_at_10"])
"""


def test_the_training_stage_and_its_benchmarks_run_without_the_operators():
    out = subprocess.run([sys.executable, "-c", WITHOUT_OPERATORS], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 0 <= float(out.stdout.split()[-1]) <= 1
