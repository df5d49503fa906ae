"""The ingest-inbox Prefect flow driven by `replay`, for real: batches in arrival order,
one artifact per batch, a failed run that says why when a batch is rejected."""

import numpy as np
import pandas as pd
import pytest
from prefect.client.orchestration import get_client

from features.store import feature_store, read_recent_items
from flows.ingest import ingest_inbox
from ingestion.batches import ingest_catalog
from ingestion.drift import drift_summary, js_divergence
from ingestion.state import Stores
from llmseqrec.replay import drop_next

pytestmark = pytest.mark.e2e


def artifact_markdown(key: str) -> str:
    # the full filter body: this server refuses the nulls that read_artifacts() sends
    body = {"artifacts": {"key": {"any_": [key]}}, "flow_runs": {}, "task_runs": {},
            "limit": 1, "offset": 0, "sort": "UPDATED_DESC"}
    with get_client(sync_client=True) as client:
        [artifact] = client.request("POST", "/artifacts/filter", json=body).json()
    return artifact["data"]


def test_replayed_days_flow_through_the_inbox(movielens_slice, tmp_path, prefect_harness):
    stores = Stores(tmp_path / "state")
    for _ in range(3):  # the history and two days
        drop_next(stores, movielens_slice, days=4)
    reports = ingest_inbox(state_dir=stores.state_dir)
    assert [r.file_name for r in reports] == ["history.csv", "day-001.csv", "day-002.csv"]
    assert all(r.status == "accepted" for r in reports)
    assert len(stores.store.read()) == sum(r.rows_accepted for r in reports)
    assert reports[1].drift["volume_ratio"] is None
    assert reports[2].drift["volume_ratio"] == pytest.approx(1.0, abs=0.05)
    markdown = artifact_markdown(f"batch-{reports[2].batch_id}")
    assert "| rows accepted |" in markdown and "Data Docs" in markdown
    # user features in the online store follow the latest batch
    log = stores.store.read()
    user = int(log.sort_values("timestamp")["user_id"].iloc[-1])
    latest = log[log["user_id"] == user].sort_values("timestamp", kind="stable")["item_id"]
    assert read_recent_items(feature_store(stores.state_dir), [user])[0] == latest.tolist()[-50:]

    drop_next(stores, movielens_slice, days=4)
    day3 = next(stores.inbox.glob("day-003.csv"))
    bad = pd.read_csv(day3, dtype=str).assign(item_id="999999")
    bad.to_csv(day3, index=False)
    state = ingest_inbox(state_dir=stores.state_dir, return_state=True)
    assert state.is_failed()
    assert "day-003.csv: batch rejected: 100% of" in state.message
    assert (stores.inbox / "rejected" / "day-003.csv").is_file()


def test_a_batch_the_store_cannot_take_is_retried_rejected_and_sent_again(tmp_path,
                                                                          prefect_harness):
    stores = Stores(tmp_path / "state")
    ingest_catalog(pd.DataFrame({"item_id": ["1", "2"], "title": ["A", "B"]}), stores, "catalog")
    stores.inbox.mkdir(parents=True)
    (stores.inbox / "day.csv").write_text("user_id,item_id,timestamp\n1,1,1400000000\n"
                                          "1,2,1400000001\n")
    stores.store.interactions.write_text("a file where the store's folder should be")
    state = ingest_inbox(state_dir=stores.state_dir, data_docs=False, return_state=True)
    assert state.is_failed()
    assert "day.csv: batch rejected: not ingested, the retries failed too: StoreUnavailable" \
        in state.message
    assert (stores.inbox / "rejected" / "day.csv.reason.txt").is_file()
    assert stores.ledger.all().empty  # nothing recorded: the content may come again
    stores.store.interactions.unlink()
    [report] = ingest_inbox(state_dir=stores.state_dir, data_docs=False, retry_rejected=True)
    assert report.status == "accepted" and report.rows_accepted == 2
    assert list((stores.inbox / "rejected").iterdir()) == []


def test_drift_figures():
    assert js_divergence(np.array([1.0, 1.0]), np.array([2.0, 2.0])) == pytest.approx(0.0)
    assert js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    history = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 11, 10]})
    batch = pd.DataFrame({"user_id": [1, 3, 3, 3], "item_id": [12, 12, 12, 12]})
    summary = drift_summary(batch, history, usual_rows=40)
    assert summary["new_user_share"] == 0.75 and summary["new_item_share"] == 1.0
    assert summary["volume_ratio"] == 0.1
    assert summary["flags"] == ["volume", "new_item_share", "popularity_divergence"]
