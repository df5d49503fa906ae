"""Items new to the catalog since a served model was trained, served with no retrain: their
text embeddings (of the model's embedding version, no other) and titles come from the Feast
online store; each is scored from its text, its ID row zero, as a hybrid model is trained to
expect (id_dropout) and as a warm start grows a catalog (`training.train.grown_state`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from features.store import read_embedded_items, read_online_items
from serving.recommender import Recommender
from training.model import TextTable
from training.sequences import ItemIndex
from training.train import grown_model


@dataclass(frozen=True)
class NewItems:
    item_ids: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))  # sorted
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    titles: tuple[str, ...] = ()
    refused: dict[int, str] = field(default_factory=dict)  # item -> its other embedding version

    def same_as(self, other: NewItems) -> bool:
        """The same items with the same texts (the refused ones aside)."""
        return (np.array_equal(self.item_ids, other.item_ids) and self.titles == other.titles
                and self.vectors.tobytes() == other.vectors.tobytes())


def read_new_items(recommender: Recommender) -> NewItems:
    """The items of the online store that `recommender` does not know and can score: those
    with an embedding of its model's version. An ID-only model (or one without a feature
    store) has none; an item whose latest embedding is of another version is refused."""
    cfg = recommender.model.cfg
    if cfg.item_repr == "id" or recommender.features is None:
        return NewItems()
    embedded = read_embedded_items(recommender.features, cfg.embedding_version)
    new = np.setdiff1d(embedded, recommender.index.item_ids)
    if not len(new):
        return NewItems()
    online = read_online_items(recommender.features, new).reindex(new)
    usable = (online["embedding_version"] == cfg.embedding_version).to_numpy()
    refused = {int(i): str(v) for i, v in online.loc[~usable, "embedding_version"].items()}
    online = online[usable]
    vectors = (np.stack(online["embedding"].to_numpy()).astype(np.float32) if len(online)
               else np.zeros((0, cfg.text_dim), dtype=np.float32))
    return NewItems(online.index.to_numpy(np.int64), vectors,
                    tuple(online["title"].astype(str)), refused)


def with_new_items(recommender: Recommender, new: NewItems) -> Recommender:
    """A recommender that serves `recommender`'s model over its catalog and the `new` items:
    the known items keep their learned rows, the new ones are scored from their text alone,
    have no popularity, and can be asked for (`similar`) and recommended."""
    if not len(new.item_ids):
        return recommender
    old, cfg = recommender.index, recommender.model.cfg
    index = ItemIndex.from_items(np.concatenate([old.item_ids, new.item_ids]))
    at_old, at_new = (torch.from_numpy(index.encode(ids))  # their model ids
                      for ids in (old.item_ids, new.item_ids))
    text = torch.zeros(len(index) + 1, cfg.text_dim)  # (n + 1, text_dim): row 0 is padding
    text[at_old] = recommender.model.item_text[1:]
    text[at_new] = torch.from_numpy(new.vectors)
    model = grown_model(recommender.model, old.item_ids, index.item_ids,
                        TextTable(text[1:], cfg.embedding_version))
    titles = np.empty(len(index) + 1, dtype=object)
    titles[at_old.numpy()], titles[at_new.numpy()] = recommender.titles, new.titles
    popularity = torch.zeros(len(index) + 1)
    popularity[at_old] = recommender.popularity[1:]
    grown = Recommender()
    grown.features = recommender.features
    grown.use(model, index, titles[1:].tolist(), popularity)
    return grown
