"""Catalog batches in inbox/items/: validated like interaction batches (every row accepted or
quarantined, a bad file rejected with its reason, a content counted once), merged into the
catalog; only the new and changed item texts are embedded, each change a new point-in-time
row in Feast, and the ingest flow publishes them."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from features.embeddings import embed_catalog
from features.encoder import ItemEncoder
from features.item_text import DEFAULT_FIELDS
from features.store import (
    feature_store,
    publish_item_embeddings,
    published_embedding_version,
    read_embedded_items,
    read_item_embeddings,
    read_online_items,
)
from flows.ingest import ingest_inbox
from ingestion.batches import (
    REASON_SUFFIX,
    BatchRejected,
    IngestConfig,
    ingest_catalog,
    ingest_file,
)
from ingestion.catalog_batches import CATALOG, catalog_inbox
from ingestion.state import Stores

BATCH = """item_id,title
4,Jaws (1975)
2,Up! (2009)
5,
6,Heat (1995)
6,Heat (1995)
x7,Alien (1979)
1,Heat (1995)
"""
ENCODER = ItemEncoder()  # the bundled all-MiniLM-L6-v2, loaded on first use
LENIENT = IngestConfig(max_bad_share=0.6, data_docs=False)  # 4 of 7 rows fail on purpose


def embed(stores: Stores, as_of: datetime) -> tuple[int, int]:
    """The stages of embed-items over the store's catalog: (texts encoded, rows published)."""
    items = stores.store.read_catalog()
    embedded = embed_catalog(items, ENCODER, DEFAULT_FIELDS, stores.state_dir / "embeddings")
    return embedded.encoded, publish_item_embeddings(stores.state_dir, items, embedded.vectors,
                                                     embedded.version, as_of)


@pytest.fixture
def embedded(tmp_path) -> Stores:
    """A catalog of three items, embedded and published."""
    stores = Stores(tmp_path / "state")
    ingest_catalog(pd.DataFrame({"item_id": ["1", "2", "3"],
                                 "title": ["Heat (1995)", "Up (2009)", "Alien (1979)"],
                                 "genres": ["Crime", "Animation", "Horror"]}), stores, "catalog")
    assert embed(stores, datetime.now(UTC)) == (3, 3)
    return stores


def drop(stores: Stores, name: str, text: str):
    catalog_inbox(stores).mkdir(parents=True, exist_ok=True)
    path = catalog_inbox(stores) / name
    path.write_text(text)
    return path


def test_a_catalog_batch_adds_new_items_updates_changed_ones_and_quarantines_bad_rows(embedded):
    stores = embedded
    before = datetime.now(UTC)
    report = ingest_file(drop(stores, "items-1.csv", BATCH), stores, before, LENIENT, CATALOG)
    assert (report.status, report.rows_in, report.rows_accepted, report.rows_quarantined) == \
        ("accepted", 7, 3, 4)
    assert report.failures == {"title_missing": 1, "item_id_not_unique": 2,
                               "item_id_not_integer": 1}
    assert report.message == "3 rows accepted, 4 quarantined; 1 new items, 1 changed"
    catalog = stores.store.read_catalog().set_index("item_id")
    assert catalog["title"].to_dict() == {1: "Heat (1995)", 2: "Up! (2009)",
                                          3: "Alien (1979)", 4: "Jaws (1975)"}
    assert catalog.loc[2, "genres"] == "Animation"  # a column the batch lacks stays
    quarantined = stores.store.read_quarantine()
    assert sorted(quarantined["failed_checks"]) == ["item_id_not_integer", "item_id_not_unique",
                                                    "item_id_not_unique", "title_missing"]
    assert (catalog_inbox(stores) / "processed" / "items-1.csv").is_file()
    assert stores.ledger.all().empty and len(stores.catalog_ledger.all()) == 1

    after = datetime.now(UTC) + timedelta(seconds=1)
    # item 2 changed, item 4 is new: those are encoded (1 and 3 come from the cache), and each
    # gets a new point-in-time row
    assert embed(stores, after) == (2, 2)
    state, version = stores.state_dir, published_embedding_version(stores.state_dir)
    old, new = (read_item_embeddings(state, np.array([2]), t, version) for t in (before, after))
    assert not np.allclose(old, new)  # a new point-in-time row; the old one still read before
    online = feature_store(state)
    assert read_embedded_items(online, version).tolist() == [1, 2, 3, 4]
    assert read_online_items(online, np.array([4]))["title"].tolist() == ["Jaws (1975)"]

    again = drop(stores, "items-1-again.csv", BATCH)
    assert ingest_file(again, stores, before, LENIENT, CATALOG).status == "duplicate"


def test_a_catalog_row_of_the_wrong_field_count_is_quarantined_whole(embedded):
    report = ingest_file(drop(stores := embedded, "items-2.csv",
                              "item_id,title\n4,Jaws (1975)\n5,Alien, the director's cut,1979\n"),
                         stores, datetime.now(UTC), LENIENT, CATALOG)
    assert (report.rows_in, report.rows_accepted, report.rows_quarantined) == (2, 1, 1)
    assert report.failures["wrong_field_count"] == 1
    [row] = stores.store.read_quarantine()["malformed_row"].dropna().tolist()
    assert row == "5,Alien, the director's cut,1979"
    assert 5 not in stores.store.read_catalog()["item_id"].tolist()


def test_a_bad_catalog_file_is_rejected_with_its_reason(embedded):
    stores = embedded
    with pytest.raises(BatchRejected, match="missing column"):
        ingest_file(drop(stores, "names.csv", "item_id,name\n8,Up\n"), stores,
                    datetime.now(UTC), LENIENT, CATALOG)
    with pytest.raises(BatchRejected, match="75% of 4 rows failed checks"):
        ingest_file(drop(stores, "bad.csv", "item_id,title\n8,Up\nx,A\ny,B\nz,C\n"), stores,
                    datetime.now(UTC), IngestConfig(data_docs=False), CATALOG)
    rejected = catalog_inbox(stores) / "rejected"
    assert (rejected / "names.csv").is_file() and (rejected / "bad.csv").is_file()
    assert "missing column(s) title" in (rejected / f"names.csv{REASON_SUFFIX}").read_text()
    assert len(stores.store.read_catalog()) == 3  # unchanged


@pytest.mark.e2e  # real Prefect flow runs
def test_the_ingest_flow_takes_catalog_batches_first_and_publishes_their_embeddings(
        embedded, prefect_harness):
    stores = embedded
    drop(stores, "items-2.jsonl", '{"item_id": 9, "title": "Jaws (1975)", "tags": "shark"}\n')
    (stores.inbox / "day.csv").write_text("user_id,item_id,timestamp\n1,9,1400000000\n"
                                          "1,1,1400000001\n")
    reports = ingest_inbox(state_dir=stores.state_dir, data_docs=False)
    assert [(r.file_name, r.status) for r in reports] == [("items-2.jsonl", "accepted"),
                                                          ("day.csv", "accepted")]
    online = feature_store(stores.state_dir)
    version = published_embedding_version(stores.state_dir)
    assert 9 in read_embedded_items(online, version)
    assert read_online_items(online, np.array([9]))["embedding_version"].tolist() == [version]
