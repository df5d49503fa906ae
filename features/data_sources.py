from feast import FileSource

# Relative paths: resolved against the store's repo path, ${LLMSEQREC_HOME}/feast.
item_embeddings_source = FileSource(
    name="item_embeddings_source",
    path="data/item_embeddings.parquet",
    timestamp_field="event_timestamp",
    description="LLM text embedding of every catalog item, one row per item and version",
)

user_recent_items_source = FileSource(
    name="user_recent_items_source",
    path="data/user_recent_items.parquet",
    timestamp_field="event_timestamp",
    description="Each user's most recent items, newest last, as of the event timestamp",
)

embedded_items_source = FileSource(
    name="embedded_items_source",
    path="data/embedded_items.parquet",
    timestamp_field="event_timestamp",
    description="The catalog ids embedded with each embedding version, as of the event timestamp",
)
