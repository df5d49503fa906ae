from feast import FeatureView, Field
from feast.types import Array, Float32, Int64, String

from features.data_sources import (
    embedded_items_source,
    item_embeddings_source,
    user_recent_items_source,
)
from features.entities import embedding_recipe, item, user

item_embeddings = FeatureView(
    name="item_embeddings",
    entities=[item],
    schema=[
        Field(name="embedding", dtype=Array(Float32), description="Unit-length text embedding"),
        Field(name="title", dtype=String, description="Item title, for display"),
        Field(name="embedding_version", dtype=String,
              description="Encoder and text recipe the embedding was made with"),
    ],
    source=item_embeddings_source,
    online=True,
    description="LLM embeddings of item texts",
)

embedded_items = FeatureView(
    name="embedded_items",
    entities=[embedding_recipe],
    schema=[
        Field(name="item_ids", dtype=Array(Int64),
              description="Catalog ids of every item published with this embedding version"),
    ],
    source=embedded_items_source,
    online=True,
    description="Which items have an embedding of a version: where a served model finds the "
                "items new since it was trained",
)

user_recent_items = FeatureView(
    name="user_recent_items",
    entities=[user],
    schema=[
        Field(name="recent_items", dtype=Array(Int64),
              description="Catalog ids of the user's latest interactions, oldest first"),
    ],
    source=user_recent_items_source,
    online=True,
    description="Each user's recent history, the input of a next-item query",
)
